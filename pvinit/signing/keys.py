"""Ed25519 signing and verify keys, and their files.

A key is named by its *keyid*: the SHA256 hex of the raw 32-byte public
key.  Trust files, envelopes and error messages all use that one name, so
a person can match a ``keyid`` in an error to a ``.pub`` file with
``pvstate key id FILE``.

Files: ``<stem>.key`` holds the private key as unencrypted PKCS8 PEM (mode
0600: protect it like a password), ``<stem>.pub`` the public key as
SubjectPublicKeyInfo PEM.  A verify key may also be given as its raw
public key in 64 hex digits, which is what trust files store.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pvinit import durable
from pvinit.errors import ConflictError, KeyFormatError, NotFoundError
from pvinit.record import record

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
# A key file is a few hundred bytes; refuse to read a disk image by mistake.
_MAX_KEY_FILE = 64 << 10
# Errors `cryptography` raises for PEM it cannot use, across versions 38..current.
_LOAD_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm)


def keyid_of(raw_public: bytes) -> str:
    """The keyid of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(raw_public).hexdigest()


@record(frozen=True)
class VerifyKey:
    """An Ed25519 public key: checks signatures, never makes them."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_KEY_LEN:
            raise KeyFormatError(
                f"an Ed25519 public key is {PUBLIC_KEY_LEN} bytes, got {len(self.raw)}"
            )
        try:
            Ed25519PublicKey.from_public_bytes(self.raw)
        except ValueError as exc:
            raise KeyFormatError(f"not an Ed25519 public key: {exc}") from exc

    @classmethod
    def from_hex(cls, text: str, *, where: str | None = None) -> VerifyKey:
        """A verify key from 64 lowercase hex digits (the form trust files use)."""
        if not isinstance(text, str) or _HEX64_RE.fullmatch(text) is None:
            raise KeyFormatError(
                "a public key must be 64 lowercase hex digits", where=where
            )
        return cls(bytes.fromhex(text))

    @property
    def keyid(self) -> str:
        return keyid_of(self.raw)

    @property
    def public_hex(self) -> str:
        return self.raw.hex()

    def verify(self, data: bytes, sig: bytes) -> bool:
        """True when ``sig`` is this key's signature of ``data``."""
        if len(sig) != SIGNATURE_LEN:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(sig, data)
        except InvalidSignature:
            return False
        return True

    def to_pem(self) -> bytes:
        return Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class SigningKey:
    """An Ed25519 private key.  Its repr never shows the secret."""

    __slots__ = ("_private", "public")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = VerifyKey(raw)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @property
    def keyid(self) -> str:
        return self.public.keyid

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._private.sign(data)

    def to_pem(self) -> bytes:
        """Unencrypted PKCS8 PEM of the private key."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"SigningKey(keyid={self.keyid[:16]}...)"


def key_paths(stem: Path) -> tuple[Path, Path]:
    """``(<stem>.key, <stem>.pub)``; the suffix is appended, so ``release.v2`` stays whole."""
    stem = Path(stem)
    return stem.with_name(stem.name + ".key"), stem.with_name(stem.name + ".pub")


def save_keypair(stem: Path, key: SigningKey | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.key`` (0600) and ``<stem>.pub`` durably; a new key unless one is given.

    Refuses (ConflictError) when either file exists: overwriting a private
    key is how a release engineer loses the only key a fleet trusts.
    """
    key_path, pub_path = key_paths(stem)
    for path in (key_path, pub_path):
        if path.exists() or path.is_symlink():
            raise ConflictError(
                "refusing to overwrite an existing key file",
                where=str(path),
                hint="choose another name or remove the old key on purpose",
            )
    key = key if key is not None else SigningKey.generate()
    durable.makedirs(key_path.parent)
    durable.write_file(key_path, key.to_pem(), mode=0o600, name="key.private")
    durable.write_file(pub_path, key.public.to_pem(), mode=0o644, name="key.public")
    return key_path, pub_path


def _read_key_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise NotFoundError("key file not found", where=str(path)) from None
    except IsADirectoryError:
        raise KeyFormatError("is a directory, not a key file", where=str(path)) from None
    if len(data) > _MAX_KEY_FILE:
        raise KeyFormatError(f"too large for a key file (> {_MAX_KEY_FILE} bytes)", where=str(path))
    if not data.strip():
        raise KeyFormatError("empty key file", where=str(path))
    return data


def _kind_of(key: object) -> str:
    """A short human name for a key `cryptography` loaded: RSA, EC, ..."""
    kinds: tuple[tuple[tuple[type, ...], str], ...] = (
        ((rsa.RSAPrivateKey, rsa.RSAPublicKey), "RSA"),
        ((ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey), "EC"),
        ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "DSA"),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "Ed448"),
    )
    for classes, name in kinds:
        if isinstance(key, classes):
            return name
    return type(key).__name__.lstrip("_")


def load_signing_key(path: Path) -> SigningKey:
    """The private key in a PKCS8 PEM file; KeyFormatError naming the file otherwise."""
    path = Path(path)
    data = _read_key_file(path)
    if b"PRIVATE KEY" not in data:
        raise KeyFormatError(
            "not a PEM private key", where=str(path),
            hint="a signing key file is the '.key' written by 'pvstate key new'",
        )
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except _LOAD_ERRORS as exc:
        raise KeyFormatError(f"cannot load private key: {exc}", where=str(path)) from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFormatError(
            f"key type is {_kind_of(private)}; pvinit signs with Ed25519 only", where=str(path)
        )
    return SigningKey(private)


def load_verify_key(path: Path) -> VerifyKey:
    """The public key in a SubjectPublicKeyInfo PEM file or a file of 64 hex digits."""
    path = Path(path)
    data = _read_key_file(path)
    text = data.strip()
    if b"PRIVATE KEY" in text:
        raise KeyFormatError(
            "is a private key, not a public one", where=str(path),
            hint="give the '.pub' file; never ship the '.key'",
        )
    if not text.startswith(b"-----BEGIN"):
        try:
            return VerifyKey.from_hex(text.decode("ascii"), where=str(path))
        except UnicodeDecodeError:
            raise KeyFormatError(
                "neither a PEM public key nor 64 hex digits", where=str(path)
            ) from None
    try:
        public = serialization.load_pem_public_key(data)
    except _LOAD_ERRORS as exc:
        raise KeyFormatError(f"cannot load public key: {exc}", where=str(path)) from exc
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFormatError(
            f"key type is {_kind_of(public)}; pvinit verifies Ed25519 only", where=str(path)
        )
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return VerifyKey(raw)

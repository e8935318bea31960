from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pvinit.errors import ConflictError, KeyFormatError, NotFoundError
from pvinit.signing.keys import (
    SigningKey,
    VerifyKey,
    load_signing_key,
    load_verify_key,
    save_keypair,
)


def test_signature_verifies_with_the_public_key_only_for_the_same_data() -> None:
    key = SigningKey.generate()
    sig = key.sign(b"payload")
    assert len(sig) == 64
    assert key.public.verify(b"payload", sig)
    assert not key.public.verify(b"payload!", sig)
    assert not SigningKey.generate().public.verify(b"payload", sig)


def test_keyid_is_sha256_of_the_raw_public_key() -> None:
    import hashlib

    key = SigningKey.generate()
    assert key.keyid == hashlib.sha256(bytes.fromhex(key.public.public_hex)).hexdigest()


def test_saved_keypair_loads_back_and_private_file_is_0600(tmp_path: Path) -> None:
    key = SigningKey.generate()
    key_path, pub_path = save_keypair(tmp_path / "keys" / "release.v2", key)
    assert key_path.name == "release.v2.key"
    assert pub_path.name == "release.v2.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert load_signing_key(key_path).keyid == key.keyid
    assert load_verify_key(pub_path) == key.public


def test_save_keypair_refuses_to_overwrite_and_leaves_the_old_key(tmp_path: Path) -> None:
    key_path, _ = save_keypair(tmp_path / "release")
    before = key_path.read_bytes()
    with pytest.raises(ConflictError) as caught:
        save_keypair(tmp_path / "release")
    assert caught.value.where == str(key_path)
    assert key_path.read_bytes() == before


def test_verify_key_loads_from_a_file_of_64_hex_digits(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "k.hex"
    path.write_text(key.public.public_hex + "\n")
    assert load_verify_key(path) == key.public


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "bad.key"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty key file"),
        (b"\n  \n", "empty key file"),
        (b"hello world", "not a PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2Vw\n", "cannot load private key"),
    ],
)
def test_garbage_signing_key_file_is_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(KeyFormatError, match=message) as caught:
        load_signing_key(path)
    assert caught.value.where == str(path)


def test_truncated_pem_signing_key_is_refused(tmp_path: Path) -> None:
    pem = SigningKey.generate().to_pem()
    path = _write(tmp_path, pem[: len(pem) // 2])
    with pytest.raises(KeyFormatError) as caught:
        load_signing_key(path)
    assert caught.value.where == str(path)


def test_rsa_signing_key_is_refused_by_name(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = _write(tmp_path, pem)
    with pytest.raises(KeyFormatError, match="key type is RSA; pvinit signs with Ed25519 only"):
        load_signing_key(path)


def test_ec_public_key_is_refused_by_name(tmp_path: Path) -> None:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = _write(tmp_path, pem)
    with pytest.raises(KeyFormatError, match="key type is EC") as caught:
        load_verify_key(path)
    assert caught.value.where == str(path)


def test_private_key_given_as_verify_key_is_refused(tmp_path: Path) -> None:
    key_path, _ = save_keypair(tmp_path / "release")
    with pytest.raises(KeyFormatError, match="is a private key"):
        load_verify_key(key_path)


def test_public_key_given_as_signing_key_is_refused(tmp_path: Path) -> None:
    _, pub_path = save_keypair(tmp_path / "release")
    with pytest.raises(KeyFormatError, match="not a PEM private key"):
        load_signing_key(pub_path)


@pytest.mark.parametrize("text", ["abc", "A" * 64, "g" * 64, "00" * 33])
def test_malformed_hex_verify_key_is_refused(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text.encode())
    with pytest.raises(KeyFormatError, match="64 lowercase hex") as caught:
        load_verify_key(path)
    assert caught.value.where == str(path)


def test_binary_garbage_verify_key_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, b"\xff\xfe\x00garbage")
    with pytest.raises(KeyFormatError):
        load_verify_key(path)


def test_missing_key_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_verify_key(tmp_path / "nope.pub")


def test_verify_key_needs_32_bytes() -> None:
    with pytest.raises(KeyFormatError, match="32 bytes"):
        VerifyKey(b"\x01" * 31)


def test_signing_key_repr_does_not_show_the_secret() -> None:
    key = SigningKey.generate()
    assert "PRIVATE" not in repr(key)
    assert key.keyid[:16] in repr(key)

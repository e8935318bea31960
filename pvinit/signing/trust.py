"""Trust policy: which keys a device believes, how many must agree, and the rules it applies.

Everything here is pure (values in, values or errors out) except
:func:`load_trust`.  A device calls :func:`check_envelope` before it lets a
revision in; each refusal is a :class:`~pvinit.errors.TrustRejectedError`
whose ``reason`` the update engine journals.  Rules, in order:

1. signatures: at least ``threshold`` distinct trusted keys signed the
   envelope's signed bytes (unknown keys and bad signatures beyond that are
   ignored, so release keys can be added to envelopes before every device
   trusts them);
2. expiry: an envelope past its ``expires`` is refused (a frozen mirror
   cannot keep a device on an old revision forever);
3. monotonic revision: the revision must be newer than the last committed
   one (no replay, no downgrade);
4. state: the state bytes fetched must hash to the envelope's ``state``.

The trust file itself is rotated by :func:`rotate_trust`; see
``docs/formats/trust.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pvinit.errors import KeyFormatError, NotFoundError, TrustRejectedError
from pvinit.record import field, record, replace
from pvinit.signing.envelope import Envelope, Signature
from pvinit.signing.keys import SigningKey, VerifyKey
from pvinit.state.canonical import canonical_bytes, parse_json

SPEC = "pvinit-trust@1"
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_MAX_TRUST_FILE = 1 << 20


def _at(source: str, name: str) -> str:
    return f"{source}:{name}"


@record(frozen=True)
class TrustedKey:
    """One key of a trust file: its public key and a name for people."""

    keyid: str
    public: str
    name: str = ""

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey.from_hex(self.public, where=f"keys.{self.keyid}.public")

    def to_dict(self) -> dict[str, str]:
        return {"public": self.public, "name": self.name}


@record(frozen=True)
class TrustPolicy:
    """The parsed trust file: keys by keyid, the signature threshold, and its version."""

    version: int
    threshold: int
    keys: Mapping[str, TrustedKey] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))
        _validate_policy(self.version, self.threshold, self.keys, source="trust")

    @classmethod
    def from_keys(
        cls, keys: Iterable[tuple[VerifyKey, str]], *, threshold: int, version: int = 1
    ) -> TrustPolicy:
        """A policy trusting ``(key, name)`` pairs."""
        entries = {k.keyid: TrustedKey(keyid=k.keyid, public=k.public_hex, name=n) for k, n in keys}
        return cls(version=version, threshold=threshold, keys=entries)

    @classmethod
    def from_dict(cls, data: object, *, source: str = "trust") -> TrustPolicy:
        """Parse and validate; KeyFormatError naming ``source:field`` on any fault."""
        if not isinstance(data, dict):
            raise KeyFormatError("a trust file must be a JSON object", where=source)
        if data.get("#spec") != SPEC:
            raise KeyFormatError(
                f"must be {SPEC!r}, got {data.get('#spec')!r:.80}", where=_at(source, "#spec")
            )
        unknown = set(data) - {"#spec", "version", "threshold", "keys"}
        if unknown:
            # Unknown trust fields are refused, not kept: a rule this version
            # cannot enforce must not be silently dropped.
            raise KeyFormatError(f"unknown fields {sorted(unknown)}", where=source)
        raw_keys = data.get("keys")
        if not isinstance(raw_keys, dict):
            raise KeyFormatError("must be an object of keyid -> key", where=_at(source, "keys"))
        keys: dict[str, TrustedKey] = {}
        for keyid, entry in raw_keys.items():
            where = _at(source, f"keys.{keyid!s:.80}")
            if not isinstance(entry, dict) or set(entry) - {"public", "name"}:
                raise KeyFormatError("must be an object {public, name}", where=where)
            public = entry.get("public")
            name = entry.get("name", "")
            if not isinstance(name, str):
                raise KeyFormatError("must be a string", where=f"{where}.name")
            if not isinstance(public, str):
                raise KeyFormatError("missing or not a string", where=f"{where}.public")
            keys[keyid] = TrustedKey(keyid=keyid, public=public, name=name)
        # Validate with the caller's source first, so the error names the file.
        version, threshold = _validate_policy(
            data.get("version"), data.get("threshold"), keys, source=source
        )
        return cls(version=version, threshold=threshold, keys=keys)

    @classmethod
    def from_json(cls, data: bytes, *, source: str = "trust") -> TrustPolicy:
        """Parse strictly (no duplicate keys, UTF-8 only), then :meth:`from_dict`."""
        return cls.from_dict(parse_json(data, where=source), source=source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "#spec": SPEC,
            "version": self.version,
            "threshold": self.threshold,
            "keys": {keyid: key.to_dict() for keyid, key in self.keys.items()},
        }

    def to_json(self) -> bytes:
        """Canonical JSON: the exact bytes a rotation signs and a device stores."""
        return canonical_bytes(self.to_dict(), where="trust")

    def verify_key(self, keyid: str) -> VerifyKey | None:
        key = self.keys.get(keyid)
        return None if key is None else key.verify_key


def _validate_policy(
    version: object, threshold: object, keys: Mapping[str, TrustedKey], *, source: str
) -> tuple[int, int]:
    """Check a policy's fields; returns ``(version, threshold)`` typed."""
    counts: list[int] = []
    for name, value in (("version", version), ("threshold", threshold)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise KeyFormatError(
                f"must be an integer >= 1, got {value!r:.80}", where=_at(source, name)
            )
        counts.append(value)
    for keyid, key in keys.items():
        where = _at(source, f"keys.{keyid!s:.80}")
        if not isinstance(keyid, str) or _HEX64_RE.fullmatch(keyid) is None:
            raise KeyFormatError("keyid must be 64 lowercase hex digits", where=where)
        verify_key = VerifyKey.from_hex(key.public, where=f"{where}.public")
        if verify_key.keyid != keyid:
            raise KeyFormatError(
                f"keyid does not match its public key (which has keyid {verify_key.keyid})",
                where=where,
            )
    if counts[1] > len(keys):
        raise KeyFormatError(
            f"threshold {counts[1]} is more than the {len(keys)} keys trusted",
            where=_at(source, "threshold"),
        )
    return counts[0], counts[1]


def load_trust(path: Path) -> TrustPolicy:
    """Read and validate a trust file; errors name the file and the field."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_TRUST_FILE + 1)
    except FileNotFoundError:
        raise NotFoundError("trust file not found", where=str(path)) from None
    except IsADirectoryError:
        raise KeyFormatError("is a directory, not a trust file", where=str(path)) from None
    if len(data) > _MAX_TRUST_FILE:
        raise KeyFormatError(
            f"too large for a trust file (> {_MAX_TRUST_FILE} bytes)", where=str(path)
        )
    return TrustPolicy.from_json(data, source=str(path))


# -- signatures ---------------------------------------------------------------


def sign_bytes(data: bytes, key: SigningKey) -> Signature:
    return Signature(keyid=key.keyid, sig=key.sign(data).hex())


def sign_envelope(envelope: Envelope, key: SigningKey) -> Envelope:
    """A copy of ``envelope`` with ``key``'s signature added, or replacing its old one."""
    others = [s for s in envelope.signatures if s.keyid != key.keyid]
    signatures = sorted([*others, sign_bytes(envelope.signed_bytes(), key)], key=lambda s: s.keyid)
    return replace(envelope, signatures=tuple(signatures))


def _valid_keyids(data: bytes, signatures: Sequence[Signature], policy: TrustPolicy,
                  *, what: str) -> tuple[str, ...]:
    """The distinct trusted keyids with a valid signature of ``data``; raise below threshold."""
    if not signatures:
        raise TrustRejectedError(f"{what} has no signatures", reason="unsigned", where=what)
    valid: list[str] = []
    invalid: list[str] = []
    unknown: list[str] = []
    for signature in signatures:
        key = policy.verify_key(signature.keyid)
        if key is None:
            unknown.append(signature.keyid)
        elif key.verify(data, signature.sig_bytes):
            if signature.keyid not in valid:
                valid.append(signature.keyid)
        else:
            invalid.append(signature.keyid)
    if len(valid) >= policy.threshold:
        return tuple(valid)
    # Below threshold: report the most telling cause.
    if invalid:
        raise TrustRejectedError(
            f"invalid signature by key {invalid[0]}", reason="bad-signature", where=what,
            hint="the signed content changed after signing, or the signature is forged",
        )
    if unknown and not valid:
        raise TrustRejectedError(
            f"signed only by unknown key {unknown[0]}", reason="unknown-key", where=what,
            hint="that key is not in the device's trust file",
        )
    raise TrustRejectedError(
        f"only {len(valid)} of the {policy.threshold} needed valid signatures by trusted keys",
        reason="threshold", where=what,
    )


def verify_signatures(envelope: Envelope, policy: TrustPolicy) -> tuple[str, ...]:
    """The trusted keyids whose valid signatures meet the threshold; TrustRejectedError if not."""
    return _valid_keyids(
        envelope.signed_bytes(), envelope.signatures, policy,
        what=f"envelope of revision {envelope.revision}",
    )


def check_envelope(
    envelope: Envelope,
    policy: TrustPolicy,
    *,
    now: datetime,
    last_committed: int | None,
    state_digest: str | None = None,
) -> None:
    """Everything a device checks before it lets a revision in (see the module docstring)."""
    if now.tzinfo is None:
        raise ValueError("check_envelope needs an aware 'now' (use datetime.now(UTC))")
    what = f"envelope of revision {envelope.revision}"
    verify_signatures(envelope, policy)
    expires = envelope.expires_at
    if expires is not None and now >= expires:
        raise TrustRejectedError(
            f"expired at {envelope.expires}", reason="expired", where=what,
            hint="the release must be re-signed with a later expiry (or the device clock is wrong)",
        )
    if last_committed is not None and envelope.revision <= last_committed:
        raise TrustRejectedError(
            f"revision {envelope.revision} is not newer than committed {last_committed}: "
            "replay or downgrade",
            reason="replay", where=what,
        )
    if state_digest is not None and state_digest != envelope.state:
        raise TrustRejectedError(
            f"state digest {state_digest} does not match the signed {envelope.state}",
            reason="state-mismatch", where=what,
        )


# -- rotation -----------------------------------------------------------------


def sign_trust(new_trust_bytes: bytes, key: SigningKey) -> Signature:
    """A signature of a new trust file for :func:`rotate_trust`."""
    return sign_bytes(new_trust_bytes, key)


def rotate_trust(
    current: TrustPolicy, new_trust_bytes: bytes, signatures: Sequence[Signature]
) -> TrustPolicy:
    """The new policy, if the rotation is allowed; TrustRejectedError or KeyFormatError if not.

    A rotation is allowed when ``new_trust_bytes`` is the canonical JSON of
    a valid trust file whose ``version`` is greater than the current one,
    signed by ``threshold`` of the CURRENT keys (authority) and by
    ``threshold`` of the NEW keys (proof the new keys are held, so a typo
    cannot lock the fleet out).  A key in both sets counts for both.
    """
    new = TrustPolicy.from_json(new_trust_bytes, source="new trust")
    if new.to_json() != new_trust_bytes:
        raise KeyFormatError(
            "is not in canonical JSON form (sorted keys, no whitespace)", where="new trust",
            hint="sign and ship exactly TrustPolicy.to_json()",
        )
    if new.version <= current.version:
        raise TrustRejectedError(
            f"version {new.version} is not newer than current {current.version}: "
            "replay or downgrade",
            reason="replay", where="new trust",
        )
    _valid_keyids(new_trust_bytes, signatures, current, what="trust rotation (current keys)")
    _valid_keyids(new_trust_bytes, signatures, new, what="trust rotation (new keys)")
    return new

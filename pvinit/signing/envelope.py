"""The signed revision envelope: what a release signs and a device checks.

An envelope binds a revision number, its parent and the digest of its
canonical state under the signatures of release keys::

    {"#spec": "pvinit-envelope@1", "revision": 5, "parent": "<64 hex>" | null,
     "state": "<64 hex>", "state_size": 1234, "sizes": {"<object id>": 4096},
     "created": "2024-05-01T12:00:00Z", "expires": "..." | null,
     "message": "...", "signatures": [{"keyid": "<64 hex>", "sig": "<128 hex>"}]}

The signatures cover :meth:`Envelope.signed_bytes`: the canonical JSON of
everything except ``signatures``, unknown fields included, so a field a
newer release adds is signed too and survives a round trip through an
older reader.  ``sizes`` lists every object the state references, so a
device can cap each download before it starts (a hostile mirror cannot
stream forever).  See ``docs/formats/envelope.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from pvinit.errors import InvalidStateError
from pvinit.objects.ids import is_object_id, metadata_sha256
from pvinit.record import field, record
from pvinit.state.canonical import canonical_bytes, check_json_value, parse_json
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

SPEC = "pvinit-envelope@1"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIME_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z")
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_SIG_RE = re.compile(r"[0-9a-f]{128}")
_KNOWN = frozenset(
    {"#spec", "revision", "parent", "state", "state_size", "sizes", "created", "expires",
     "message", "signatures"}
)


def format_time(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` of an aware datetime (converted to UTC)."""
    from datetime import UTC  # only signing and expiry checks need datetime, not a boot

    if moment.tzinfo is None:
        raise ValueError("format_time needs an aware datetime")
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def check_time(text: object, *, where: str) -> str:
    """``text`` if it is a real UTC time written ``YYYY-MM-DDTHH:MM:SSZ`` (pure).

    Without ``datetime``: every boot validates the running revision's
    envelope, and ``datetime`` (with ``_strptime`` and ``calendar``) would then
    stay in the supervisor for good.  Times in this form order as strings.
    """
    match = _TIME_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidStateError(
            f"must be a UTC time like 2024-05-01T12:00:00Z, got {text!r:.80}", where=where
        )
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= month <= 12:
        raise InvalidStateError(f"not a valid time: month {month} of {text}", where=where)
    days = 29 if month == 2 and leap else _DAYS_IN_MONTH[month - 1]
    if year < 1 or not 1 <= day <= days or hour > 23 or minute > 59 or second > 59:
        raise InvalidStateError(f"not a valid time: {text}", where=where)
    return match.string


def parse_time(text: object, *, where: str) -> datetime:
    """The aware UTC datetime of a ``YYYY-MM-DDTHH:MM:SSZ`` string."""
    checked = check_time(text, where=where)
    from datetime import UTC, datetime  # see format_time

    try:
        return datetime.strptime(checked, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidStateError(f"not a valid time: {exc}", where=where) from exc


def _at(source: str, name: str) -> str:
    return f"{source}:{name}"


def _digest(value: object, *, where: str, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or _DIGEST_RE.fullmatch(value) is None:
        raise InvalidStateError(
            f"must be 64 lowercase hex digits{' or null' if nullable else ''}, "
            f"got {value!r:.80}",
            where=where,
        )
    return value


def _count(value: object, *, where: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidStateError(f"must be an integer >= {minimum}, got {value!r:.80}", where=where)
    return value


@record(frozen=True)
class Signature:
    """One key's signature of an envelope's signed bytes."""

    keyid: str
    sig: str

    @classmethod
    def from_dict(cls, data: object, *, where: str = "signature") -> Signature:
        if not isinstance(data, dict):
            raise InvalidStateError("must be an object with keyid and sig", where=where)
        extra = set(data) - {"keyid", "sig"}
        if extra:
            raise InvalidStateError(f"unknown fields {sorted(extra)}", where=where)
        keyid = data.get("keyid")
        if not isinstance(keyid, str) or _DIGEST_RE.fullmatch(keyid) is None:
            raise InvalidStateError(
                f"must be 64 lowercase hex digits, got {keyid!r:.80}", where=f"{where}.keyid"
            )
        sig = data.get("sig")
        if not isinstance(sig, str) or _SIG_RE.fullmatch(sig) is None:
            raise InvalidStateError(
                f"must be 128 lowercase hex digits, got {sig!r:.140}", where=f"{where}.sig"
            )
        return cls(keyid=keyid, sig=sig)

    def to_dict(self) -> dict[str, str]:
        return {"keyid": self.keyid, "sig": self.sig}

    @property
    def sig_bytes(self) -> bytes:
        return bytes.fromhex(self.sig)


_FIELDS = ("revision", "parent", "state", "state_size", "sizes", "created", "expires",
           "message", "signatures", "extra")


def _validate(values: Mapping[str, Any], *, source: str) -> None:
    """Check every field of an envelope; InvalidStateError naming ``source:field``."""
    _count(values["revision"], where=_at(source, "revision"), minimum=1)
    _digest(values["parent"], where=_at(source, "parent"), nullable=True)
    _digest(values["state"], where=_at(source, "state"))
    _count(values["state_size"], where=_at(source, "state_size"), minimum=0)
    sizes = values["sizes"]
    if not isinstance(sizes, Mapping):
        raise InvalidStateError(
            "must be an object of object id -> size", where=_at(source, "sizes")
        )
    for object_id, size in sizes.items():
        where = _at(source, f"sizes.{object_id!s:.80}")
        if not is_object_id(object_id):
            raise InvalidStateError("key is not an object id (64 lowercase hex)", where=where)
        _count(size, where=where, minimum=0)
    created = check_time(values["created"], where=_at(source, "created"))
    if values["expires"] is not None:
        expires = check_time(values["expires"], where=_at(source, "expires"))
        if expires <= created:
            raise InvalidStateError(
                f"expires {values['expires']} is not after created {values['created']}",
                where=_at(source, "expires"),
            )
    if not isinstance(values["message"], str):
        raise InvalidStateError("must be a string", where=_at(source, "message"))
    for index, signature in enumerate(values["signatures"]):
        if not isinstance(signature, Signature):
            raise InvalidStateError(
                "must be a Signature", where=_at(source, f"signatures[{index}]")
            )
    check_json_value(dict(values["extra"]), where=source)
    for name in values["extra"]:
        if name in _KNOWN:
            raise InvalidStateError("extra may not shadow a known field", where=_at(source, name))


@record(frozen=True)
class Envelope:
    """A signed revision envelope; immutable: build changed copies with ``record.replace``."""

    revision: int
    parent: str | None
    state: str
    state_size: int
    sizes: Mapping[str, int]
    created: str
    expires: str | None = None
    message: str = ""
    signatures: tuple[Signature, ...] = ()
    #: Fields this version does not know: kept, signed and written back as they were.
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        # Validate however the envelope was built, so a bad value can never
        # reach signed_bytes() or a device.
        _validate(self._values(), source="envelope")
        object.__setattr__(self, "sizes", MappingProxyType(dict(self.sizes)))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))
        object.__setattr__(self, "signatures", tuple(self.signatures))

    def _values(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def create(
        cls,
        *,
        revision: int,
        parent: str | None,
        state_bytes: bytes,
        sizes: Mapping[str, int],
        created: datetime,
        expires: datetime | None = None,
        message: str = "",
    ) -> Envelope:
        """An unsigned envelope for ``state_bytes`` (the canonical state)."""
        return cls(
            revision=revision,
            parent=parent,
            state=metadata_sha256(state_bytes),
            state_size=len(state_bytes),
            sizes=sizes,
            created=format_time(created),
            expires=None if expires is None else format_time(expires),
            message=message,
        )

    @classmethod
    def from_dict(cls, data: object, *, source: str = "envelope") -> Envelope:
        """Parse and validate; InvalidStateError naming ``source:field`` on any fault."""
        if not isinstance(data, dict):
            raise InvalidStateError("an envelope must be a JSON object", where=source)
        if data.get("#spec") != SPEC:
            raise InvalidStateError(
                f"must be {SPEC!r}, got {data.get('#spec')!r:.80}", where=_at(source, "#spec")
            )
        missing = sorted(_KNOWN - {"#spec", "signatures"} - set(data))
        if missing:
            raise InvalidStateError(f"missing fields {missing}", where=source)
        sizes = data["sizes"]
        if not isinstance(sizes, dict):
            raise InvalidStateError(
                "must be an object of object id -> size", where=_at(source, "sizes")
            )
        raw_signatures = data.get("signatures", [])
        if not isinstance(raw_signatures, list):
            raise InvalidStateError("must be a list", where=_at(source, "signatures"))
        signatures = tuple(
            Signature.from_dict(item, where=_at(source, f"signatures[{index}]"))
            for index, item in enumerate(raw_signatures)
        )
        values: dict[str, Any] = {
            "revision": data["revision"],
            "parent": data["parent"],
            "state": data["state"],
            "state_size": data["state_size"],
            "sizes": sizes,
            "created": data["created"],
            "expires": data["expires"],
            "message": data["message"],
            "signatures": signatures,
            "extra": {k: v for k, v in data.items() if k not in _KNOWN},
        }
        # Validate with the caller's source first, so the error names the file.
        _validate(values, source=source)
        return cls(**values)

    @classmethod
    def from_json(cls, data: bytes, *, source: str = "envelope") -> Envelope:
        """Parse strictly (no duplicate keys, UTF-8 only), then :meth:`from_dict`."""
        return cls.from_dict(parse_json(data, where=source), source=source)

    def to_dict(self, *, with_signatures: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "#spec": SPEC,
                "revision": self.revision,
                "parent": self.parent,
                "state": self.state,
                "state_size": self.state_size,
                "sizes": dict(self.sizes),
                "created": self.created,
                "expires": self.expires,
                "message": self.message,
            }
        )
        if with_signatures:
            out["signatures"] = [s.to_dict() for s in self.signatures]
        return out

    def to_json(self) -> bytes:
        """Canonical JSON of the whole envelope, signatures included (what is stored)."""
        return canonical_bytes(self.to_dict(), where="envelope")

    def signed_bytes(self) -> bytes:
        """The bytes every signature covers: canonical JSON without ``signatures``."""
        return canonical_bytes(self.to_dict(with_signatures=False), where="envelope")

    @property
    def digest(self) -> str:
        """SHA256 hex of :meth:`signed_bytes`: what a child envelope's ``parent`` holds."""
        return metadata_sha256(self.signed_bytes())

    @property
    def created_at(self) -> datetime:
        return parse_time(self.created, where="envelope:created")

    @property
    def expires_at(self) -> datetime | None:
        return None if self.expires is None else parse_time(self.expires, where="envelope:expires")

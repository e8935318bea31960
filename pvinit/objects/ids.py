"""Object ids: exactly 64 lowercase hex digits (a SHA256).

Ids are validated before any path is built from them, so a hostile id
("../../etc/passwd", "A"*64, "ab/cd") can never name a file outside a store.
"""

from __future__ import annotations

import re

from pvinit.errors import InvalidObjectIdError

_ID_RE = re.compile(r"[0-9a-f]{64}")


def is_object_id(value: object) -> bool:
    """True when ``value`` is a str of exactly 64 lowercase hex digits."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def check_object_id(value: object, *, where: str | None = None) -> str:
    """Return ``value`` if it is a valid object id, else raise InvalidObjectIdError."""
    if not is_object_id(value):
        shown = repr(value) if not isinstance(value, str) or len(value) < 80 else repr(value[:80])
        raise InvalidObjectIdError(
            f"not an object id (need 64 lowercase hex digits): {shown}", where=where
        )
    assert isinstance(value, str)
    return value


def sha256_hex(data: bytes) -> str:
    """The object id of ``data``."""
    import hashlib  # OpenSSL: loaded on first use, not by every importer of ids

    return hashlib.sha256(data).hexdigest()


def metadata_sha256(data: bytes) -> str:
    """SHA256 of a small document (a state, an envelope) without loading OpenSSL.

    ``hashlib`` loads libcrypto (~4 MB resident) on import; the supervisor
    only hashes kilobytes of metadata at boot, so it uses CPython's builtin
    implementation.  Bulk object hashing keeps ``hashlib`` (SHA-NI speed).
    """
    import importlib
    import sys

    builtin = importlib.import_module("_sha256" if sys.version_info < (3, 12) else "_sha2")
    digest: str = builtin.sha256(data).hexdigest()
    return digest

"""Revision keys: the relative paths a revision's entries live at.

A key becomes a file path under ``/storage/trails/<rev>/`` and inside
checkouts, so a hostile key must never name a file outside that directory nor
a file pvinit keeps for itself.  Keys are checked *as given*, never cleaned
up: ``a//b`` or ``./a`` is refused rather than rewritten, so one revision has
exactly one spelling and the same key names the same file everywhere.

Reserved: keys starting with ``.pv`` (the trail keeps ``.pv/progress`` beside
the revision's files) and keys starting with ``#`` (revision metadata such
as ``#spec``, which the state model handles itself).
"""

from __future__ import annotations

import re

from pvinit.errors import InvalidPathError

MAX_KEY_BYTES = 4096
MAX_PART_BYTES = 255

# C0 controls, DEL and the C1 controls: invisible in listings, hostile in logs.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_key(key: object, *, where: str | None = None) -> str:
    """Return ``key`` if it is a valid revision key, else raise InvalidPathError.

    ``where`` defaults to the key itself, so the error always names it.
    """
    if not isinstance(key, str):
        raise InvalidPathError(
            f"a revision key must be text, got {type(key).__name__}",
            where=where if where is not None else repr(key),
        )
    at = where if where is not None else key

    def bad(reason: str) -> InvalidPathError:
        return InvalidPathError(f"bad key {key!r}: {reason}", where=at)

    if not key:
        raise bad("empty")
    if _CONTROL.search(key):
        raise bad("holds a control character")
    if _SURROGATE.search(key):
        raise bad("holds a lone surrogate (not UTF-8)")
    if "\\" in key:
        raise bad("holds a backslash")
    if key.startswith("/"):
        raise bad("absolute (keys are relative to the revision)")
    if key.endswith("/"):
        raise bad("ends with '/'")
    if key.startswith(".pv"):
        raise bad("'.pv' is reserved for pvinit's own files")
    if key.startswith("#"):
        raise bad("'#' starts reserved metadata keys such as '#spec'")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise bad(f"longer than {MAX_KEY_BYTES} bytes")
    for part in key.split("/"):
        if not part:
            raise bad("empty path part ('//')")
        if part in {".", ".."}:
            raise bad(f"'{part}' part (keys are normalised and may not escape)")
        if len(part.encode("utf-8")) > MAX_PART_BYTES:
            raise bad(f"a path part is longer than {MAX_PART_BYTES} bytes")
    return key


def is_valid_key(key: object) -> bool:
    """True when :func:`check_key` accepts ``key``."""
    try:
        check_key(key)
    except InvalidPathError:
        return False
    return True

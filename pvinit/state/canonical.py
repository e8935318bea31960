"""Canonical JSON: the one byte form a revision is hashed and signed in.

A revision's digest must not depend on who wrote the file, so every value is
hashed in one form: UTF-8, keys sorted, no insignificant whitespace,
non-ASCII text written as itself (``ensure_ascii=False``).

Numbers keep their JSON type.  An integer is written as an integer; a float
is written as Python's ``repr`` (the shortest text that reads back as the same
double), so ``2.0`` stays ``2.0`` and ``2`` stays ``2``.  This differs from
RFC 8785, which would write both as ``2``: we keep the type so that reading a
revision and writing it back gives the same bytes, and a ``backoff_factor`` of
``2.0`` does not silently become an integer.  NaN and the infinities have no
JSON form and are refused, as are duplicate keys (which JSON parsers resolve
differently, a classic way to make two readers see two different documents),
non-string keys, tuples and any other Python type that JSON does not have.
"""

from __future__ import annotations

import json
import math
import re

from pvinit.errors import InvalidJSONError
from pvinit.objects.ids import metadata_sha256
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

#: Deeper documents are refused: configuration is shallow, and a bound keeps
#: every walk over a hostile document cheap and free of RecursionError.
MAX_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _ConstantError(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _kind(value: object) -> str:
    return type(value).__name__


def check_json_value(value: object, *, where: str) -> None:
    """Raise InvalidJSONError unless ``value`` is plain, finite, canonicalisable JSON.

    Allowed: None, bool, int, finite float, str (encodable as UTF-8), list and
    dict with str keys, nested at most :data:`MAX_DEPTH` deep.  The error names
    ``where`` plus the path inside the value (``where#a.b[2]``).
    """
    stack: list[tuple[object, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if item is None or isinstance(item, (bool, int)):
            continue
        here = f"{where}#{path}" if path else where
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise InvalidJSONError("text holds a lone surrogate (not UTF-8)", where=here)
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidJSONError(f"number {item!r} has no JSON form", where=here)
            continue
        if depth >= MAX_DEPTH:
            raise InvalidJSONError(f"nested deeper than {MAX_DEPTH} levels", where=here)
        if isinstance(item, list):
            for index, element in enumerate(item):
                stack.append((element, f"{path}[{index}]", depth + 1))
        elif isinstance(item, dict):
            for key, element in item.items():
                if not isinstance(key, str):
                    raise InvalidJSONError(
                        f"object key {key!r} is a {_kind(key)}, JSON keys are text", where=here
                    )
                if _SURROGATE.search(key):
                    raise InvalidJSONError("key holds a lone surrogate (not UTF-8)", where=here)
                stack.append((element, f"{path}.{key}" if path else key, depth + 1))
        else:
            raise InvalidJSONError(f"a {_kind(item)} is not a JSON value", where=here)


def canonical_bytes(obj: object, *, where: str = "value") -> bytes:
    """The canonical UTF-8 bytes of a JSON value (see the module docstring)."""
    check_json_value(obj, where=where)
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except ValueError as exc:  # e.g. an int past Python's digit limit
        raise InvalidJSONError(f"cannot be written as JSON: {exc}", where=where) from None
    return text.encode("utf-8")


def digest_of(obj: object, *, where: str = "value") -> str:
    """SHA256 hex of the canonical bytes of ``obj``: a revision's identity."""
    return metadata_sha256(canonical_bytes(obj, where=where))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _no_constants(name: str) -> object:
    raise _ConstantError(name)


def parse_json(data: bytes, *, where: str) -> object:
    """Parse UTF-8 JSON strictly; InvalidJSONError names ``where`` and the fault.

    Refuses: bytes that are not UTF-8, a byte-order mark, duplicate keys,
    NaN/Infinity (also as overflowing literals such as ``1e400``), lone
    surrogates, and anything :func:`check_json_value` refuses.
    """
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJSONError(
            f"not UTF-8 ({exc.reason} at byte {exc.start})", where=where
        ) from None
    if text.startswith("\ufeff"):
        raise InvalidJSONError("starts with a byte-order mark", where=where)
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except _DuplicateKeyError as exc:
        raise InvalidJSONError(f"duplicate key {exc.key!r}", where=where) from None
    except _ConstantError as exc:
        raise InvalidJSONError(f"{exc.name} is not valid JSON", where=where) from None
    except json.JSONDecodeError as exc:
        raise InvalidJSONError(
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", where=where
        ) from None
    except (ValueError, RecursionError) as exc:
        raise InvalidJSONError(f"not JSON: {exc}", where=where) from None
    check_json_value(value, where=where)
    return value


def parse_canonical(data: bytes, *, where: str) -> object:
    """Parse ``data`` and insist it is already in canonical form.

    Signed or stored revisions are kept canonical, so that the bytes on disk
    are the bytes that were hashed; anything else is refused rather than
    silently re-encoded.
    """
    value = parse_json(data, where=where)
    if canonical_bytes(value, where=where) != bytes(data):
        raise InvalidJSONError(
            "not in canonical form",
            where=where,
            hint="sorted keys, no spaces, UTF-8; rewrite it with canonical_bytes()",
        )
    return value

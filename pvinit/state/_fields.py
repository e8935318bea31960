"""Typed reads of fields out of one inline JSON document, naming each field in errors.

Every inline document (``device.json``, ``bsp/run.json``, ``<name>/run.json``)
is read through a :class:`FieldReader`, so every wrong field produces the same
kind of error, naming the document and the field:
``state.json:sensor/run.json#auto_recovery.max_retries``.

The reader also records which fields were read; what is left over is the
document's ``extra`` (fields a newer pvinit may understand), kept verbatim so
that reading a revision and writing it back gives the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping

from pvinit.errors import InvalidStateError
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, TypeVar

    JsonT = TypeVar("JsonT")

#: Names of containers, groups and volumes: they become directory names,
#: LXC container names and cgroup names.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def field_where(where: str, name: str) -> str:
    """The location of field ``name`` inside the document at ``where``."""
    return f"{where}.{name}" if "#" in where else f"{where}#{name}"


def item_where(where: str, key: str | int) -> str:
    """The location of a list item or map entry inside the value at ``where``."""
    shown = str(key) if isinstance(key, int) else json.dumps(key, ensure_ascii=False)
    return f"{where}[{shown}]"


def kind_of(value: object) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def put(
    out: dict[str, Any], name: str, value: object, default: object, given: Collection[str]
) -> None:
    """Write an optional field back only when it was given or differs from its default."""
    if name in given or value != default:
        out[name] = value


class FieldReader:
    """Reads typed fields from one JSON object; errors name ``where`` and the field."""

    def __init__(self, data: object, where: str, what: str) -> None:
        if not isinstance(data, dict):
            raise InvalidStateError(
                f"{what} must be a JSON object, got {kind_of(data)}", where=where
            )
        self.data: dict[str, Any] = data
        self.where = where
        self._read: set[str] = set()

    def at(self, name: str) -> str:
        return field_where(self.where, name)

    def take(self, name: str, required: bool) -> object:
        self._read.add(name)
        if name not in self.data:
            if required:
                raise InvalidStateError(f"required field {name!r} is missing", where=self.at(name))
            return None
        return self.data[name]

    def _fail(self, name: str, expected: str, value: object) -> InvalidStateError:
        return InvalidStateError(f"must be {expected}, got {kind_of(value)}", where=self.at(name))

    def text(
        self,
        name: str,
        *,
        choices: Collection[str] | None = None,
        pattern: re.Pattern[str] | None = None,
    ) -> str:
        """A required, non-empty string field."""
        value = self.opt_text(name, choices=choices, pattern=pattern)
        if value is None:
            raise InvalidStateError(f"required field {name!r} is missing", where=self.at(name))
        return value

    def opt_text(
        self,
        name: str,
        *,
        choices: Collection[str] | None = None,
        pattern: re.Pattern[str] | None = None,
    ) -> str | None:
        """An optional non-empty string field; None when absent."""
        value = self.take(name, required=False)
        if value is None and name not in self.data:
            return None
        if not isinstance(value, str):
            raise self._fail(name, "text", value)
        if not value:
            raise InvalidStateError("may not be empty", where=self.at(name))
        if choices is not None and value not in choices:
            allowed = ", ".join(sorted(choices))
            raise InvalidStateError(f"{value!r} is not one of: {allowed}", where=self.at(name))
        if pattern is not None and not pattern.fullmatch(value):
            raise InvalidStateError(
                f"{value!r} is not a valid name (letters, digits, '_', '.', '-'; at most 64)",
                where=self.at(name),
            )
        return value

    def number(self, name: str, *, minimum: float, default: float | None = None) -> int | float:
        """A number field (int or float kept as given) no smaller than ``minimum``."""
        value = self.take(name, required=default is None)
        if name not in self.data and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._fail(name, "a number", value)
        if value < minimum:
            raise InvalidStateError(f"must be >= {minimum}, got {value!r}", where=self.at(name))
        return value

    def integer(self, name: str, *, minimum: int, default: int | None = None) -> int:
        """An integer field no smaller than ``minimum``."""
        value = self.take(name, required=default is None)
        if name not in self.data and default is not None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(name, "an integer", value)
        if value < minimum:
            raise InvalidStateError(f"must be >= {minimum}, got {value!r}", where=self.at(name))
        return value

    def text_list(self, name: str, *, nonempty_if_given: bool = False) -> tuple[str, ...]:
        """An optional list of non-empty strings; () when absent."""
        value = self.take(name, required=False)
        if name not in self.data:
            return ()
        if not isinstance(value, list):
            raise self._fail(name, "a list of text", value)
        if nonempty_if_given and not value:
            raise InvalidStateError("may not be an empty list", where=self.at(name))
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item or "\x00" in item:
                raise InvalidStateError(
                    f"must be non-empty text without NUL, got {kind_of(item)}",
                    where=item_where(self.at(name), index),
                )
        return tuple(value)

    def text_map(self, name: str) -> dict[str, str]:
        """An optional object of string values; {} when absent."""
        value = self.take(name, required=False)
        if name not in self.data:
            return {}
        if not isinstance(value, dict):
            raise self._fail(name, "an object of text values", value)
        for key, item in value.items():
            if not isinstance(item, str):
                raise InvalidStateError(
                    f"must be text, got {kind_of(item)}", where=item_where(self.at(name), key)
                )
        return dict(value)

    def obj(self, name: str) -> dict[str, Any] | None:
        """An optional JSON object field, returned as a deep copy; None when absent."""
        value = self.take(name, required=False)
        if name not in self.data:
            return None
        if not isinstance(value, dict):
            raise self._fail(name, "an object", value)
        return json_copy(value)

    def extra(self) -> dict[str, Any]:
        """The fields nobody read: kept verbatim for newer readers."""
        return {k: json_copy(v) for k, v in self.data.items() if k not in self._read}

    def given(self) -> frozenset[str]:
        """The known fields that were present in the document."""
        return frozenset(name for name in self._read if name in self.data)


def json_copy(value: JsonT) -> JsonT:
    """A deep copy of a JSON value: new dicts and lists, the immutable scalars shared.

    Not ``copy.deepcopy``: JSON has no cycles, no shared parts to preserve and
    no other mutable types, and ``copy`` (with ``weakref``) would be ~0.12 MiB
    more in the supervisor's heap for its whole life.
    """
    copied: Any = value
    if isinstance(value, dict):
        copied = {key: json_copy(item) for key, item in value.items()}
    elif isinstance(value, list):
        copied = [json_copy(item) for item in value]
    elif isinstance(value, tuple):
        copied = tuple(json_copy(item) for item in value)
    return copied  # type: ignore[no-any-return]


def frozen_copy(value: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON object, for ``to_dict`` results callers may mutate."""
    return {key: json_copy(item) for key, item in value.items()}

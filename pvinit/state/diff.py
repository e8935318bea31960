"""What changed between two revisions, key by key and part by part.

A diff is pure: two States in, a :class:`StateDiff` out.  Keys are grouped
into *parts*, the units an update acts on: ``#spec``, ``device.json``,
``bsp`` (everything under ``bsp/``), one part per container (named after it)
and ``other`` for the rest.  A directory counts as a container when it is one
in either revision, so removing a container's ``run.json`` still shows up
under the container.

Inline documents are compared by canonical bytes, not Python equality, so a
``timeout`` going from ``30`` to ``30.0`` is a change (it changes the digest).

:meth:`StateDiff.to_dict` carries the new values, so ``apply_diff(old,
diff.to_dict())`` rebuilds the new revision; the ``from`` and ``to`` digests
make applying a diff to the wrong base a loud ConflictError, and a result
that does not hash to ``to`` an IntegrityError.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pvinit.errors import ConflictError, IntegrityError, InvalidStateError
from pvinit.objects.ids import is_object_id
from pvinit.record import field, record
from pvinit.state._fields import json_copy
from pvinit.state.canonical import canonical_bytes
from pvinit.state.model import BSP_DIR, DEVICE_KEY, SPEC_KEY, Entry, State
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:  # typing costs ~0.5 MiB in the supervisor, which plans live updates
    from typing import Any

DIFF_SPEC = "pvinit-state-diff@1"

PART_KINDS = ("spec", "device", "bsp", "container", "other")


@record(frozen=True, kw_only=True)
class PartDiff:
    """The changed keys of one part; ``kind`` is spec, device, bsp, container or other."""

    kind: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key this part touches, sorted."""
        return tuple(sorted((*self.added, *self.removed, *self.changed)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": list(self.changed),
        }


@record(frozen=True, kw_only=True)
class StateDiff:
    """Keys added, removed and changed from ``old_digest`` (None: nothing) to ``new_digest``.

    ``values`` holds the new value of every added or changed key.
    """

    old_digest: str | None
    new_digest: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    parts: Mapping[str, PartDiff] = field(default_factory=dict)
    values: Mapping[str, Entry] = field(default_factory=dict, repr=False)

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``apply_diff`` reads back (new values included)."""
        return {
            "#diff": DIFF_SPEC,
            "from": self.old_digest,
            "to": self.new_digest,
            "added": {key: json_copy(self.values[key]) for key in self.added},
            "changed": {key: json_copy(self.values[key]) for key in self.changed},
            "removed": list(self.removed),
            "parts": {name: part.to_dict() for name, part in self.parts.items()},
        }


def part_of(key: str, containers: frozenset[str] | set[str]) -> tuple[str, str]:
    """(part name, kind) of a key, given the container names of both revisions."""
    if key == SPEC_KEY:
        return SPEC_KEY, "spec"
    if key == DEVICE_KEY:
        return DEVICE_KEY, "device"
    head, sep, _ = key.partition("/")
    if sep and head == BSP_DIR:
        return BSP_DIR, "bsp"
    if sep and head in containers:
        return head, "container"
    return "other", "other"


def _same(a: Entry, b: Entry) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    # Python's == says 2 == 2.0 and True == 1; the digest does not.
    return a == b and canonical_bytes(a) == canonical_bytes(b)


def diff_states(old: State | None, new: State) -> StateDiff:
    """Every key added, removed or changed from ``old`` (None: an empty device) to ``new``."""
    old_entries: Mapping[str, Entry] = old.entries if old is not None else {}
    new_entries = new.entries
    added: list[str] = []
    changed: list[str] = []
    for key, value in new_entries.items():
        before = old_entries.get(key)
        if before is None:
            added.append(key)
        elif not _same(before, value):
            changed.append(key)
    removed = [key for key in old_entries if key not in new_entries]
    containers = set(new.containers)
    if old is not None:
        containers.update(old.containers)
    grouped: dict[str, dict[str, list[str]]] = {}
    kinds: dict[str, str] = {}
    for what, keys in (("added", added), ("removed", removed), ("changed", changed)):
        for key in keys:
            part, kind = part_of(key, containers)
            kinds[part] = kind
            grouped.setdefault(part, {"added": [], "removed": [], "changed": []})[what].append(key)
    parts = {
        part: PartDiff(
            kind=kinds[part],
            added=tuple(sorted(lists["added"])),
            removed=tuple(sorted(lists["removed"])),
            changed=tuple(sorted(lists["changed"])),
        )
        for part, lists in sorted(grouped.items())
    }
    values = {key: new_entries[key] for key in (*added, *changed)}
    return StateDiff(
        old_digest=old.digest if old is not None else None,
        new_digest=new.digest,
        added=tuple(sorted(added)),
        removed=tuple(sorted(removed)),
        changed=tuple(sorted(changed)),
        parts=MappingProxyType(parts),
        values=MappingProxyType(values),
    )


def _payload_field(payload: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    value = payload.get(name)
    if not isinstance(value, kind):
        raise InvalidStateError(f"must be a {kind.__name__}", where=f"{where}#{name}")
    return value


def apply_diff(
    old: State | None, diff: StateDiff | Mapping[str, Any], *, where: str = "diff"
) -> State:
    """Rebuild the new revision from ``old`` and a diff (a StateDiff or its ``to_dict()``)."""
    payload = diff.to_dict() if isinstance(diff, StateDiff) else diff
    if not isinstance(payload, Mapping) or payload.get("#diff") != DIFF_SPEC:
        raise InvalidStateError(f"not a {DIFF_SPEC} document", where=f"{where}##diff")
    base = payload.get("from")
    if base is not None and not is_object_id(base):
        raise InvalidStateError("must be a digest or null", where=f"{where}#from")
    target = payload.get("to")
    if not is_object_id(target):
        raise InvalidStateError("must be a digest", where=f"{where}#to")
    added: Mapping[str, Any] = _payload_field(payload, "added", dict, where)
    changed: Mapping[str, Any] = _payload_field(payload, "changed", dict, where)
    removed: list[Any] = _payload_field(payload, "removed", list, where)
    have = old.digest if old is not None else None
    if base != have:
        raise ConflictError(
            f"the diff applies to {base or 'an empty device'}, not to {have or 'an empty device'}",
            where=where,
        )
    entries: dict[str, Any] = old.to_dict() if old is not None else {}
    for key in removed:
        if not isinstance(key, str) or key not in entries:
            raise ConflictError("removes a key the base does not have", where=f"{where}:{key}")
        del entries[key]
    for key, value in changed.items():
        if key not in entries:
            raise ConflictError("changes a key the base does not have", where=f"{where}:{key}")
        entries[key] = json_copy(value)
    for key, value in added.items():
        if key in entries:
            raise ConflictError("adds a key the base already has", where=f"{where}:{key}")
        entries[key] = json_copy(value)
    result = State.from_dict(entries, where=where)
    if result.digest != target:
        raise IntegrityError(f"applying the diff gave {result.digest}, not {target}", where=where)
    return result

"""What a device asks a source for and what it got: plain records, no transport.

Kept apart from :mod:`pvinit.transport.remote` (``http.client``,
``concurrent.futures``, ``zstandard``: ~18 ms to import) so that the update
engine and an update from a bundle, which need only these records, do not
load the network stack: every update is prepared in a fresh fork
(:mod:`pvinit.forked`), which imports what it needs each time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pvinit.errors import BadInputError
from pvinit.objects.ids import check_object_id
from pvinit.objects.store import ObjectStore
from pvinit.record import record

#: ``progress(done, total)`` in signed (uncompressed) bytes of the wanted objects.
Progress = Callable[[int, int], None]


@record(frozen=True)
class ObjectWant:
    """One object to get: its id, its signed size and a base the device may hold."""

    id: str
    size: int
    base_id: str | None = None

    def __post_init__(self) -> None:
        check_object_id(self.id, where="wanted object")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise BadInputError(f"size must be an integer >= 0, got {self.size!r:.40}",
                                where=self.id)
        if self.base_id is not None:
            check_object_id(self.base_id, where=f"base of {self.id}")

    @classmethod
    def from_dict(cls, data: object) -> ObjectWant:
        if not isinstance(data, dict) or set(data) - {"id", "size", "base_id"}:
            raise BadInputError("a wanted object is {id, size, base_id}", where="want")
        return cls(id=data.get("id"), size=data.get("size"),  # type: ignore[arg-type]
                   base_id=data.get("base_id"))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "size": self.size, "base_id": self.base_id}


@record(frozen=True)
class FetchedObject:
    """How one object arrived."""

    id: str
    bytes_on_wire: int
    via_delta: bool

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "bytes_on_wire": self.bytes_on_wire, "via_delta": self.via_delta}


@record(frozen=True)
class FetchReport:
    """What a fetch did; ``skipped_present`` are the wanted ids the store already had."""

    objects: tuple[FetchedObject, ...] = ()
    bytes_on_wire: int = 0
    deltas_used: int = 0
    skipped_present: tuple[str, ...] = ()

    @classmethod
    def of(cls, objects: Iterable[FetchedObject], skipped: Iterable[str]) -> FetchReport:
        done = tuple(objects)
        return cls(
            objects=done,
            bytes_on_wire=sum(item.bytes_on_wire for item in done),
            deltas_used=sum(1 for item in done if item.via_delta),
            skipped_present=tuple(skipped),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": [item.to_dict() for item in self.objects],
            "bytes_on_wire": self.bytes_on_wire,
            "deltas_used": self.deltas_used,
            "skipped_present": list(self.skipped_present),
        }


def plan_wants(wants: Iterable[ObjectWant], store: ObjectStore) -> tuple[
        tuple[ObjectWant, ...], tuple[str, ...]]:
    """Split wants into (to fetch, already present); duplicates must agree on the size."""
    seen: dict[str, ObjectWant] = {}
    for want in wants:
        earlier = seen.get(want.id)
        if earlier is not None and earlier.size != want.size:
            raise BadInputError(
                f"wanted twice with sizes {earlier.size} and {want.size}", where=want.id
            )
        if earlier is None or (earlier.base_id is None and want.base_id is not None):
            seen[want.id] = want
    missing = tuple(w for w in seen.values() if not store.contains(w.id))
    present = tuple(w.id for w in seen.values() if store.contains(w.id))
    return missing, present

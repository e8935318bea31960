"""The ObjectStore interface: a SHA256 content-addressed blob store.

Two implementations pass one contract suite (``tests/unit/test_object_store_contract.py``):
:class:`~pvinit.objects.disk.DiskObjectStore` (``<root>/<2 hex>/<62 hex>``,
what devices and release engineers use) and
:class:`~pvinit.objects.memory.MemoryObjectStore` (tests and planning).
Objects are stored raw, so a squashfs object can be loop-mounted straight
from its file; compression belongs to transport and bundles.
"""

from __future__ import annotations

import abc
import io
from collections.abc import Iterable, Iterator
from pathlib import Path

from pvinit.errors import BadInputError, NotFoundError
from pvinit.objects.ids import check_object_id
from pvinit.record import field, record
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import BinaryIO

CHUNK = 1 << 20


@record(frozen=True)
class StoreStats:
    """Size and count of the objects in a store."""

    count: int
    total_bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "total_bytes": self.total_bytes}


@record(frozen=True)
class FsckProblem:
    """One thing fsck found wrong: ``kind`` is ``corrupt``, ``stray`` or ``temp``."""

    kind: str
    path: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path, "detail": self.detail}


@record(frozen=True)
class FsckReport:
    checked: int
    problems: tuple[FsckProblem, ...] = ()
    repaired: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "checked": self.checked,
            "clean": self.clean,
            "problems": [p.to_dict() for p in self.problems],
            "repaired": list(self.repaired),
        }


@record(frozen=True)
class GcReport:
    removed: tuple[str, ...] = field(default_factory=tuple)
    reclaimed_bytes: int = 0
    kept: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "removed": list(self.removed),
            "reclaimed_bytes": self.reclaimed_bytes,
            "kept": self.kept,
        }


def open_source_file(path: str | Path, *, buffering: int = -1) -> BinaryIO:
    """Open a file to add; a missing or unreadable one is a PvError naming the path."""
    try:
        return open(path, "rb", buffering=buffering)
    except FileNotFoundError:
        raise NotFoundError("file to add does not exist", where=str(path)) from None
    except IsADirectoryError:
        raise BadInputError("file to add is a directory", where=str(path)) from None


class ObjectStore(abc.ABC):
    """A content-addressed store of immutable blobs keyed by their SHA256."""

    @abc.abstractmethod
    def add_stream(self, stream: BinaryIO, *, expected_id: str | None = None,
                   max_size: int | None = None) -> str:
        """Add the bytes read from ``stream``; returns the object id.

        The id is computed while writing.  With ``expected_id`` the content
        must hash to it (IntegrityError otherwise, nothing stored); with
        ``max_size`` more bytes than that raise IntegrityError.  Adding an
        object that exists is a no-op.
        """

    def add_bytes(self, data: bytes, *, expected_id: str | None = None,
                  max_size: int | None = None) -> str:
        return self.add_stream(io.BytesIO(data), expected_id=expected_id, max_size=max_size)

    def add_file(self, path: str | Path, *, expected_id: str | None = None,
                 max_size: int | None = None) -> str:
        with open_source_file(path) as handle:
            return self.add_stream(handle, expected_id=expected_id, max_size=max_size)

    @abc.abstractmethod
    def contains(self, object_id: str) -> bool:
        """True when the object is present (the id is validated first)."""

    def __contains__(self, object_id: object) -> bool:
        return isinstance(object_id, str) and self.contains(object_id)

    @abc.abstractmethod
    def open(self, object_id: str) -> BinaryIO:
        """A readable binary stream of the object; ObjectNotFoundError if absent."""

    def read_bytes(self, object_id: str) -> bytes:
        with self.open(object_id) as handle:
            return handle.read()

    @abc.abstractmethod
    def size(self, object_id: str) -> int:
        """Size in bytes of a present object."""

    @abc.abstractmethod
    def ids(self) -> Iterator[str]:
        """Every object id in the store (no order promised)."""

    @abc.abstractmethod
    def verify(self, object_id: str) -> bool:
        """Re-hash the object; False when its content no longer matches its id."""

    @abc.abstractmethod
    def remove(self, object_id: str) -> int:
        """Remove an object; returns the bytes freed.  Used by GC only."""

    @abc.abstractmethod
    def fsck(self, *, repair: bool = False) -> FsckReport:
        """Check every object (and, on disk, stray files); with repair, quarantine them."""

    def stats(self) -> StoreStats:
        count = 0
        total = 0
        for object_id in self.ids():
            count += 1
            total += self.size(object_id)
        return StoreStats(count=count, total_bytes=total)

    def gc(self, keep: Iterable[str]) -> GcReport:
        """Remove every object not in ``keep`` (the ids reachable from kept revisions).

        Every id in ``keep`` is validated before anything is removed: a
        malformed id there is a bug upstream, and GC must not act on a keep
        set it cannot trust.
        """
        keep_set = self._checked_keep(keep)
        removed: list[str] = []
        reclaimed = 0
        kept = 0
        for object_id in list(self.ids()):
            if object_id in keep_set:
                kept += 1
                continue
            reclaimed += self.remove(object_id)
            removed.append(object_id)
        return GcReport(removed=tuple(sorted(removed)), reclaimed_bytes=reclaimed, kept=kept)

    @staticmethod
    def _checked_keep(keep: Iterable[str]) -> frozenset[str]:
        """``keep`` as a set, every member checked to be an object id."""
        return frozenset(check_object_id(object_id, where="gc keep set") for object_id in keep)

    def path(self, object_id: str) -> Path | None:
        """The file holding the object, for stores that have one (hard links, loop mounts)."""
        return None

"""An in-memory object store: the ObjectStore contract in a dict.

For tests and for planning (e.g. "which objects would this update fetch")
where touching a disk would only slow things down.  It keeps the same
promises as the disk store, checked by the same contract suite, so code
tested against it behaves the same on a device.  There are no files, so
fsck only re-hashes; :meth:`MemoryObjectStore._corrupt_for_test` is the
test hook that makes something for it to find.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import BinaryIO

from pvinit.errors import BadInputError, IntegrityError, ObjectNotFoundError
from pvinit.objects.ids import check_object_id, sha256_hex
from pvinit.objects.store import CHUNK, FsckProblem, FsckReport, ObjectStore


class MemoryObjectStore(ObjectStore):
    """Objects as ``bytes`` in a dict keyed by id; repair moves them to :attr:`quarantine`."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        #: Corrupt objects fsck(repair=True) took out of the store, by id.
        self.quarantine: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"MemoryObjectStore({len(self._objects)} objects)"

    def add_stream(self, stream: BinaryIO, *, expected_id: str | None = None,
                   max_size: int | None = None) -> str:
        if expected_id is not None:
            check_object_id(expected_id, where="expected id")
        if max_size is not None and max_size < 0:
            raise BadInputError(f"max_size must be >= 0, not {max_size}", where="max_size")
        digest = hashlib.sha256()
        parts: list[bytes] = []
        total = 0
        while True:
            limit = CHUNK if max_size is None else max(1, min(CHUNK, max_size + 1 - total))
            data = stream.read(limit)
            if not data:
                break
            total += len(data)
            if max_size is not None and total > max_size:
                raise IntegrityError(
                    f"object is larger than the allowed {max_size} bytes", where=expected_id
                )
            digest.update(data)
            parts.append(data)
        object_id = digest.hexdigest()
        if expected_id is not None and object_id != expected_id:
            raise IntegrityError(
                f"content hashes to {object_id}, not to the expected id", where=expected_id
            )
        self._objects.setdefault(object_id, b"".join(parts))
        return object_id

    def _get(self, object_id: str) -> bytes:
        check_object_id(object_id)
        try:
            return self._objects[object_id]
        except KeyError:
            raise ObjectNotFoundError("object not in store", where=object_id) from None

    def contains(self, object_id: str) -> bool:
        check_object_id(object_id)
        return object_id in self._objects

    def open(self, object_id: str) -> BinaryIO:
        return io.BytesIO(self._get(object_id))

    def size(self, object_id: str) -> int:
        return len(self._get(object_id))

    def ids(self) -> Iterator[str]:
        return iter(list(self._objects))

    def verify(self, object_id: str) -> bool:
        return sha256_hex(self._get(object_id)) == object_id

    def remove(self, object_id: str) -> int:
        freed = len(self._get(object_id))
        del self._objects[object_id]
        return freed

    def fsck(self, *, repair: bool = False) -> FsckReport:
        checked = len(self._objects)
        problems = tuple(
            FsckProblem("corrupt", object_id, "content does not hash to its id")
            for object_id, data in sorted(self._objects.items())
            if sha256_hex(data) != object_id
        )
        repaired: list[str] = []
        if repair:
            for problem in problems:
                self.quarantine[problem.path] = self._objects.pop(problem.path)
                repaired.append(f"quarantined {problem.path}")
        return FsckReport(checked=checked, problems=problems, repaired=tuple(repaired))

    def _corrupt_for_test(self, object_id: str, data: bytes) -> None:
        """Test hook: replace a stored object's bytes behind the store's back."""
        self._get(object_id)
        self._objects[object_id] = data

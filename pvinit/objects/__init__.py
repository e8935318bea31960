"""Content-addressed object store: SHA256 ids, a disk backend and an in-memory one."""

from __future__ import annotations

from pvinit.objects.disk import DiskObjectStore
from pvinit.objects.ids import check_object_id, is_object_id, sha256_hex
from pvinit.objects.memory import MemoryObjectStore
from pvinit.objects.store import FsckProblem, FsckReport, GcReport, ObjectStore, StoreStats

__all__ = [
    "DiskObjectStore",
    "FsckProblem",
    "FsckReport",
    "GcReport",
    "MemoryObjectStore",
    "ObjectStore",
    "StoreStats",
    "check_object_id",
    "is_object_id",
    "sha256_hex",
]

"""Content-addressed object store: SHA256 ids, a disk backend and an in-memory one.

The names below are loaded on first use (PEP 562): the supervisor imports
``pvinit.objects.ids`` on every boot, and an eager re-export here would load
the memory backend and ``hashlib`` (OpenSSL, ~2 MB resident) with it.
"""

from __future__ import annotations

import importlib

from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    from pvinit.objects.disk import DiskObjectStore
    from pvinit.objects.ids import check_object_id, is_object_id, sha256_hex
    from pvinit.objects.memory import MemoryObjectStore
    from pvinit.objects.store import (
        FsckProblem,
        FsckReport,
        GcReport,
        ObjectStore,
        StoreStats,
    )

_HOMES = {
    "DiskObjectStore": "disk",
    "MemoryObjectStore": "memory",
    "check_object_id": "ids",
    "is_object_id": "ids",
    "sha256_hex": "ids",
    "FsckProblem": "store",
    "FsckReport": "store",
    "GcReport": "store",
    "ObjectStore": "store",
    "StoreStats": "store",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"pvinit.objects.{home}"), name)

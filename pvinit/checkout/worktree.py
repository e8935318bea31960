"""The working tree of a state checkout: files on disk <-> revision entries.

A checkout's working tree *is* the state being edited, as in Pantavisor's
pvr: every regular file is a key; ``*.json`` files are inline documents, any
other file is an object whose id is its SHA256.  Names whose first character
is ``.`` are never part of the state (``.pvstate/``, editor swap files).

Hashing a 50 MB squashfs on every ``status`` would be slow, so a stat cache
(size, mtime_ns, inode, ctime_ns -> id) in ``.pvstate/cache.json`` remembers
ids of files that have not changed since they were last hashed, the way
git's index does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from pvinit import durable
from pvinit.errors import BadInputError, InvalidJSONError
from pvinit.objects.ids import is_object_id
from pvinit.objects.store import ObjectStore
from pvinit.record import record
from pvinit.state.canonical import parse_json
from pvinit.state.paths import check_key

Entry = str | dict[str, object]
Progress = Callable[[int, int], None]

_HASH_CHUNK = 1 << 20


def _is_hidden(part: str) -> bool:
    return part.startswith(".")


@record(frozen=True)
class StatKey:
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> StatKey:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def to_list(self) -> list[int]:
        return [self.size, self.mtime_ns, self.ctime_ns, self.ino]


class StatCache:
    """Remembers the object id of unchanged working-tree files (like git's index)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, tuple[list[int], str]] = {}
        self._dirty = False
        try:
            raw = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            raw = {}
        if isinstance(raw, dict):
            for key, value in raw.items():
                if (
                    isinstance(value, list)
                    and len(value) == 2
                    and isinstance(value[0], list)
                    and is_object_id(value[1])
                ):
                    self._entries[key] = (value[0], value[1])

    def lookup(self, key: str, st: os.stat_result) -> str | None:
        hit = self._entries.get(key)
        if hit is not None and hit[0] == StatKey.of(st).to_list():
            return hit[1]
        return None

    def remember(self, key: str, st: os.stat_result, object_id: str) -> None:
        self._entries[key] = (StatKey.of(st).to_list(), object_id)
        self._dirty = True

    def save(self, keep: set[str]) -> None:
        """Write the cache (only entries for keys still in the tree); losing it is harmless."""
        stale = set(self._entries) - keep
        for key in stale:
            del self._entries[key]
        if self._dirty or stale:
            data = json.dumps(
                {k: [v[0], v[1]] for k, v in sorted(self._entries.items())}
            ).encode()
            durable.write_file(self.path, data, name="checkout.cache")
            self._dirty = False


def hash_file(path: Path, progress: Progress | None = None) -> str:
    """SHA256 of a file, read in large chunks."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    buf = bytearray(_HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as handle:
        while True:
            n = handle.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
            done += n
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def iter_tree_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Yield (key, path) for every state file under ``root``, sorted by key.

    A symlink or special file in the tree is refused: a revision holds regular
    files only, and following links could pull in files outside the checkout.
    """
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        base = Path(dirpath)
        for name in filenames:
            if _is_hidden(name):
                continue
            path = base / name
            key = path.relative_to(root).as_posix()
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                raise BadInputError(
                    "only regular files can be part of a state (found a symlink or special file)",
                    where=key,
                )
            found.append((check_key(key, where=key), path))
        for name in dirnames:
            if (base / name).is_symlink():
                key = (base / name).relative_to(root).as_posix()
                raise BadInputError("a state may not contain symlinked directories", where=key)
    found.sort()
    yield from found


def read_document(path: Path, key: str) -> dict[str, object]:
    """Parse a working-tree ``*.json`` file into an inline document."""
    doc = parse_json(path.read_bytes(), where=key)
    if not isinstance(doc, dict):
        raise InvalidJSONError("an inline JSON document must be a JSON object", where=key)
    return doc


def scan(root: Path, cache: StatCache, progress: Progress | None = None) -> dict[str, Entry]:
    """The entries of the working tree (objects hashed, or taken from the stat cache)."""
    entries: dict[str, Entry] = {}
    for key, path in iter_tree_files(root):
        if key.endswith(".json"):
            entries[key] = read_document(path, key)
            continue
        st = path.stat()
        object_id = cache.lookup(key, st)
        if object_id is None:
            object_id = hash_file(path, progress)
            cache.remember(key, st, object_id)
        entries[key] = object_id
    cache.save({k for k, v in entries.items() if isinstance(v, str)})
    return entries


def format_document(doc: Mapping[str, object]) -> bytes:
    """How inline documents look in a working tree: sorted, indented, newline-terminated."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write_entry(root: Path, key: str, value: Entry, store: ObjectStore) -> None:
    """Materialise one entry in the working tree (object copied out of the store)."""
    path = root / check_key(key)
    durable.makedirs(path.parent)
    if isinstance(value, dict):
        durable.write_file(path, format_document(value), name="checkout.file")
        return
    with store.open(value) as src, durable.save_file(path, name="checkout.file") as dst:
        shutil.copyfileobj(src, dst, _HASH_CHUNK)


def remove_entry(root: Path, key: str) -> None:
    """Remove a tracked file and any directories it leaves empty (up to root)."""
    path = root / check_key(key)
    if path.exists():
        durable.remove_file(path, name="checkout.file")
    parent = path.parent
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        durable.fsync_dir(parent.parent)
        parent = parent.parent

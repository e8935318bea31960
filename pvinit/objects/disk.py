"""The on-disk object store: ``<root>/<2 hex>/<62 hex>``, one raw file per object.

Why it looks like this:

* Objects are raw files so a squashfs object can be loop-mounted and an
  object hard-linked into a trail straight from ``<root>``; the two-level
  fan-out keeps directories small on the slow filesystems of devices.
* An object is hashed *while* it is written to ``<root>/tmp/`` (the same
  filesystem), so its bytes are read once.  Only a new object pays for
  ``fsync``: when the id turns out to exist already the temp file is dropped
  unsynced.  The object then appears with ``os.link`` (never replaces an
  existing file, so a racing writer of the same object is harmless) and the
  fan-out directory is fsynced.  A power cut at any instant leaves either no
  object or the complete one, plus at most a temp file for :meth:`fsck`.
* A writer holds ``flock`` on its temp file, so :meth:`fsck` can tell the
  leftover of a dead writer (unlocked) from a write in progress (locked)
  without guessing from timestamps.
* Objects are made read-only (0o444): a hard link into a trail or a loop
  mount must never be able to change the object behind the store's back.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from pvinit import durable
from pvinit.errors import (
    BadInputError,
    IntegrityError,
    NoSpaceError,
    NotFoundError,
    ObjectNotFoundError,
)
from pvinit.objects import disk_fsck
from pvinit.objects.ids import check_object_id
from pvinit.objects.store import (
    FsckProblem,
    FsckReport,
    GcReport,
    ObjectStore,
    open_source_file,
)
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import BinaryIO

#: Bytes per read while ingesting: big enough that per-call overhead vanishes
#: next to hashing, small enough to stay in L2/L3 between read, hash and write.
INGEST_CHUNK = 2 << 20
#: Bytes per read while re-hashing (verify, fsck).
VERIFY_CHUNK = 1 << 20

_FANOUT_RE = disk_fsck.FANOUT_RE
_REST_RE = disk_fsck.REST_RE
_OBJECT_MODE = 0o444
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _write_all(fd: int, data: memoryview) -> None:
    """os.write until every byte is written (a regular file may take fewer)."""
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _hash_fd(fd: int, chunk: int = VERIFY_CHUNK) -> str:
    """SHA256 of what ``fd`` reads from its current offset to EOF."""
    import hashlib  # OpenSSL (~4 MB): loaded when an object is hashed, not at boot

    digest = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    while True:
        count = os.readv(fd, [buffer])
        if not count:
            return digest.hexdigest()
        digest.update(view[:count])


def _read_into(stream: BinaryIO, buffer: bytearray, limit: int) -> int:
    """Fill up to ``limit`` bytes of ``buffer`` from ``stream``; 0 at EOF.

    Uses ``readinto`` when the stream has it (files, sockets, BytesIO), so the
    hot loop allocates nothing; falls back to ``read`` for minimal streams.
    """
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        count = readinto(memoryview(buffer)[:limit])
        return int(count or 0)
    data = stream.read(limit)
    buffer[: len(data)] = data
    return len(data)


class DiskObjectStore(ObjectStore):
    """Objects as read-only files under ``root``; see the module docstring for why."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            what = "is not a directory" if self.root.exists() else "does not exist"
            raise NotFoundError(
                f"object store {what}",
                where=str(self.root),
                hint="create it with DiskObjectStore.create() (pvstate init)",
            )
        self.tmp_dir = self.root / disk_fsck.TMP_DIR
        self.quarantine_dir = self.root / disk_fsck.QUARANTINE_DIR

    @classmethod
    def create(cls, root: str | os.PathLike[str]) -> DiskObjectStore:
        """Make (durably) the store directory and its ``tmp/``; an existing store is kept."""
        durable.makedirs(Path(root) / disk_fsck.TMP_DIR)
        return cls(root)

    def __repr__(self) -> str:
        return f"DiskObjectStore({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------

    def _object_path(self, object_id: str) -> Path:
        """Where ``object_id`` lives; the id is validated before any path is built."""
        check_object_id(object_id)
        return self.root / object_id[:2] / object_id[2:]

    def path(self, object_id: str) -> Path:
        """The file of a present object (for hard links into trails and loop mounts)."""
        target = self._object_path(object_id)
        if not self._is_object_file(target):
            raise ObjectNotFoundError("object not in store", where=object_id)
        return target

    @staticmethod
    def _is_object_file(target: Path) -> bool:
        try:
            return stat.S_ISREG(os.lstat(target).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    # -- adding --------------------------------------------------------------

    def add_stream(self, stream: BinaryIO, *, expected_id: str | None = None,
                   max_size: int | None = None) -> str:
        if expected_id is not None:
            check_object_id(expected_id, where="expected id")
        return self._ingest(stream, expected_id=expected_id, max_size=max_size)

    def add_file(self, path: str | Path, *, expected_id: str | None = None,
                 max_size: int | None = None) -> str:
        """Add a file's content; an unbuffered read avoids one copy of every byte."""
        if expected_id is not None:
            check_object_id(expected_id, where="expected id")
        with open_source_file(path, buffering=0) as handle:
            with contextlib.suppress(OSError):
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            return self._ingest(handle, expected_id=expected_id, max_size=max_size)

    def _ingest(self, stream: BinaryIO, *, expected_id: str | None,
                max_size: int | None) -> str:
        """Copy ``stream`` to a locked temp file while hashing, then publish it."""
        if max_size is not None and max_size < 0:
            raise BadInputError(f"max_size must be >= 0, not {max_size}", where="max_size")
        if not self.tmp_dir.is_dir():
            durable.makedirs(self.tmp_dir)
        tmp = self.tmp_dir / f"{os.urandom(8).hex()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _OBJECT_MODE)
        except OSError as error:
            self._raise_if_no_space(error, "cannot create a temp file")
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            object_id = self._copy_hashing(stream, fd, expected_id=expected_id,
                                           max_size=max_size)
            final = self.root / object_id[:2] / object_id[2:]
            if self._is_object_file(final):
                self._drop_temp(tmp)
                return object_id
            os.fchmod(fd, _OBJECT_MODE)
            durable.point("object.write")
            os.fsync(fd)
            self._publish(tmp, final)
        except durable.SimulatedCrash:
            # A power cut leaves the temp file where it was (fsck's job);
            # closing the descriptor below drops the lock as death would.
            raise
        except OSError as error:
            self._drop_temp(tmp)
            self._raise_if_no_space(error, "cannot store the object")
            raise
        except BaseException:
            self._drop_temp(tmp)
            raise
        finally:
            os.close(fd)
        return object_id

    @staticmethod
    def _copy_hashing(stream: BinaryIO, fd: int, *, expected_id: str | None,
                      max_size: int | None) -> str:
        """Write ``stream`` to ``fd`` and return its SHA256; checks size and expected id."""
        import hashlib

        digest = hashlib.sha256()
        buffer = bytearray(INGEST_CHUNK)
        view = memoryview(buffer)
        total = 0
        while True:
            limit = INGEST_CHUNK
            if max_size is not None:
                # read one byte past the cap at most: enough to know it is exceeded
                limit = max(1, min(INGEST_CHUNK, max_size + 1 - total))
            count = _read_into(stream, buffer, limit)
            if not count:
                break
            total += count
            if max_size is not None and total > max_size:
                raise IntegrityError(
                    f"object is larger than the allowed {max_size} bytes",
                    where=expected_id,
                )
            chunk = view[:count]
            digest.update(chunk)
            _write_all(fd, chunk)
        object_id = digest.hexdigest()
        if expected_id is not None and object_id != expected_id:
            raise IntegrityError(
                f"content hashes to {object_id}, not to the expected id", where=expected_id
            )
        return object_id

    def _publish(self, tmp: Path, final: Path) -> None:
        """Link the synced temp file into place; an existing object wins (same bytes)."""
        fanout = final.parent
        try:
            fanout.mkdir()
        except FileExistsError:
            if not fanout.is_dir() or fanout.is_symlink():
                raise IntegrityError(
                    "fan-out entry is not a directory", where=str(fanout),
                    hint="run fsck with repair to quarantine it",
                ) from None
        else:
            durable.fsync_dir(self.root)
        durable.point("object.rename")
        with contextlib.suppress(FileExistsError):  # a concurrent writer was first
            os.link(tmp, final)
        durable.fsync_dir(fanout)
        self._drop_temp(tmp)

    @staticmethod
    def _drop_temp(tmp: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()

    def _raise_if_no_space(self, error: OSError, what: str) -> None:
        if error.errno in _NO_SPACE:
            raise NoSpaceError(
                f"{what}: no space left", where=str(self.root), hint="run GC or free space"
            ) from error

    # -- reading -------------------------------------------------------------

    def contains(self, object_id: str) -> bool:
        return self._is_object_file(self._object_path(object_id))

    def open(self, object_id: str) -> BinaryIO:
        fd = self._open_object(object_id)
        return os.fdopen(fd, "rb")

    def _open_object(self, object_id: str) -> int:
        """An O_RDONLY descriptor of a present object; never follows a symlink out."""
        target = self._object_path(object_id)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError("object not in store", where=object_id) from None
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raise ObjectNotFoundError("object not in store", where=object_id) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ObjectNotFoundError("object not in store", where=object_id)
        return fd

    def size(self, object_id: str) -> int:
        target = self._object_path(object_id)
        try:
            info = os.lstat(target)
        except (FileNotFoundError, NotADirectoryError):
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            raise ObjectNotFoundError("object not in store", where=object_id)
        return info.st_size

    def ids(self) -> Iterator[str]:
        for fanout in self._fanout_dirs():
            with os.scandir(fanout) as entries:
                for entry in entries:
                    if _REST_RE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                        yield fanout.name + entry.name

    def _fanout_dirs(self) -> list[Path]:
        with os.scandir(self.root) as entries:
            return sorted(
                Path(entry.path) for entry in entries
                if _FANOUT_RE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
            )

    def verify(self, object_id: str) -> bool:
        fd = self._open_object(object_id)
        try:
            return _hash_fd(fd) == object_id
        finally:
            os.close(fd)

    # -- removing ------------------------------------------------------------

    def remove(self, object_id: str) -> int:
        freed = self.size(object_id)
        target = self._object_path(object_id)
        try:
            durable.remove_file(target, name="object")
        except FileNotFoundError:
            raise ObjectNotFoundError("object not in store", where=object_id) from None
        return freed

    def gc(self, keep: Iterable[str]) -> GcReport:
        """Like :meth:`ObjectStore.gc`, but one fsync per fan-out directory, not per object."""
        keep_set = self._checked_keep(keep)
        removed: list[str] = []
        reclaimed = 0
        kept = 0
        touched: set[Path] = set()
        for object_id in list(self.ids()):
            if object_id in keep_set:
                kept += 1
                continue
            target = self.root / object_id[:2] / object_id[2:]
            try:
                size = os.lstat(target).st_size
                durable.point("object.unlink")
                target.unlink()
            except FileNotFoundError:
                continue
            touched.add(target.parent)
            reclaimed += size
            removed.append(object_id)
        for directory in sorted(touched):
            durable.fsync_dir(directory)
        return GcReport(removed=tuple(sorted(removed)), reclaimed_bytes=reclaimed, kept=kept)

    # -- fsck ----------------------------------------------------------------

    def fsck(self, *, repair: bool = False) -> FsckReport:
        """Re-hash every object, find stray and leftover temp files; repair quarantines.

        Corrupt objects and stray entries move (durably) to
        ``<root>/quarantine/<n>/<their relative path>`` so nothing is lost to
        a mistaken diagnosis; temp files of dead writers are deleted (see
        :mod:`pvinit.objects.disk_fsck`).
        """
        checked = 0
        problems: list[FsckProblem] = []
        for found in disk_fsck.walk(self.root):
            if found.object_id is not None:
                checked += 1
                if not self._hashes_to(found.path, found.object_id):
                    problems.append(FsckProblem(
                        "corrupt", str(found.path), "content does not hash to its name"))
            elif found.problem is not None:
                problems.append(found.problem)
        problems.extend(disk_fsck.stale_temps(self.tmp_dir))
        repaired = disk_fsck.repair(self.root, problems) if repair and problems else ()
        return FsckReport(checked=checked, problems=tuple(problems), repaired=repaired)

    @staticmethod
    def _hashes_to(target: Path, object_id: str) -> bool:
        try:
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            return _hash_fd(fd) == object_id
        finally:
            os.close(fd)

"""Watching inbox directories for bundles: inotify when it works, a slow scan always.

The update worker thread (:class:`pvinit.supervisor.worker.UpdateWorker`)
watches ``<storage>/inbox`` and every configured ``inbox_paths`` directory
(a USB stick's mount point) with inotify (:mod:`pvinit.supervisor.inotify`)
for ``IN_CLOSE_WRITE`` and ``IN_MOVED_TO``.  When inotify cannot be set up
(no kernel support, the per-user instance limit reached) the worker falls
back to a one-second scan.

When is a file complete?  A file named by a close-after-write or a
rename-into event is; any other ``*.pvb`` (found by the fallback scan, which
catches what inotify misses: a queue overflow, a stick mounted over a
watched directory) only once two scans :data:`SETTLE` seconds apart saw the
same size, mtime and inode (:func:`settled`, clock-free: a device without an
RTC cannot compare mtimes with "now").  This keeps a half-copied bundle from
being judged and moved to ``failed/``.

A mount over a watched directory hides the watched inode, so each wait also
watches ``/proc/self/mountinfo`` (it turns exceptional on any mount change)
and re-adds a watch whose directory changed identity.
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from pvinit.record import record
from pvinit.supervisor.inotify import (
    IN_CLOSE_WRITE,
    IN_IGNORED,
    IN_MOVED_TO,
    IN_ONLYDIR,
    Inotify,
)
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import BinaryIO

Log = Callable[[str], None]
SETTLE = 2.0
"""Seconds between two scans that must agree before an unannounced file is taken."""
FALLBACK_SCAN = 30.0
"""Seconds between scans when inotify works (it is a safety net, not the mechanism)."""
POLL_SCAN = 1.0
"""Seconds between scans when inotify is not available."""
SUFFIX = ".pvb"
_MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR


@record(frozen=True)
class FileId:
    """What must not change between two scans for a file to count as complete."""

    size: int
    mtime_ns: int
    inode: int


def list_bundles(directory: Path) -> dict[Path, FileId]:
    """Regular ``*.pvb`` files in ``directory`` (dot files are someone's temp files)."""
    found: dict[Path, FileId] = {}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(SUFFIX):
            continue
        with contextlib.suppress(OSError):
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                found[Path(entry.path)] = FileId(info.st_size, info.st_mtime_ns, info.st_ino)
    return found


def settled(now: Mapping[Path, FileId], before: Mapping[Path, FileId],
            announced: Iterable[Path]) -> list[Path]:
    """Files ready to be judged: announced by inotify, or unchanged since the last scan (pure)."""
    told = set(announced)
    return sorted(p for p, ident in now.items() if p in told or before.get(p) == ident)


def directory_id(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


class InboxWatcher:
    """Blocks until a bundle may have arrived, a timeout, or :meth:`wake`."""

    def __init__(self, directories: Iterable[Path], *, log: Log) -> None:
        self.directories = list(directories)
        self.log = log
        self.announced: set[Path] = set()
        self.rescan = True
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()  # wake() comes from another thread than close()
        self._closed = False
        self._inotify: Inotify | None = None
        self._watches: dict[Path, tuple[tuple[int, int], int]] = {}
        self._mountinfo: BinaryIO | None = None
        self._setup()

    @property
    def inotify(self) -> bool:
        return self._inotify is not None

    def _setup(self) -> None:
        try:
            self._inotify = Inotify()
        except OSError as error:
            self.log(f"inbox: inotify unavailable ({error}); scanning every {POLL_SCAN:g}s")
            return
        with contextlib.suppress(OSError):
            self._mountinfo = open("/proc/self/mountinfo", "rb")  # noqa: SIM115 - kept open
        self.refresh()

    def _take_events(self) -> None:
        assert self._inotify is not None
        for event in self._inotify.read_events():
            directory = next((d for d, (_, wd) in self._watches.items() if wd == event.wd), None)
            if event.mask & IN_IGNORED:  # deleted or unmounted: the next refresh() re-adds it
                if directory is not None:
                    del self._watches[directory]
            elif directory is not None and event.name:
                self.announced.add(directory / event.name)
            self.rescan = True  # IN_Q_OVERFLOW included: events were lost, look for yourself

    def refresh(self) -> None:
        """(Re-)watch each directory whose identity changed (created, mounted, unmounted)."""
        if self._inotify is None:
            return
        for directory in self.directories:
            ident = directory_id(directory)
            old = self._watches.get(directory)
            if old is not None and old[0] == ident:
                continue
            if old is not None:
                with contextlib.suppress(OSError):  # already gone with its directory
                    self._inotify.rm_watch(old[1])
                del self._watches[directory]
            if ident is None:
                continue
            try:
                wd = self._inotify.add_watch(directory, _MASK)
            except OSError as error:
                self.log(f"inbox: cannot watch {directory} ({error.strerror}); "
                         "it is scanned instead")
                continue
            if old is not None:  # a technician's stick: say it was seen
                self.log(f"inbox: {directory} is another directory now (a mount); watching it")
            self._watches[directory] = (ident, wd)
            self.rescan = True

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds; return early on an event, a mount change or a wake."""
        if self._inotify is None:
            timeout = min(timeout, POLL_SCAN)
        reads = [self._wake_r] + ([self._inotify.fileno()] if self._inotify is not None else [])
        errs = [self._mountinfo] if self._mountinfo is not None else []
        try:
            readable, _, exceptional = select.select(reads, [], errs, max(timeout, 0.0))
        except InterruptedError:
            return
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        if self._inotify is not None and self._inotify.fileno() in readable:
            self._take_events()
        if exceptional and self._mountinfo is not None:
            self._mountinfo.seek(0)
            self._mountinfo.read()  # re-arm: mountinfo stays exceptional until read again
            self.refresh()
            self.rescan = True
        if self._inotify is None:
            self.rescan = True

    def wake(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            if not self._closed:
                os.write(self._wake_w, b"w")

    def close(self) -> None:
        if self._inotify is not None:
            with contextlib.suppress(OSError):
                self._inotify.close()
            self._inotify = None
        if self._mountinfo is not None:
            self._mountinfo.close()
            self._mountinfo = None
        with self._lock:
            self._closed = True
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)


def writable(directory: Path) -> bool:
    """Whether handled bundles can be moved to ``done/``/``failed/`` beside them."""
    return os.access(directory, os.W_OK)

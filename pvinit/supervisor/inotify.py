"""inotify(7) for the inbox watcher: three libc calls and the event layout.

Not pyinotify, which issue 5 first named: importing it costs the idle
supervisor 1.7 MiB (``logging``, ``asyncore``, ``ctypes.util`` with
``shutil``/``tempfile``, ``datetime``), a tenth of pvinit's whole memory
budget, for the one thing used here -- a descriptor that turns readable when
a file is closed after writing or renamed into a directory.  It also imports
``asyncore``, which Python 3.12 removed, and has not been released since
2015.  See ``docs/decisions/inotify.md``.

:func:`parse_events` is pure (bytes in, events out); :class:`Inotify` is the
descriptor, with its calls behind :class:`pvinit.pid1.syscalls.Libc`, the
seam tests replace to make them fail.
"""

from __future__ import annotations

import os
import struct

from pvinit.pid1.syscalls import Libc
from pvinit.record import record

# <sys/inotify.h>
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
"""Events were lost (the queue was full); always delivered, never asked for."""
IN_IGNORED = 0x00008000
"""The watch is gone: its directory was deleted or its file system unmounted."""
IN_ONLYDIR = 0x01000000

_HEADER = struct.Struct("=iIII")  # struct inotify_event: wd, mask, cookie, len; then name[len]
_READ_SIZE = 64 * 1024  # many events per read; one event is at most 16 + NAME_MAX + 1 bytes


@record(frozen=True)
class InotifyEvent:
    wd: int
    mask: int
    cookie: int
    name: str
    """The entry's name inside the watched directory; empty for events on the directory itself."""


def parse_events(data: bytes) -> list[InotifyEvent]:
    """The events in one ``read(2)`` of an inotify descriptor.

    The kernel returns whole events only (a buffer too small for the next one
    is ``EINVAL``), so a truncated tail means the bytes did not come from
    inotify; it raises ``ValueError`` rather than inventing an event.
    """
    events: list[InotifyEvent] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            raise ValueError(f"inotify: {len(data) - offset} bytes left, an event header is 16")
        wd, mask, cookie, size = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        if start + size > len(data):
            raise ValueError(f"inotify: event name of {size} bytes runs past the data read")
        name = data[start:start + size].split(b"\0", 1)[0]  # NUL-padded to alignment
        events.append(InotifyEvent(wd=wd, mask=mask, cookie=cookie, name=os.fsdecode(name)))
        offset = start + size
    return events


class Inotify:
    """One non-blocking, close-on-exec inotify descriptor.

    Raises ``OSError`` where the kernel refuses (no inotify, ``EMFILE`` at
    the per-user instance limit), so a caller can fall back to scanning.
    """

    def __init__(self, libc: Libc | None = None) -> None:
        self._libc = libc or Libc()
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        return self._fd

    def add_watch(self, path: str | os.PathLike[str], mask: int) -> int:
        return self._libc.inotify_add_watch(self._fd, path, mask)

    def rm_watch(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self._fd, wd)

    def read_events(self) -> list[InotifyEvent]:
        """Every event queued now; an empty list when none is."""
        events: list[InotifyEvent] = []
        while True:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return events
            if not data:
                return events
            events.extend(parse_events(data))

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

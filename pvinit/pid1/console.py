"""PID 1's log: one line per event on the console and, on a device, the kernel log.

PID 1 cannot rely on anything else to be running, so it writes itself: to
stderr (the console the kernel gave it) and to ``/dev/kmsg`` so the line
survives in ``dmesg`` and in pstore/ramoops after a crash.  In dev mode
``/dev/kmsg`` is the *host's* kernel log, so it is left alone.

Logging never raises and never blocks.  A PID 1 that dies because the
console went away would panic the kernel; one that waits on a slow serial
line (115200 baud is ~11 KiB/s, shared with the supervisor's log and the
kernel's) stops reaping and can miss its watchdog pings.  So PID 1 writes
through a non-blocking file description of its own: ``O_NONBLOCK`` belongs
to the open file description, which fd 2 shares with the supervisor, whose
log must keep its plain blocking writes.  A line the console cannot take
now waits in a backlog that every turn of PID 1's loop retries
(:meth:`Console.flush`), and that shutdown gives a few seconds to drain
(:meth:`Console.drain`).  Past :data:`BACKLOG_BYTES`, lines are dropped and
the next line that fits says how many.
"""

from __future__ import annotations

import os
import select
import stat
import time

from pvinit.pid1 import suppress

PREFIX = "pvinit[1]: "
_KMSG_INFO = b"<6>"
BACKLOG_BYTES = 64 * 1024
"""Console output PID 1 keeps while the console is slower than PID 1's events."""


def own_nonblocking(fd: int) -> int | None:
    """A non-blocking descriptor of PID 1's own on the terminal or pipe ``fd`` is; else None.

    Reopening ``/proc/self/fd/<fd>`` makes a new open file description of the
    same tty or pipe (``O_NOCTTY``: PID 1 is a session leader, and a tty it
    opens would otherwise become its controlling terminal).  A regular file
    cannot block and is left alone; so is anything when ``/proc`` is not
    mounted yet (a device's PID 1 before :func:`pvinit.pid1.mounts.mount_basics`).
    """
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
            return None
        return os.open(
            f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        )
    except OSError:
        return None


class Console:
    """Where PID 1's lines go; ``kmsg_path=None`` keeps them off the kernel log."""

    def __init__(self, kmsg_path: str | None = "/dev/kmsg", fd: int = 2) -> None:
        self._kmsg_fd: int | None = None
        if kmsg_path is not None:
            try:
                self._kmsg_fd = os.open(kmsg_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                self._kmsg_fd = None
        self._fd = fd
        self._own_fd: int | None = None
        self._backlog = bytearray()
        self._dropped = 0
        self.reopen()

    def reopen(self) -> None:
        """Take a non-blocking description of the console when one can be had (again after
        ``/proc`` is mounted); until then lines go through the blocking fd 2."""
        if self._own_fd is None:
            self._own_fd = own_nonblocking(self._fd)

    @property
    def pending(self) -> int:
        """Bytes waiting for the console."""
        return len(self._backlog)

    def log(self, message: str) -> None:
        line = f"{PREFIX}{message}"
        data = (line + "\n").encode("utf-8", "replace")
        notice = b""
        if self._dropped:
            notice = f"{PREFIX}{self._dropped} line(s) dropped: the console was too slow\n".encode()
        if len(self._backlog) + len(notice) + len(data) > BACKLOG_BYTES:
            self._dropped += 1
        else:
            self._backlog += notice + data
            self._dropped = 0
        self.flush()
        if self._kmsg_fd is not None:
            with suppress(OSError):
                # /dev/kmsg takes one record per write(); keep it one line.
                os.write(self._kmsg_fd, _KMSG_INFO + line.replace("\n", " ").encode()[:900])

    def flush(self) -> None:
        """Write what the console takes now; never blocks (without an own fd: blocks, as before)."""
        fd = self._own_fd if self._own_fd is not None else self._fd
        while self._backlog:
            try:
                written = os.write(fd, self._backlog)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the console is gone: nobody will read the rest
                self._backlog.clear()
                return
            except Exception:  # noqa: BLE001 - logging never raises; try on the next turn
                return
            del self._backlog[:written]

    def drain(self, seconds: float) -> None:
        """Give the console up to ``seconds`` to take the backlog (before reboot(2), a freeze)."""
        deadline = time.monotonic() + seconds
        self.flush()
        while self._backlog and self._own_fd is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with suppress(OSError, ValueError):
                select.select([], [self._own_fd], [], left)
            self.flush()

    def close(self) -> None:
        for fd in (self._kmsg_fd, self._own_fd):
            if fd is not None:
                with suppress(OSError):
                    os.close(fd)
        self._kmsg_fd = self._own_fd = None


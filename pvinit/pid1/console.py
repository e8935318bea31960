"""PID 1's log: one line per event on the console and, on a device, the kernel log.

PID 1 cannot rely on anything else to be running, so it writes itself: to
stderr (the console the kernel gave it) and to ``/dev/kmsg`` so the line
survives in ``dmesg`` and in pstore/ramoops after a crash.  In dev mode
``/dev/kmsg`` is the *host's* kernel log, so it is left alone.  Logging
never raises: a PID 1 that dies because the console went away would panic
the kernel.
"""

from __future__ import annotations

import os
import sys

from pvinit.pid1 import suppress

PREFIX = "pvinit[1]: "
_KMSG_INFO = b"<6>"


class Console:
    """Where PID 1's lines go; ``kmsg_path=None`` keeps them off the kernel log."""

    def __init__(self, kmsg_path: str | None = "/dev/kmsg") -> None:
        self._kmsg_fd: int | None = None
        if kmsg_path is not None:
            try:
                self._kmsg_fd = os.open(kmsg_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                self._kmsg_fd = None

    def log(self, message: str) -> None:
        line = f"{PREFIX}{message}"
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001, S110 - a lost console must not kill PID 1
            pass
        if self._kmsg_fd is not None:
            with suppress(OSError):
                # /dev/kmsg takes one record per write(); keep it one line.
                os.write(self._kmsg_fd, _KMSG_INFO + line.replace("\n", " ").encode()[:900])

    def close(self) -> None:
        if self._kmsg_fd is not None:
            with suppress(OSError):
                os.close(self._kmsg_fd)
            self._kmsg_fd = None

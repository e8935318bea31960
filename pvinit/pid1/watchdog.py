"""The hardware watchdog: armed by PID 1 so a hung device resets itself.

Opening ``/dev/watchdog`` arms it; from then on the device resets unless it
is pinged within its timeout.  PID 1 pings from its main loop, so the
watchdog proves the one process that must never hang is still turning.
On an orderly shutdown it is disarmed with the "magic close" (write ``V``,
then close) so a slow unmount is not cut short; a driver built with
``nowayout`` ignores that and still resets, which is the safe side.

Dev mode never opens it: on a developer's machine ``/dev/watchdog`` belongs
to the host, and arming it would reset the host.
"""

from __future__ import annotations

import fcntl
import os
import struct

WDIOC_KEEPALIVE = 0x80045705  # _IOR('W', 5, int)
WDIOC_GETTIMEOUT = 0x80045707  # _IOR('W', 7, int)
DEFAULT_TIMEOUT = 60
"""Assumed when the driver cannot tell its timeout (seconds)."""


def ping_interval(timeout: int) -> float:
    """Ping at half the timeout: one missed tick still leaves a whole half to recover."""
    return max(timeout, 1) / 2.0


class Watchdog:
    """An armed watchdog device; build it with :meth:`open`."""

    def __init__(self, fd: int, timeout: int, path: str) -> None:
        self._fd: int | None = fd
        self.timeout = timeout
        self.path = path
        self.interval = ping_interval(timeout)

    @classmethod
    def open(cls, path: str) -> Watchdog | None:
        """Arm the watchdog at ``path``; None when there is none.

        The descriptor is close-on-exec, so the supervisor and containers
        can never hold it open (and keep the device from resetting).
        """
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        timeout = DEFAULT_TIMEOUT
        try:
            buffer = bytearray(4)
            fcntl.ioctl(fd, WDIOC_GETTIMEOUT, buffer)
            reported = struct.unpack("i", buffer)[0]
            if reported > 0:
                timeout = reported
        except OSError:
            pass  # a driver without GETTIMEOUT: assume the common default
        return cls(fd, timeout, path)

    @property
    def armed(self) -> bool:
        return self._fd is not None

    def keepalive(self) -> None:
        """Ping; any write is a keepalive for drivers without WDIOC_KEEPALIVE."""
        if self._fd is None:
            return
        try:
            fcntl.ioctl(self._fd, WDIOC_KEEPALIVE, bytearray(4))
        except OSError:
            os.write(self._fd, b"\0")

    def disarm(self) -> None:
        """Magic close: write 'V' then close; afterwards the device no longer resets."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.write(fd, b"V")
        finally:
            os.close(fd)

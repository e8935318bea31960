"""Receive sd_notify messages (``READY=1``, ``STATUS=...``) from a container.

Each container gets its own AF_UNIX datagram socket ``notify`` in its
``notify_dir``; the directory is bind-mounted at ``/run/pvinit`` inside the
container and ``NOTIFY_SOCKET=/run/pvinit/notify`` is in its environment, so
any sd_notify sender (systemd's library, or ``pvnotify`` in busybox images)
works unchanged.  One socket per container means the sender is known from
the socket, without trusting credentials across PID namespaces.

The socket is a hostile input: a container may send anything.  Datagrams
over :data:`MAX_DATAGRAM` bytes, not UTF-8, or with no ``KEY=VALUE`` line are
dropped; :meth:`NotifyReceiver.poll` never raises because of what was sent.
"""

from __future__ import annotations

import _socket  # the C type alone: see pvinit.control.server
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from pvinit.containers.spec import NOTIFY_SOCKET_NAME
from pvinit.errors import BadInputError
from pvinit.record import field, record

#: Largest datagram accepted (systemd accepts more; readiness needs a few bytes).
MAX_DATAGRAM = 4096
#: Most datagrams read by one poll(), so a flooding container cannot starve the loop.
MAX_PER_POLL = 64
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@record(frozen=True)
class NotifyMessage:
    """One sd_notify datagram, its assignments by key (the last one wins)."""

    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.fields.get("READY") == "1"

    @property
    def stopping(self) -> bool:
        return self.fields.get("STOPPING") == "1"

    @property
    def watchdog(self) -> bool:
        return self.fields.get("WATCHDOG") == "1"

    @property
    def status(self) -> str | None:
        return self.fields.get("STATUS")

    @classmethod
    def parse(cls, data: bytes) -> NotifyMessage | None:
        """Parse one datagram; None for anything that is not an sd_notify message (pure)."""
        if not data or len(data) > MAX_DATAGRAM or b"\0" in data:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        fields: dict[str, str] = {}
        for line in text.split("\n"):
            key, sep, value = line.partition("=")
            if sep and key and set(key) <= _KEY_CHARS:
                fields[key] = value
        if not fields:
            return None
        return cls(fields=MappingProxyType(fields))

    def to_dict(self) -> dict[str, str]:
        return dict(self.fields)

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> NotifyMessage:
        return cls(fields=MappingProxyType(dict(data)))


class NotifyReceiver:
    """The non-blocking receiving end of one container's notify socket.

    Creating it (re)binds ``<notify_dir>/notify``; a stale socket file from a
    previous boot is replaced.  Use :meth:`fileno` in a select/poll loop and
    call :meth:`poll` when it is readable.
    """

    def __init__(self, notify_dir: Path) -> None:
        self.path = Path(notify_dir) / NOTIFY_SOCKET_NAME
        if len(os.fsencode(self.path)) >= 108:
            raise BadInputError(
                "notify socket path is longer than AF_UNIX allows", where=str(self.path)
            )
        Path(notify_dir).mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
        try:
            self._sock.bind(str(self.path))
            # The container's root may drop privileges: any local user of it may notify.
            self.path.chmod(0o666)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def poll(self) -> list[NotifyMessage]:
        """Every well-formed message waiting now (at most MAX_PER_POLL); never blocks."""
        messages: list[NotifyMessage] = []
        for _ in range(MAX_PER_POLL):
            try:
                data, _, flags, _ = self._sock.recvmsg(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if flags & _socket.MSG_TRUNC:
                continue
            message = NotifyMessage.parse(data)
            if message is not None:
                messages.append(message)
        return messages

    def close(self) -> None:
        """Close the socket and remove its file."""
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> NotifyReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

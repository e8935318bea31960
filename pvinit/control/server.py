"""The control socket: a non-blocking HTTP/1.1 server driven by the supervisor's select loop.

No thread and no :mod:`http.server`: the supervisor's loop asks
:meth:`ControlServer.read_fds` / :meth:`write_fds` for what to watch, calls
:meth:`ControlServer.handle` with what ``select`` returned, and
:meth:`ControlServer.tick` on every turn so deadlines are enforced from the
loop's own timers (:meth:`next_deadline`).  Nothing here raises into the
loop: a handler bug answers 500 and is logged.

One request per connection (``Connection: close``): a request head must be
complete within ``request_timeout`` seconds (else 408), a body must keep
arriving (no gap longer than ``request_timeout``) and, all told, at no less
than :data:`MIN_BODY_RATE` (so a client dripping a byte now and then cannot
hold one of the :data:`MAX_CONNECTIONS` for ever), heads are capped at 16
KiB, JSON bodies at 64 KiB, bundle uploads at 256 MiB (streamed to a file
in ``<storage>/inbox/.upload-*``, never held in memory).  Callers are
identified with ``SO_PEERCRED``; the ``allowed`` predicate decides (403).

When the socket sits in its own ``ctl/`` directory (the supervisor's layout,
:mod:`pvinit.control.paths`), :meth:`ControlServer.open` also points the
well-known ``../ctl.sock`` at it with a relative symlink (``link``).  A
``mgmt`` container reaches the same socket through a bind of that directory;
its root is root on the host (no user namespace), so its peer credentials
pass the default ``allowed`` rule; SO_PEERCRED reports its pid as seen from
the supervisor's PID namespace.
"""

from __future__ import annotations

# The C socket type, not the socket module: socket.py wraps it and turns every
# AF_/SOCK_/MSG_/AI_ constant into IntEnum members, ~2 ms of the boot and
# ~0.13 MiB the supervisor would hold for good.  accept() is the wrapper's; the
# C type's _accept() (accept4 with SOCK_CLOEXEC) is what it calls.
import _socket
import contextlib
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

from pvinit.control.http import (
    MAX_HEAD,
    MAX_REQUEST_LINE,
    HttpError,
    RequestHead,
    Response,
    check_request_line,
    chunk,
    parse_head,
)
from pvinit.control.paths import SOCKET_DIR
from pvinit.record import record
from pvinit.typecheck import Protocol

Log = Callable[[str], None]
REQUEST_TIMEOUT = 10.0
MAX_JSON_BODY = 64 * 1024
MAX_UPLOAD = 256 * 1024 * 1024
MAX_CONNECTIONS = 16
MIN_BODY_RATE = 64 * 1024
"""Bytes per second a body must average, after a grace of ``request_timeout`` (408 if not)."""
STREAM_INTERVAL = 0.25
DRAIN_TIME = 1.0
UPLOAD_PREFIX = ".upload-"


@record(frozen=True)
class Peer:
    """Who is on the other end of the socket (``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int


@record(frozen=True)
class Request:
    head: RequestHead
    peer: Peer
    body: bytes = b""
    upload: Path | None = None
    """The body, when it was streamed to a file (bundle uploads)."""


class Stream(Protocol):
    """A response body produced over time (``logs?follow=1``)."""

    def poll(self) -> bytes | None:
        """New bytes (maybe empty); None when the stream is over."""

    def close(self) -> None: ...


@record(frozen=True)
class StreamingResponse:
    response: Response
    stream: Stream


Reply = Response | StreamingResponse


class Handler(Protocol):
    def body_limit(self, head: RequestHead) -> tuple[int, bool]:
        """Largest body accepted for ``head`` and whether it goes to a file."""

    def __call__(self, request: Request) -> Reply: ...


def peer_credentials(sock: _socket.socket) -> Peer:
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


class Connection:
    """One client: reading its request, then writing (or streaming) the reply."""

    def __init__(self, sock: _socket.socket, peer: Peer, now: float, timeout: float) -> None:
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        self.deadline = now + timeout
        self.body_by = float("inf")
        """When the whole body must be in (:data:`MIN_BODY_RATE`), once its length is known."""
        self.state = "head"  # head | body | write | stream | drain
        self.buf = bytearray()
        self.line_checked = False
        self.head: RequestHead | None = None
        self.body = bytearray()
        self.remaining = 0
        self.upload: Path | None = None
        self.upload_fd: int | None = None
        self.out = bytearray()
        self.stream: Stream | None = None
        self.next_poll = 0.0

    def fileno(self) -> int:
        return self.sock.fileno()


class ControlServer:
    def __init__(self, path: Path, handler: Handler, *, upload_dir: Path, log: Log,
                 allowed: Callable[[Peer], bool] = lambda peer: peer.uid == 0,
                 group: int | None = None, request_timeout: float = REQUEST_TIMEOUT,
                 link: Path | None = None) -> None:
        self.path = path
        if link is None and path.parent.name == SOCKET_DIR:
            link = path.parent.parent / path.name
        self.link = link
        self.handler = handler
        self.upload_dir = upload_dir
        self.log = log
        self.allowed = allowed
        self.group = group
        self.request_timeout = request_timeout
        self.listener: _socket.socket | None = None
        self.connections: dict[int, Connection] = {}
        self._uploads = 0

    # -- life ----------------------------------------------------------------------
    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            listener.bind(str(self.path))
            self.path.chmod(0o660)
            if self.group is not None:
                os.chown(self.path, 0, self.group)
            listener.listen(MAX_CONNECTIONS)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self.listener = listener
        if self.link is not None:
            self._make_link(self.link)

    def _make_link(self, link: Path) -> None:
        """Point ``link`` at the socket (replacing a stale socket or link); failures are logged."""
        try:
            target = os.path.relpath(self.path, link.parent)
            temp = link.with_name(f".{link.name}.link")
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            temp.symlink_to(target)
            os.replace(temp, link)
        except OSError as error:
            self.log(f"control: cannot link {link} to the socket: {error}")

    def close(self) -> None:
        for conn in list(self.connections.values()):
            self._drop(conn)
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            with contextlib.suppress(OSError):
                self.path.unlink()
            if self.link is not None and self.link.is_symlink():
                with contextlib.suppress(OSError):
                    self.link.unlink()

    # -- what the loop watches ---------------------------------------------------------
    def read_fds(self) -> list[int]:
        fds = [c.fileno() for c in self.connections.values() if c.state != "write"]
        return ([self.listener.fileno()] if self.listener is not None else []) + fds

    def write_fds(self) -> list[int]:
        return [c.fileno() for c in self.connections.values() if c.out]

    def next_deadline(self) -> float | None:
        times = [c.next_poll if c.state == "stream" else c.deadline
                 for c in self.connections.values()]
        return min(times) if times else None

    def handle(self, readable: list[int], writable: list[int]) -> None:
        """Serve what ``select`` found ready (fds that are not ours are ignored)."""
        if self.listener is not None and self.listener.fileno() in readable:
            self._accept()
        for fd in readable:
            conn = self.connections.get(fd)
            if conn is not None:
                self._guard(conn, self._on_readable)
        for fd in writable:
            conn = self.connections.get(fd)
            if conn is not None:
                self._guard(conn, self._flush)

    def tick(self, now: float | None = None) -> None:
        """Enforce deadlines and feed streams; call every turn of the loop."""
        moment = time.monotonic() if now is None else now
        for conn in list(self.connections.values()):
            if conn.state == "stream":
                if moment >= conn.next_poll:
                    self._guard(conn, self._feed)
            elif moment >= conn.deadline:
                if conn.state == "body" and moment >= conn.body_by:
                    self._reply(conn, HttpError(
                        408, "RequestTimeout",
                        f"request body arriving slower than {MIN_BODY_RATE // 1024} KiB/s"
                    ).response())
                elif conn.state in ("head", "body"):
                    self._reply(conn, HttpError(
                        408, "RequestTimeout",
                        f"request not complete after {self.request_timeout:g}s").response())
                else:
                    self._drop(conn)

    # -- internals ------------------------------------------------------------------
    def _guard(self, conn: Connection, step: Callable[[Connection], None]) -> None:
        try:
            step(conn)
        except HttpError as error:
            self._reply(conn, error.response())
        except OSError:
            self._drop(conn)
        except Exception as error:  # noqa: BLE001 - a bug here must never stop the supervisor
            self.log(f"control: internal error: {type(error).__name__}: {error}")
            self._reply(conn, HttpError(500, "InternalError", str(error)).response())

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                fd, _ = self.listener._accept()  # type: ignore[attr-defined]  # not in typeshed
                sock = _socket.socket(fileno=fd)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self.log(f"control: accept failed: {error}")
                return
            sock.setblocking(False)
            try:
                peer = peer_credentials(sock)
            except OSError:
                sock.close()
                continue
            conn = Connection(sock, peer, time.monotonic(), self.request_timeout)
            self.connections[conn.fileno()] = conn
            if len(self.connections) > MAX_CONNECTIONS:
                self._reply(conn, HttpError(503, "Busy", "too many connections",
                                            {"Retry-After": "1"}).response())
            elif not self.allowed(peer):
                self._reply(conn, HttpError(
                    403, "Forbidden",
                    f"uid {peer.uid} may not use the control socket (root or its group only)",
                ).response())

    def _on_readable(self, conn: Connection) -> None:
        data = conn.sock.recv(1 << 16)
        if conn.state == "drain":
            if not data:
                self._drop(conn)
            return
        if not data:
            self._drop(conn)  # the client went away (also ends a follow stream)
            return
        if conn.state == "stream":
            return  # nothing is expected from a follower; ignore
        if conn.state == "head":
            self._read_head(conn, data)
        elif conn.state == "body":
            self._read_body(conn, bytes(data))

    def _read_head(self, conn: Connection, data: bytes) -> None:
        conn.buf += data
        if not conn.line_checked:
            end = conn.buf.find(b"\n")
            if end >= 0:
                check_request_line(bytes(conn.buf[: end + 1]))
                conn.line_checked = True
            elif len(conn.buf) > MAX_REQUEST_LINE:
                raise HttpError(414, "UriTooLong",
                                f"request line longer than {MAX_REQUEST_LINE} bytes")
        end, sep = conn.buf.find(b"\r\n\r\n"), 4
        if end < 0:
            end, sep = conn.buf.find(b"\n\n"), 2
        if end < 0:
            if len(conn.buf) > MAX_HEAD:
                raise HttpError(431, "HeadersTooLarge", f"request head over {MAX_HEAD} bytes")
            return
        if end > MAX_HEAD:
            raise HttpError(431, "HeadersTooLarge", f"request head over {MAX_HEAD} bytes")
        head = parse_head(bytes(conn.buf[:end]))
        rest = bytes(conn.buf[end + sep:])
        conn.buf = bytearray()
        conn.head = head
        length = head.content_length
        if length is None:
            if head.method in ("POST", "PUT", "PATCH"):
                raise HttpError(411, "LengthRequired", f"{head.method} needs a Content-Length")
            length = 0
        limit, to_file = self.handler.body_limit(head)
        if length > limit:
            raise HttpError(413, "TooLarge",
                            f"body of {length} bytes is over the {limit} bytes allowed here")
        conn.remaining = length
        if to_file and length:
            self._uploads += 1
            self.upload_dir.mkdir(parents=True, exist_ok=True)
            conn.upload = self.upload_dir / f"{UPLOAD_PREFIX}{os.getpid()}-{self._uploads}"
            conn.upload_fd = os.open(conn.upload, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                     | os.O_CLOEXEC, 0o600)
        conn.state = "body"
        conn.body_by = time.monotonic() + self.request_timeout + length / MIN_BODY_RATE
        self._read_body(conn, rest)

    def _read_body(self, conn: Connection, data: bytes) -> None:
        data = data[: conn.remaining]  # bytes past the body are ignored (no pipelining)
        if data:
            # Progress: not idle -- but never past the time the body as a whole may take.
            conn.deadline = min(time.monotonic() + self.request_timeout, conn.body_by)
        if conn.upload_fd is not None:
            view = memoryview(data)
            while view:
                view = view[os.write(conn.upload_fd, view):]
        else:
            conn.body += data
        conn.remaining -= len(data)
        if conn.remaining == 0:
            self._dispatch(conn)

    def _dispatch(self, conn: Connection) -> None:
        assert conn.head is not None
        if conn.upload_fd is not None:
            os.close(conn.upload_fd)
            conn.upload_fd = None
        request = Request(conn.head, conn.peer, bytes(conn.body), conn.upload)
        conn.body = bytearray()
        try:
            reply = self.handler(request)
        finally:
            self._remove_upload(conn)
        if isinstance(reply, StreamingResponse):
            conn.state, conn.stream = "stream", reply.stream
            conn.out += reply.response.head_bytes(chunked=True)
            conn.next_poll = 0.0
            self._feed(conn)
            return
        self._reply(conn, reply)

    def _feed(self, conn: Connection) -> None:
        assert conn.stream is not None
        data = conn.stream.poll()
        conn.next_poll = time.monotonic() + STREAM_INTERVAL
        if data is None:
            conn.out += chunk(b"")
            conn.stream.close()
            conn.stream = None
            conn.state = "write"
        elif data and len(conn.out) < (1 << 20):  # a reader that stalls gets no more
            conn.out += chunk(data)
        self._flush(conn)

    def _reply(self, conn: Connection, response: Response) -> None:
        if conn.stream is not None:
            self._drop(conn)
            return
        head_only = conn.head is not None and conn.head.method == "HEAD"
        conn.out = bytearray(response.to_bytes(head_only=head_only))
        conn.state = "write"
        conn.deadline = time.monotonic() + self.request_timeout
        self._remove_upload(conn)
        self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                return
            del conn.out[:sent]
        if conn.state == "write":
            with contextlib.suppress(OSError):
                conn.sock.shutdown(_socket.SHUT_WR)
            conn.state = "drain"  # read what the client still sends, so it sees our reply
            conn.deadline = time.monotonic() + DRAIN_TIME

    def _remove_upload(self, conn: Connection) -> None:
        if conn.upload_fd is not None:
            with contextlib.suppress(OSError):
                os.close(conn.upload_fd)
            conn.upload_fd = None
        if conn.upload is not None:
            with contextlib.suppress(OSError):
                conn.upload.unlink()  # gone already when the handler took it
            conn.upload = None

    def _drop(self, conn: Connection) -> None:
        self.connections.pop(conn.fileno(), None)
        self._remove_upload(conn)
        if conn.stream is not None:
            with contextlib.suppress(Exception):
                conn.stream.close()
            conn.stream = None
        conn.sock.close()

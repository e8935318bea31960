"""The control API client (what ``pvctl`` uses): HTTP over the Unix socket, errors as PvError.

The client side may use :mod:`http.client`: it runs in ``pvctl``, not in
the supervisor.  An error answer becomes the PvError of its kind so the
CLI's exit codes follow :mod:`pvinit.errors`: refused 9, not found 4,
busy 8, bad input 3, failed 1; a socket that cannot be reached is a
TransportError (12).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pvinit.errors import (
    BadInputError,
    BusyError,
    ConflictError,
    NoSpaceError,
    NotFoundError,
    PvError,
    RefusedError,
    TransportError,
)

DEFAULT_SOCKET = Path("/run/pvinit/ctl.sock")
SOCKET_ENV = "PVCTL_SOCKET"
Progress = Callable[[int, int], None]

_KINDS: dict[str, type[PvError]] = {
    "NotFound": NotFoundError, "Busy": BusyError, "Refused": RefusedError,
    "Forbidden": RefusedError, "Conflict": ConflictError, "NoSpace": NoSpaceError,
}  # fmt: skip


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def error_from(status: int, data: bytes, where: str) -> PvError:
    try:
        body = json.loads(data)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    kind = str(body.get("error", ""))
    message = str(body.get("message", data[:200].decode(errors="replace") or f"HTTP {status}"))
    hint = body.get("hint")
    cls = _KINDS.get(kind)
    if cls is None:
        cls = BadInputError if 400 <= status < 500 else PvError
    del where
    return cls(message, hint=hint if isinstance(hint, str) else None)


class ControlClient:
    def __init__(self, path: Path | None = None, *, timeout: float | None = 60.0) -> None:
        self.path = path or Path(os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)
        self.timeout = timeout

    def _connect(self, timeout: float | None) -> _UnixConnection:
        return _UnixConnection(self.path, timeout)

    def _send(self, method: str, path: str, *, body: bytes | None = None,
              headers: dict[str, str] | None = None,
              timeout: float | None = None) -> http.client.HTTPResponse:
        conn = self._connect(timeout if timeout is not None else self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            return conn.getresponse()
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            raise TransportError(f"cannot talk to the control socket: {error}",
                                 where=str(self.path),
                                 hint="is the device up? pass --socket PATH") from None

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """A JSON request; returns the decoded JSON answer or raises the PvError it carries."""
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if body is None and method == "POST":
            body = b""
        response = self._send(method, path, body=body, headers=headers)
        data = response.read()
        if response.status >= 400:
            raise error_from(response.status, data, path)
        try:
            return json.loads(data)
        except ValueError:
            raise TransportError("the device answered with something that is not JSON",
                                 where=path) from None

    def text(self, path: str) -> bytes:
        response = self._send("GET", path)
        data = response.read()
        if response.status >= 400:
            raise error_from(response.status, data, path)
        return data

    def follow(self, path: str) -> Iterator[bytes]:
        """Bytes of a chunked (followed) answer as they arrive; ends when the device closes."""
        response = self._send("GET", path, timeout=None)
        if response.status >= 400:
            raise error_from(response.status, response.read(), path)
        while True:
            try:
                data = response.read1(65536)
            except (OSError, http.client.HTTPException):
                return
            if not data:
                return
            yield data

    def upload(self, bundle: Path, progress: Progress | None = None) -> Any:
        """Send a bundle file as the body of ``POST /v1/install``, streamed from disk."""
        size = bundle.stat().st_size
        conn = self._connect(self.timeout)
        try:
            conn.putrequest("POST", "/v1/install")
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(size))
            conn.endheaders()
            done = 0
            with open(bundle, "rb") as handle:
                while block := handle.read(1 << 20):
                    conn.send(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, size)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            raise TransportError(f"upload failed: {error}", where=str(self.path)) from None
        if response.status >= 400:
            raise error_from(response.status, data, "/v1/install")
        return json.loads(data)

"""The control server over a real Unix socket, driven by a select loop like the supervisor's.

The handler is the real :class:`ControlApi` over a fake device (a storage
directory and no containers), so routing, error mapping and every malformed
request path run for real; the device tests do the same against real LXC.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pvinit.control.client import ControlClient
from pvinit.control.handlers import ControlApi
from pvinit.control.server import ControlServer
from pvinit.errors import NotFoundError
from pvinit.supervisor.runtime import Unit
from pvinit.supervisor.status import StatusDocument, SupervisorPhase
from pvinit.supervisor.updates import UpdateCoordinator
from pvinit.trails.layout import StorageLayout


@dataclass
class FakeDevice:
    layout: StorageLayout
    revision: int | None = 1
    phase: SupervisorPhase = SupervisorPhase.RUNNING
    updates: UpdateCoordinator | None = None
    stops: list[tuple[bool, str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def log(self, message: str) -> None:
        self.lines.append(message)

    @property
    def units(self) -> list[Unit]:
        return []

    def document(self) -> StatusDocument:
        return StatusDocument(revision=self.revision, phase=self.phase, pid=1, updated=0.0)

    def request_stop(self, *, reboot: bool, why: str) -> None:
        self.stops.append((reboot, why))

    def stop_container(self, unit: Unit) -> None:
        raise AssertionError("no containers here")

    start_container = stop_container

    def request_poweroff(self, why: str) -> None:
        self.stops.append((False, why))


class Loop:
    def __init__(self, server: ControlServer) -> None:
        self.server = server
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            deadline = self.server.next_deadline()
            timeout = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
            r, w, _ = select.select(self.server.read_fds(), self.server.write_fds(), [], timeout)
            self.server.handle(r, w)
            self.server.tick()


@pytest.fixture
def served() -> Iterator[tuple[Path, FakeDevice, ControlServer]]:
    top = Path(tempfile.mkdtemp(prefix="pvctl", dir="/tmp"))
    layout = StorageLayout(top / "s")
    (top / "s").mkdir()
    device = FakeDevice(layout)
    server = ControlServer(top / "ctl.sock", ControlApi(device), upload_dir=top / "s" / "inbox",
                           log=device.log, allowed=lambda peer: True, request_timeout=1.0)
    server.open()
    loop = Loop(server)
    loop.thread.start()
    try:
        yield top / "ctl.sock", device, server
    finally:
        loop.stop.set()
        loop.thread.join(5)
        server.close()


def raw(path: Path, data: bytes, *, wait: float = 5.0, close_write: bool = False) -> bytes:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(wait)
    sock.connect(str(path))
    with contextlib.suppress(OSError):
        sock.sendall(data)
    if close_write:
        sock.shutdown(socket.SHUT_WR)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def body_of(answer: bytes) -> dict[str, object]:
    value = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert isinstance(value, dict)
    return value


MALFORMED = [
    (b"GET /v1/nothing HTTP/1.1\r\n\r\n", 404),
    (b"GET /status HTTP/1.1\r\n\r\n", 404),
    (b"DELETE /v1/status HTTP/1.1\r\n\r\n", 405),
    (b"GET /v1/reboot HTTP/1.1\r\n\r\n", 405),
    (b"POST /v1/reboot HTTP/1.1\r\n\r\n", 411),
    (b"POST /v1/rollback HTTP/1.1\r\nContent-Length: 5\r\nContent-Type: application/json\r\n"
     b"\r\n{bad}", 400),
    (b"POST /v1/rollback HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]", 400),
    (b'POST /v1/rollback HTTP/1.1\r\nContent-Length: 19\r\n\r\n{"revision": "two"}', 400),
    (b"POST /v1/rollback HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"POST /v1/install HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n", 413),
    (b"POST /v1/install HTTP/1.1\r\nContent-Length: 12\r\n\r\nnot a bundle", 400),
    (b"POST /v1/install HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
     b'{"path": "rel"}', 400),
    (b"POST /v1/reboot HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
    (b"POST /v1/reboot HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET /v1/status HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET /v1/" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /v1/status\r\n", 505),
    (b"GET /v1/status HTTP/2.0\r\n\r\n", 505),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    (b"\x00\xff\xfe garbage\n\n", 400),
    (b"GET /v1/status HTTP/1.1\r\nbad header line\r\n\r\n", 400),
    (b"GET /v1/revisions/abc HTTP/1.1\r\n\r\n", 404),
    (b"GET /v1/revisions/7 HTTP/1.1\r\n\r\n", 404),
    (b"GET /v1/revisions/1/diff/2 HTTP/1.1\r\n\r\n", 404),
    (b"GET /v1/logs/nobody HTTP/1.1\r\n\r\n", 404),
    (b"GET /v1/logs/../../etc HTTP/1.1\r\n\r\n", 404),
    (b"GET /v1/install/9 HTTP/1.1\r\n\r\n", 404),
    (b"GET /v1/status?%zz=%ff HTTP/1.1\r\n\r\n", 400),
    (b"POST /v1/containers/x/start HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 404),
]


def test_malformed_requests_get_a_4xx_with_a_json_message_and_the_server_still_answers(
    served: tuple[Path, FakeDevice, ControlServer],
) -> None:
    path, device, server = served
    for request, expected in MALFORMED:
        answer = raw(path, request, close_write=True)
        assert status_of(answer) == expected, (request[:60], answer[:300])
        body = body_of(answer)
        assert body["error"] and body["message"], answer
    assert device.stops == []  # nothing was done
    assert not list((path.parent / "s").glob("inbox/*"))  # no upload left behind
    assert ControlClient(path).call("GET", "/v1/status")["revision"] == 1
    assert len(server.connections) <= 1


def test_a_slow_client_is_dropped_with_408_and_others_are_served_meanwhile(
    served: tuple[Path, FakeDevice, ControlServer],
) -> None:
    path, _, _ = served
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.connect(str(path))
    slow.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")  # never finishes
    assert ControlClient(path).call("GET", "/v1/status")["phase"] == "RUNNING"
    slow.settimeout(10)
    answer = b""
    while chunk := slow.recv(4096):
        answer += chunk
    assert status_of(answer) == 408
    slow.close()


def test_a_body_dripped_slower_than_the_minimum_rate_is_cut_with_408(
    served: tuple[Path, FakeDevice, ControlServer],
) -> None:
    """A byte every 0.3 s never leaves a 1 s gap, yet 60 KB at that pace would take hours."""
    path, device, server = served
    drip = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    drip.connect(str(path))
    drip.sendall(b"POST /v1/rollback HTTP/1.1\r\nContent-Length: 60000\r\n\r\n")
    drip.settimeout(0.3)
    answer = b""
    for _ in range(40):  # 12 s of dripping at most; the cap is 1 s + 60000 / 64 KiB/s
        with contextlib.suppress(OSError):
            drip.sendall(b" ")
        try:
            answer = drip.recv(4096)
        except TimeoutError:
            continue
        break
    drip.close()
    assert status_of(answer) == 408
    assert "slower than 64 KiB/s" in str(body_of(answer)["message"])
    assert device.stops == [] and len(server.connections) <= 1


def test_a_client_that_connects_and_says_nothing_is_dropped(
    served: tuple[Path, FakeDevice, ControlServer],
) -> None:
    path, _, _ = served
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(path))
    silent.settimeout(10)
    assert status_of(silent.recv(4096)) == 408
    silent.close()
    assert ControlClient(path).call("GET", "/v1/revisions") == {"revisions": []}


def test_reboot_is_asked_of_the_loop_and_unknown_revisions_are_not_found(
    served: tuple[Path, FakeDevice, ControlServer],
) -> None:
    path, device, _ = served
    client = ControlClient(path)
    assert client.call("POST", "/v1/reboot")["action"] == "rebooting"
    assert device.stops and device.stops[0][0] is True
    with pytest.raises(NotFoundError):
        client.call("GET", "/v1/revisions/5")


def test_a_forbidden_peer_gets_403(tmp_path: Path) -> None:
    top = Path(tempfile.mkdtemp(prefix="pvctl", dir="/tmp"))
    device = FakeDevice(StorageLayout(top))
    server = ControlServer(top / "ctl.sock", ControlApi(device), upload_dir=top / "inbox",
                           log=device.log, allowed=lambda peer: False)
    server.open()
    loop = Loop(server)
    loop.thread.start()
    try:
        answer = raw(top / "ctl.sock", b"GET /v1/status HTTP/1.1\r\n\r\n")
        assert status_of(answer) == 403
        assert "may not use" in str(body_of(answer)["message"])
    finally:
        loop.stop.set()
        loop.thread.join(5)
        server.close()

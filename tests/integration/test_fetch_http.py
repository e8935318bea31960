"""Fetching over real HTTP: nginx on loopback for a static remote, tiny socket servers for liars.

nginx (Debian's ``nginx-light``) serves a remote layout written by hand
(``tests/unit/test_transport_support.py``); its access log shows which
requests the device made (a delta, a fallback, a Range resume answered
206).  Misbehaving servers that nginx will not imitate (endless bodies,
short reads, ignored ranges, silence) are small Python socket servers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pvinit.errors import IntegrityError, NotFoundError, TransportError
from pvinit.objects.disk import DiskObjectStore
from pvinit.remote import layout
from pvinit.signing.envelope import Envelope
from pvinit.transport.fetcher import HttpFetcher, RemoteNotFoundError, open_fetcher
from pvinit.transport.remote import RemoteRepository
from pvinit.transport.sources import RemoteSource
from pvinit.transport.wants import ObjectWant
from tests.conftest import need_tool, settled_log_lines
from tests.unit.test_transport_support import RemoteBuilder, blob, frame, sha

STARTUP_LIMIT = 30.0  # a guard against hanging, not a performance claim

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format ranged '$request_method $uri "$http_range" $status $body_bytes_sent';
    access_log {run}/access.log ranged;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {run}/cert.pem;
        ssl_certificate_key {run}/key.pem;
        root {root};
    }}
}}
"""


def write_self_signed(run: Path) -> None:
    """A certificate for 127.0.0.1 that no system trust store knows."""
    import ipaddress
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pvinit test remote")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (run / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (run / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + STARTUP_LIMIT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@dataclass
class Nginx:
    root: Path
    run: Path
    port: int
    tls_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[str]:
        return settled_log_lines(self.run / "access.log")

    def requests_for(self, path: str) -> list[str]:
        return [line for line in self.log_lines() if f" /{path} " in line]


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    binary = need_tool("nginx")
    base = tmp_path_factory.mktemp("nginx")
    root, run = base / "root", base / "run"
    root.mkdir()
    run.mkdir()
    write_self_signed(run)
    for _attempt in range(5):
        port, tls_port = free_port(), free_port()
        conf = run / "nginx.conf"
        conf.write_text(NGINX_CONF.format(run=run, root=root, port=port, tls_port=tls_port))
        process = subprocess.Popen(
            [binary, "-p", str(run), "-e", str(run / "error.log"), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            wait_listening(port, process)
            wait_listening(tls_port, process)
        except RuntimeError:
            process.kill()
            process.wait()
            continue
        try:
            yield Nginx(root=root, run=run, port=port, tls_port=tls_port)
        finally:
            process.terminate()
            process.wait(timeout=STARTUP_LIMIT)
        return
    pytest.fail(f"nginx did not start: {(run / 'error.log').read_text()}")


@pytest.fixture
def remote(nginx: Nginx, request: pytest.FixtureRequest) -> tuple[RemoteBuilder, str]:
    """A remote layout under its own URL prefix, so tests do not see each other's files."""
    prefix = request.node.name.replace("[", "_").replace("]", "_")
    return RemoteBuilder(nginx.root / prefix), f"{nginx.url}/{prefix}"


@pytest.fixture
def store(tmp_path: Path) -> DiskObjectStore:
    return DiskObjectStore.create(tmp_path / "store")


def http_repo(url: str, timeout: float = 10.0) -> RemoteRepository:
    return RemoteRepository(url, HttpFetcher(timeout=timeout))


# -- nginx: the remote layout over HTTP ---------------------------------------------


def test_full_fetch_of_a_published_revision(remote: tuple[RemoteBuilder, str],
                                            store: DiskObjectStore, tmp_path: Path) -> None:
    builder, url = remote
    objects = {"a": blob(1), "b": blob(2, 300 << 10)}
    envelope, state = builder.publish("stable", objects)
    source = RemoteSource(RemoteRepository(url, open_fetcher(url)), "stable")
    got = Envelope.from_json(source.envelope_bytes())
    assert got == envelope
    assert source.state_bytes(got) == state
    report = source.fetch([ObjectWant(sha(v), len(v)) for v in objects.values()], store,
                          workdir=tmp_path / "w")
    assert report.bytes_on_wire == sum(len(frame(v)) for v in objects.values())
    assert all(store.read_bytes(sha(v)) == v for v in objects.values())
    assert store.fsck().clean


def test_delta_is_fetched_when_the_base_is_present(nginx: Nginx,
                                                   remote: tuple[RemoteBuilder, str],
                                                   store: DiskObjectStore,
                                                   tmp_path: Path) -> None:
    builder, url = remote
    old = blob(3, 512 << 10)
    new = old[:4096] + b"one changed file" + old[4112:]
    base_id = store.add_bytes(old)
    builder.add_object(new)
    delta = builder.add_delta(old, new)
    report = http_repo(url).fetch_objects([ObjectWant(sha(new), len(new), base_id)], store,
                                          workdir=tmp_path / "w")
    assert report.deltas_used == 1
    assert report.bytes_on_wire == delta.stat().st_size
    assert store.read_bytes(sha(new)) == new
    prefix = url.rsplit("/", 1)[1]
    assert nginx.requests_for(f"{prefix}/{layout.object_path(sha(new))}") == []
    assert "200" in nginx.requests_for(f"{prefix}/{layout.delta_path(base_id, sha(new))}")[0]


def test_a_missing_delta_falls_back_to_the_whole_object(nginx: Nginx,
                                                        remote: tuple[RemoteBuilder, str],
                                                        store: DiskObjectStore,
                                                        tmp_path: Path) -> None:
    builder, url = remote
    old, new = blob(4), blob(5)
    base_id = store.add_bytes(old)
    builder.add_object(new)
    report = http_repo(url).fetch_objects([ObjectWant(sha(new), len(new), base_id)], store,
                                          workdir=tmp_path / "w")
    assert report.deltas_used == 0
    assert store.read_bytes(sha(new)) == new
    prefix = url.rsplit("/", 1)[1]
    [delta_line] = nginx.requests_for(f"{prefix}/{layout.delta_path(base_id, sha(new))}")
    assert " 404 " in delta_line
    [object_line] = nginx.requests_for(f"{prefix}/{layout.object_path(sha(new))}")
    assert " 200 " in object_line


def test_an_interrupted_download_resumes_with_a_range_request(
        nginx: Nginx, remote: tuple[RemoteBuilder, str], store: DiskObjectStore,
        tmp_path: Path) -> None:
    builder, url = remote
    data = blob(6, 1 << 20)
    object_id = builder.add_object(data)
    wire = frame(data)
    work = tmp_path / "w"
    work.mkdir()
    (work / f"{object_id}.zst").write_bytes(wire[:5000])  # what a power cut left
    fetched = http_repo(url).fetch_object(ObjectWant(object_id, len(data)), store,
                                          workdir=work)
    assert fetched.bytes_on_wire == len(wire) - 5000
    assert store.read_bytes(object_id) == data
    prefix = url.rsplit("/", 1)[1]
    [line] = nginx.requests_for(f"{prefix}/{layout.object_path(object_id)}")
    assert '"bytes=5000-" 206' in line


def test_a_complete_partial_is_fetched_again_after_416(nginx: Nginx,
                                                       remote: tuple[RemoteBuilder, str],
                                                       store: DiskObjectStore,
                                                       tmp_path: Path) -> None:
    builder, url = remote
    data = blob(7)
    object_id = builder.add_object(data)
    work = tmp_path / "w"
    work.mkdir()
    (work / f"{object_id}.zst").write_bytes(frame(data))
    http_repo(url).fetch_object(ObjectWant(object_id, len(data)), store, workdir=work)
    assert store.read_bytes(object_id) == data
    prefix = url.rsplit("/", 1)[1]
    statuses = [line.split()[-2] for line in
                nginx.requests_for(f"{prefix}/{layout.object_path(object_id)}")]
    assert statuses == ["416", "200"]


def test_an_object_bigger_than_signed_is_refused_with_nothing_stored(
        remote: tuple[RemoteBuilder, str], store: DiskObjectStore, tmp_path: Path) -> None:
    builder, url = remote
    signed = blob(8, 32 << 10)
    # The server has a bigger file under the signed id: larger than the
    # compressed bound (cut off by Content-Length) ...
    builder.put_raw_object(sha(signed), os.urandom(200 << 10))
    repo = http_repo(url)
    with pytest.raises(IntegrityError, match="announces"):
        repo.fetch_object(ObjectWant(sha(signed), len(signed)), store, workdir=tmp_path / "w")
    # ... or within it but expanding past the signed size.
    builder.put_raw_object(sha(signed), frame(signed + b"more"))
    with pytest.raises(IntegrityError, match="larger than"):
        repo.fetch_object(ObjectWant(sha(signed), len(signed)), store, workdir=tmp_path / "w")
    assert list(store.ids()) == []
    assert list((tmp_path / "w").iterdir()) == []
    assert store.fsck().clean


def test_a_corrupted_object_is_refused_by_its_hash(remote: tuple[RemoteBuilder, str],
                                                   store: DiskObjectStore,
                                                   tmp_path: Path) -> None:
    builder, url = remote
    data = blob(9)
    corrupt = bytearray(data)
    corrupt[1234] ^= 1
    builder.put_raw_object(sha(data), frame(bytes(corrupt)))
    with pytest.raises(IntegrityError, match="hashes to"):
        http_repo(url).fetch_object(ObjectWant(sha(data), len(data)), store,
                                    workdir=tmp_path / "w")
    assert list(store.ids()) == []


def test_twenty_objects_fetch_in_parallel(remote: tuple[RemoteBuilder, str],
                                          store: DiskObjectStore, tmp_path: Path) -> None:
    builder, url = remote
    blobs = [blob(100 + i, 48 << 10) for i in range(20)]
    for data in blobs:
        builder.add_object(data)
    seen: list[int] = []
    report = http_repo(url).fetch_objects(
        [ObjectWant(sha(d), len(d)) for d in blobs], store, workdir=tmp_path / "w",
        parallel=4, progress=lambda done, _total: seen.append(done),
    )
    assert len(report.objects) == 20
    assert sorted(store.ids()) == sorted(sha(d) for d in blobs)
    assert seen == sorted(seen) and seen[-1] == sum(len(d) for d in blobs)
    assert store.fsck().clean


def test_a_missing_channel_is_not_found(remote: tuple[RemoteBuilder, str]) -> None:
    _builder, url = remote
    with pytest.raises(RemoteNotFoundError) as caught:
        http_repo(url).channel("nightly")
    assert isinstance(caught.value, NotFoundError)
    assert caught.value.where == f"{url}/channels/nightly"


def test_https_checks_the_certificate(nginx: Nginx, remote: tuple[RemoteBuilder, str],
                                      store: DiskObjectStore, tmp_path: Path) -> None:
    builder, url = remote
    data = blob(11)
    builder.add_object(data)
    prefix = url.rsplit("/", 1)[1]
    tls_url = f"https://127.0.0.1:{nginx.tls_port}/{prefix}"
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        RemoteRepository(tls_url, open_fetcher(tls_url)).fetch_object(
            ObjectWant(sha(data), len(data)), store, workdir=tmp_path / "w")
    assert list(store.ids()) == []
    trusting = ssl.create_default_context(cafile=str(nginx.run / "cert.pem"))
    repo = RemoteRepository(tls_url, HttpFetcher(timeout=10, ssl_context=trusting))
    repo.fetch_object(ObjectWant(sha(data), len(data)), store, workdir=tmp_path / "w")
    assert store.read_bytes(sha(data)) == data


# -- tiny socket servers: remotes that misbehave -------------------------------------

Handler = Callable[[socket.socket, bytes], None]


class TinyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: Handler) -> None:
        self.handle_request_bytes = handler
        self.requests_seen: list[bytes] = []
        super().__init__(("127.0.0.1", 0), _TinyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _TinyHandler(socketserver.BaseRequestHandler):
    server: TinyServer

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        self.server.requests_seen.append(head)
        with contextlib.suppress(OSError):
            self.server.handle_request_bytes(self.request, head)


@contextlib.contextmanager
def tiny_server(handler: Handler) -> Iterator[TinyServer]:
    server = TinyServer(handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def endless(conn: socket.socket, _head: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    chunk = b"\0" * (64 << 10)
    while True:
        conn.sendall(chunk)


def test_an_endless_response_is_cut_off_at_the_cap(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    seen: list[int] = []
    with tiny_server(endless) as server:
        with pytest.raises(IntegrityError, match="runs on") as caught:
            HttpFetcher(timeout=10).fetch(f"{server.url}/objects/x", dest,
                                          max_bytes=2 << 20, on_chunk=seen.append)
        assert caught.value.where == f"{server.url}/objects/x"
        with pytest.raises(IntegrityError, match="runs on"):
            HttpFetcher(timeout=10).fetch_bytes(f"{server.url}/channels/x", max_bytes=1 << 20)
    assert sum(seen) <= 2 << 20
    assert not dest.exists()


def test_an_endless_object_never_reaches_the_store(store: DiskObjectStore,
                                                   tmp_path: Path) -> None:
    data = blob(10)
    with tiny_server(endless) as server, pytest.raises(IntegrityError):
        http_repo(server.url).fetch_objects([ObjectWant(sha(data), len(data))], store,
                                            workdir=tmp_path / "w")
    assert list(store.ids()) == []
    assert list((tmp_path / "w").iterdir()) == []


def test_connection_refused_is_a_transport_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there any more
    url = f"http://127.0.0.1:{port}/objects/x"
    with pytest.raises(TransportError) as caught:
        HttpFetcher(timeout=10).fetch(url, tmp_path / "dest", max_bytes=100)
    assert caught.value.where == url
    assert caught.value.exit_code == 12


def test_a_short_read_keeps_the_partial_and_the_next_call_resumes(tmp_path: Path) -> None:
    body = bytes(range(256)) * 100

    def short_then_ranged(conn: socket.socket, head: bytes) -> None:
        if b"Range: bytes=" in head:
            start = int(head.split(b"Range: bytes=")[1].split(b"-")[0])
            rest = body[start:]
            conn.sendall(
                b"HTTP/1.1 206 Partial Content\r\nConnection: close\r\n"
                + f"Content-Length: {len(rest)}\r\n".encode()
                + f"Content-Range: bytes {start}-{len(body) - 1}/{len(body)}\r\n\r\n".encode()
                + rest)
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:7000])

    dest = tmp_path / "dest"
    with tiny_server(short_then_ranged) as server:
        url = f"{server.url}/objects/x"
        with pytest.raises(TransportError, match="7000 of 25600"):
            HttpFetcher(timeout=10).fetch(url, dest, max_bytes=len(body))
        assert dest.read_bytes() == body[:7000]
        assert HttpFetcher(timeout=10).fetch(url, dest, max_bytes=len(body)) == len(body) - 7000
        assert b"Range: bytes=7000-" in server.requests_seen[-1]
    assert dest.read_bytes() == body


def test_a_server_ignoring_range_restarts_from_zero(tmp_path: Path) -> None:
    body = b"fresh content " * 500

    def no_ranges(conn: socket.socket, _head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    dest = tmp_path / "dest"
    dest.write_bytes(b"stale partial bytes")
    with tiny_server(no_ranges) as server:
        received = HttpFetcher(timeout=10).fetch(f"{server.url}/o", dest, max_bytes=len(body))
        assert b"Range: bytes=19-" in server.requests_seen[0]
    assert received == len(body)
    assert dest.read_bytes() == body


@pytest.mark.parametrize("status", [500, 503, 403])
def test_http_errors_are_transport_errors_naming_the_url(status: int) -> None:
    def failing(conn: socket.socket, _head: bytes) -> None:
        conn.sendall(f"HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())

    with tiny_server(failing) as server:
        url = f"{server.url}/channels/stable"
        with pytest.raises(TransportError, match=f"HTTP {status}") as caught:
            HttpFetcher(timeout=10).fetch_bytes(url, max_bytes=100)
    assert caught.value.where == url


def test_a_silent_server_times_out_as_a_transport_error() -> None:
    release = threading.Event()

    def silent(_conn: socket.socket, _head: bytes) -> None:
        release.wait(30)

    with tiny_server(silent) as server:
        try:
            with pytest.raises(TransportError, match="timed out"):
                HttpFetcher(timeout=0.5).fetch_bytes(f"{server.url}/c", max_bytes=100)
        finally:
            release.set()


def test_redirects_are_followed(tmp_path: Path) -> None:
    body = b"moved content"

    def redirecting(conn: socket.socket, head: bytes) -> None:
        if head.startswith(b"GET /old "):
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /new\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    with tiny_server(redirecting) as server:
        assert HttpFetcher(timeout=10).fetch_bytes(f"{server.url}/old", max_bytes=100) == body


def test_a_mirror_answering_403_for_a_delta_falls_back(store: DiskObjectStore,
                                                       tmp_path: Path) -> None:
    old, new = blob(12), blob(13)
    base_id = store.add_bytes(old)
    wire = frame(new)

    def s3_like(conn: socket.socket, head: bytes) -> None:
        if head.startswith(b"GET /deltas/"):
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                         + f"Content-Length: {len(wire)}\r\n\r\n".encode() + wire)

    with tiny_server(s3_like) as server:
        report = http_repo(server.url).fetch_objects(
            [ObjectWant(sha(new), len(new), base_id)], store, workdir=tmp_path / "w")
    assert report.deltas_used == 0
    assert store.read_bytes(sha(new)) == new


def test_the_first_failure_stops_the_other_downloads(store: DiskObjectStore,
                                                     tmp_path: Path) -> None:
    slow_size = 8 << 20
    slow_id, broken_id = sha(b"slow"), sha(b"broken")
    slow_started = threading.Event()
    sent = [0]

    def mixed(conn: socket.socket, head: bytes) -> None:
        if head.startswith(f"GET /objects/{broken_id}".encode()):
            slow_started.wait(STARTUP_LIMIT)  # fail only once the other download runs
            conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                     + f"Content-Length: {slow_size}\r\n\r\n".encode())
        for _ in range(slow_size >> 10):
            conn.sendall(b"\0" * 1024)
            sent[0] += 1024
            slow_started.set()
            time.sleep(0.005)

    work = tmp_path / "w"
    with tiny_server(mixed) as server:
        with pytest.raises(TransportError, match="HTTP 500") as caught:
            http_repo(server.url).fetch_objects(
                [ObjectWant(slow_id, slow_size), ObjectWant(broken_id, 6)], store,
                workdir=work, parallel=2)
        assert broken_id in str(caught.value.where)
    partial = work / f"{slow_id}.zst"
    assert partial.exists()  # kept for a resume
    assert partial.stat().st_size < slow_size
    assert sent[0] < slow_size  # the slow download was abandoned, not finished
    assert list(store.ids()) == []

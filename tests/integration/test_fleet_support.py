"""Shared pieces of the fleet tests: a release checkout, simulated devices, nginx, a registry.

A simulated device is a dev-mode storage directory without containers:
the factory revision installed and committed, a trust file, and the real
:class:`UpdateEngine` driven in-process (``prepare`` from a
:class:`RemoteSource`, then ``begin_live``/``begin_try`` and ``commit``),
exactly the calls the supervisor's update worker and coordinator make.
Each device fetches with its own User-Agent, so the server's access log
tells the devices apart.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pvinit.boot.env import FileBootEnv
from pvinit.checkout.checkout import Checkout
from pvinit.cli.pvstate import main as pvstate_main
from pvinit.objects.disk import DiskObjectStore
from pvinit.signing.keys import load_signing_key
from pvinit.signing.trust import TrustPolicy
from pvinit.trails.install import install_revision
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import move_ref, read_ref
from pvinit.transport.remote import RemoteRepository
from pvinit.transport.sources import RemoteSource
from pvinit.update.engine import UpdateEngine
from pvinit.update.settings import trust_path
from tests.conftest import need_tool, settled_log_lines
from tests.integration.test_fetch_http import STARTUP_LIMIT, free_port, wait_listening


def pvstate(*argv: str) -> None:
    code = pvstate_main(list(argv))
    assert code == 0, f"pvstate {' '.join(argv)} exited {code}"


class Release:
    """A release engineer's checkout: a ~512 KiB incompressible blob, a small file, a key."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.co = top / "state"
        self.files = top / "files"
        self.files.mkdir(parents=True)
        pvstate("init", str(self.co), "--objects", str(top / "objects"))
        self.rng = random.Random(6)  # noqa: S311 - deterministic test data, not secrets
        self.big = bytearray(self.rng.randbytes(512 << 10))
        pvstate("keygen", str(top / "release"))
        self.key = top / "release.key"

    def policy(self) -> TrustPolicy:
        return TrustPolicy.from_keys([(load_signing_key(self.key).public, "release")],
                                     threshold=1)

    def revision(self, version: int) -> int:
        """Commit and sign a revision: the big blob changes a little, the small file wholly."""
        self.big[version * 4096:version * 4096 + 64] = self.rng.randbytes(64)
        (self.files / "big.bin").write_bytes(bytes(self.big))
        (self.files / "version").write_text(f"{version}\n")
        pvstate("-C", str(self.co), "add", str(self.files / "big.bin"), "--as", "data/big.bin")
        pvstate("-C", str(self.co), "add", str(self.files / "version"), "--as", "data/version")
        pvstate("-C", str(self.co), "commit", "-m", f"version {version}")
        number = max(Checkout(self.co).revisions.numbers())
        pvstate("-C", str(self.co), "sign", str(number), "--key", str(self.key))
        return number

    def publish(self, number: int, to: str, channel: str = "stable") -> None:
        pvstate("-C", str(self.co), "publish", str(number), "--to", to, "--channel", channel)

    def objects(self, number: int) -> dict[str, str]:
        return dict(Checkout(self.co).revisions.load(number).state.objects)


class SimDevice:
    """A storage directory on a committed factory revision, updated by the real engine."""

    def __init__(self, storage: Path, release: Release, factory: int, name: str) -> None:
        self.name = name
        self.layout = StorageLayout(storage)
        self.log_lines: list[str] = []
        co = Checkout(release.co)
        rev = co.revisions.load(factory)
        store = DiskObjectStore.create(self.layout.objects)
        for object_id in rev.state.object_ids():
            store.add_bytes(co.store.read_bytes(object_id), expected_id=object_id)
        path = trust_path(self.layout)
        path.parent.mkdir(parents=True)
        path.write_bytes(release.policy().to_json())
        install_revision(self.layout, state_bytes=rev.state.canonical_bytes(),
                         envelope=rev.envelope)
        move_ref(self.layout, "factory", factory, expect=None)
        self.engine = UpdateEngine(self.layout, bootenv=FileBootEnv(storage / "boot" / "env"),
                                   log=self.log_lines.append)
        self.engine.adopt(factory)

    @property
    def user_agent(self) -> str:
        return f"pvinit-fetcher/1 {self.name}"

    def update(self, repo: RemoteRepository, channel: str = "stable") -> int | None:
        """One poll: prepare what the channel offers, apply it, commit it (a healthy device)."""
        prepared = self.engine.prepare(RemoteSource(repo, channel))
        if prepared is None:
            return None
        if prepared.reboot:
            self.engine.begin_try(prepared)
        else:
            self.engine.begin_live(prepared)
        self.engine.commit(prepared.revision)
        return prepared.revision

    def current(self) -> int | None:
        return read_ref(self.layout, "current")


# -- servers -------------------------------------------------------------------------------

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format fleet '$request_method $uri "$http_range" $status $body_bytes_sent '
                     '"$http_user_agent"';
    access_log {run}/access.log fleet;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


@dataclass
class Server:
    """A server the test started, its URL and its access log."""

    url: str
    log: Path

    def lines(self) -> list[str]:
        return settled_log_lines(self.log)


@contextlib.contextmanager
def started(argv: list[str], port: int, err: Path) -> Iterator[bool]:
    """Run a server until the block ends; yields False when it did not come up."""
    with err.open("wb") as stderr:
        process = subprocess.Popen(argv, stdout=stderr, stderr=subprocess.STDOUT)
    try:
        try:
            wait_listening(port, process)
        except RuntimeError:
            yield False
            return
        yield True
    finally:
        process.terminate()
        try:
            process.wait(timeout=STARTUP_LIMIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def nginx_remote(tmp_path: Path) -> Iterator[tuple[Path, Server]]:
    """nginx-light on a loopback port serving a repository directory (root, server)."""
    binary = need_tool("nginx")
    root, run = tmp_path / "www", tmp_path / "nginx"
    root.mkdir()
    run.mkdir()
    for _attempt in range(5):
        port = free_port()
        conf = run / "nginx.conf"
        conf.write_text(NGINX_CONF.format(run=run, root=root, port=port))
        with started([binary, "-p", str(run), "-e", str(run / "error.log"), "-c", str(conf)],
                     port, run / "stderr") as up:
            if up:
                yield root, Server(f"http://127.0.0.1:{port}", run / "access.log")
                return
    pytest.fail(f"nginx did not start: {(run / 'stderr').read_text()}")


REGISTRY_CONF = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Server]:
    """Debian's docker-registry (distribution v2) on a loopback port; ``url`` is host:port.

    Its access log (combined format, User-Agent last) goes to ``log``.
    """
    binary = need_tool("docker-registry")
    run = tmp_path / "registry"
    run.mkdir()
    for _attempt in range(5):
        port = free_port()
        conf = run / "config.yml"
        conf.write_text(REGISTRY_CONF.format(data=run / "data", port=port))
        with started([binary, "serve", str(conf)], port, run / "log") as up:
            if up:
                yield Server(f"127.0.0.1:{port}", run / "log")
                return
    pytest.fail(f"docker-registry did not start: {(run / 'log').read_text()}")

"""Shared builders for the supervisor tests: an image, a device storage, a running supervisor.

Not a test module itself (it defines no tests); named ``test_supervisor_*`` to
live beside the tests that import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pvinit.bundle.writer import write_bundle
from pvinit.objects.disk import DiskObjectStore
from pvinit.signing.envelope import Envelope
from pvinit.state.canonical import canonical_bytes
from pvinit.supervisor.status import StatusDocument, read_status
from pvinit.trails.install import install_revision
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import move_ref
from tests.integration.test_containers_support import build_rootfs, make_squashfs

REPO = Path(__file__).resolve().parents[2]

#: Init scripts of the supervisor test image (beside those of the container tests).
SCRIPTS = {
    # Runs until SIGTERM, then exits 0 at once.
    "bin/run.sh": "#!/bin/sh\ntrap 'echo stopping; exit 0' TERM\necho up\nsleep 1000 &\nwait $!\n",
    # READY=1 over $NOTIFY_SOCKET, then like run.sh.
    "bin/notify.sh": (
        "#!/bin/sh\ntrap 'exit 0' TERM\n/bin/pvnotify READY=1 STATUS=serving || exit 9\n"
        "sleep 1000 &\nwait $!\n"
    ),
    "bin/crash.sh": "#!/bin/sh\necho crashing\nexit 3\n",
    # Counts its boots in the overlay root and in /storage/data, then like run.sh.
    "bin/persist.sh": (
        "#!/bin/sh\ntrap 'exit 0' TERM\n"
        "n=$(cat /var/count 2>/dev/null || echo 0); echo $((n + 1)) > /var/count\n"
        "if [ -d /storage/data ]; then\n"
        "  m=$(cat /storage/data/count 2>/dev/null || echo 0)\n"
        "  echo $((m + 1)) > /storage/data/count\n"
        "fi\nsync\necho counted\nsleep 1000 &\nwait $!\n"
    ),
}

#: AF_UNIX socket paths must stay under 108 bytes: pytest's tmp_path is too deep.
SHORT_TMP = Path("/tmp")


@pytest.fixture(scope="session")
def supervisor_image(tmp_path_factory: pytest.TempPathFactory, pvnotify_binary: Path) -> Path:
    base = tmp_path_factory.mktemp("svimage")
    root = build_rootfs(base / "rootfs", pvnotify_binary)
    for relative, text in SCRIPTS.items():
        path = root / relative
        path.write_text(text)
        path.chmod(0o755)
    return make_squashfs(root, base / "root.squashfs")


def container(
    name: str,
    group: str,
    init: str,
    *,
    goal: str | None = None,
    policy: str | None = None,
    recovery: dict[str, Any] | None = None,
    storage: dict[str, str] | None = None,
    lxc: dict[str, str] | None = None,
    root: str = "root.squashfs",
) -> dict[str, Any]:
    """A run.json document."""
    doc: dict[str, Any] = {
        "name": name, "type": "lxc", "group": group, "root-volume": root, "init": [init],
        "storage": {k: {"persistence": v} for k, v in (storage or {}).items()},
    }  # fmt: skip
    if goal:
        doc["status_goal"] = goal
    if policy:
        doc["restart_policy"] = policy
    if recovery is not None:
        doc["auto_recovery"] = recovery
    if lxc:
        doc["lxc"] = lxc
    return doc


def group(
    name: str, goal: str = "STARTED", policy: str = "container", timeout: float = 10
) -> dict[str, Any]:
    return {"name": name, "status_goal": goal, "restart_policy": policy, "timeout": timeout}


class Device:
    """A storage directory in /tmp (short paths), its run dir, and a supervisor process."""

    def __init__(self, image: Path) -> None:
        self.top = Path(tempfile.mkdtemp(prefix="pvsv", dir=SHORT_TMP))
        self.storage = self.top / "s"
        self.run_dir = self.top / "r"
        self.layout = StorageLayout(self.storage)
        self.image = image
        self.proc: subprocess.Popen[bytes] | None = None
        self.revision = 0

    # -- building revisions --------------------------------------------------

    def revision_parts(
        self, groups: list[dict[str, Any]], containers: list[dict[str, Any]],
        extra_objects: dict[str, Path] | None = None,
    ) -> tuple[bytes, Envelope, DiskObjectStore]:
        store = DiskObjectStore.create(self.layout.objects)
        image_id = store.add_file(self.image)
        entries: dict[str, Any] = {"#spec": "pvinit-state@1", "device.json": {"groups": groups}}
        sizes = {image_id: self.image.stat().st_size}
        for doc in containers:
            entries[f"{doc['name']}/run.json"] = doc
            entries[f"{doc['name']}/root.squashfs"] = image_id
        for key, path in (extra_objects or {}).items():
            object_id = store.add_file(path)
            entries[key] = object_id
            sizes[object_id] = path.stat().st_size
        state_bytes = canonical_bytes(entries)
        self.revision += 1
        envelope = Envelope.create(
            revision=self.revision, parent=None, state_bytes=state_bytes, sizes=sizes,
            created=datetime(2026, 1, 1, tzinfo=UTC), message="test",
        )  # fmt: skip
        return state_bytes, envelope, store

    def install(self, groups: list[dict[str, Any]], containers: list[dict[str, Any]],
                extra_objects: dict[str, Path] | None = None) -> int:
        """Install a revision and make it current."""
        state_bytes, envelope, _ = self.revision_parts(groups, containers, extra_objects)
        install_revision(self.layout, state_bytes=state_bytes, envelope=envelope)
        move_ref(self.layout, "current", envelope.revision, expect=None)
        return envelope.revision

    def bundle(self, groups: list[dict[str, Any]], containers: list[dict[str, Any]]) -> Path:
        """A factory bundle (its objects come from a scratch store, not the device's)."""
        scratch = Device(self.image)
        state_bytes, envelope, store = scratch.revision_parts(groups, containers)
        out = self.top / "factory.pvb"
        try:
            write_bundle(out, envelope=envelope, state_bytes=state_bytes, store=store,
                         object_ids=sorted(envelope.sizes))
        finally:
            shutil.rmtree(scratch.top)
        return out

    # -- running ---------------------------------------------------------------

    def start(self, *extra: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("PVINIT_DEV", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pvinit.supervisor", "--storage", str(self.storage),
             "--run-dir", str(self.run_dir), "--stop-grace", "2", *extra],
            env=env, stderr=subprocess.PIPE,
        )  # fmt: skip

    def status(self) -> StatusDocument | None:
        return read_status(self.run_dir / "pvinit" / "status.json")

    def wait_for(
        self, condition: Callable[[StatusDocument], bool], timeout: float = 30.0
    ) -> StatusDocument:
        """Poll the status file until ``condition`` holds; the deadline only bounds a hang."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.status()
            if last is not None and condition(last):
                return last
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        last = self.status()
        if last is not None and condition(last):
            return last
        shown = json.dumps(last.to_dict(), indent=1) if last is not None else None
        raise AssertionError(f"status never matched; last: {shown}\n{self.log_text()}")

    def statuses(self, doc: StatusDocument) -> dict[str, str]:
        return {c.name: c.status.value for c in doc.containers}

    def stop(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        return code

    def log_text(self) -> str:
        logs = sorted(self.layout.logs.glob("*/pvinit/pvinit.log"))
        return "\n".join(p.read_text() for p in logs)

    def mounts_left(self) -> list[str]:
        text = Path("/proc/self/mountinfo").read_text()
        points = [line.split(" ")[4] for line in text.splitlines()]
        return [point for point in points if point.startswith(str(self.top))]

    def containers_left(self) -> list[str]:
        lxcpath = self.run_dir / "pvinit" / "lxc"
        return sorted(p.name for p in lxcpath.iterdir()) if lxcpath.is_dir() else []

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        for mount in reversed(self.mounts_left()):
            subprocess.run(["umount", "-l", mount], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.top)], check=False)


@pytest.fixture
def device(supervisor_image: Path) -> Iterator[Device]:
    world = Device(supervisor_image)
    try:
        yield world
    finally:
        world.cleanup()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

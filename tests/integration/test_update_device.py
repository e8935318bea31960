"""OTA updates on a dev device: launcher (bootloader) + PID 1 + supervisor + real LXC (root).

Each test boots ``pvinit --storage`` on a factory revision, drops a signed
bundle into the inbox, and watches the journals, the boot environment and
the refs — the files a field technician would read — until the update is
committed or rolled back.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pvinit.boot.env import FileBootEnv
from pvinit.bundle.writer import write_bundle
from pvinit.pid1.locate import find_dev_pid1
from pvinit.signing.keys import SigningKey
from pvinit.signing.trust import TrustPolicy, sign_envelope
from pvinit.trails.refs import read_ref
from pvinit.update.journal import read_journal
from tests.integration.test_containers_support import pvnotify_binary
from tests.integration.test_supervisor_pvinit import supervisor_of
from tests.integration.test_supervisor_support import (
    REPO,
    Device,
    container,
    device,
    group,
    supervisor_image,
)

__all__ = ["device", "pvnotify_binary", "supervisor_image"]

pytest.importorskip("pvinit.containers.lxc_driver", reason="needs python-lxc")
pytestmark = [pytest.mark.root, pytest.mark.slow]

GROUPS = [group("platform", policy="system", timeout=10), group("app", timeout=10)]
RECOVERY = {"policy": "on-failure", "max_retries": 3, "retry_delay": 0.2,
            "backoff_factor": 2.0, "stable_timeout": 1}


def base_containers(app_env: str = "1", app_init: str = "/bin/run.sh") -> list[dict[str, Any]]:
    app = container("app", "app", app_init, recovery=RECOVERY)
    app["env"] = {"VERSION": app_env}
    return [container("platform", "platform", "/bin/run.sh"), app]


class Updater:
    """A dev device booted by the launcher, and a release key to make signed bundles."""

    def __init__(self, dev: Device) -> None:
        self.dev = dev
        self.key = SigningKey.generate()
        config = dev.storage / "config"
        config.mkdir(parents=True)
        trust = TrustPolicy.from_keys([(self.key.public, "test")], threshold=1)
        (config / "trust.json").write_bytes(trust.to_json())
        (config / "pvinit.json").write_text(json.dumps({"commit_delay": 1}))
        self.proc: subprocess.Popen[str] | None = None
        self.err: list[str] = []

    def bundle(self, groups: list[dict[str, Any]], containers: list[dict[str, Any]],
               *, name: str, sign: bool = True, revision: int | None = None) -> Path:
        if revision is not None:
            self.dev.revision = revision - 1
        state_bytes, envelope, store = self.dev.revision_parts(groups, containers)
        if sign:
            envelope = sign_envelope(envelope, self.key)
        out = self.dev.top / name
        write_bundle(out, envelope=envelope, state_bytes=state_bytes, store=store,
                     object_ids=sorted(envelope.sizes))
        return out

    def boot(self, factory: Path | None = None) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        argv = [sys.executable, "-m", "pvinit.cli.pvinit", "--storage", str(self.dev.storage),
                "--status-interval", "60"]
        if factory is not None:
            argv += ["--factory", str(factory)]
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        stream = self.proc.stderr
        threading.Thread(target=lambda: self.err.extend(stream or []), daemon=True).start()

    def drop(self, bundle: Path) -> None:
        inbox = self.dev.storage / "inbox"
        inbox.mkdir(exist_ok=True)
        tmp = inbox / f".{bundle.name}.tmp"
        tmp.write_bytes(bundle.read_bytes())
        tmp.rename(inbox / bundle.name)

    def wait(self, what: str, condition: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if condition():
            return
        raise AssertionError(f"never saw: {what}\n--- launcher:\n{''.join(self.err)[-4000:]}"
                             f"\n--- supervisor:\n{self.dev.log_text()[-4000:]}")

    def journal_state(self, revision: int) -> str | None:
        journal = read_journal(self.dev.layout, revision)
        return None if journal is None else journal.state.value

    def env(self) -> dict[str, str]:
        return FileBootEnv(self.dev.storage / "boot" / "env").read()

    def running(self, revision: int) -> bool:
        return f"booting revision {revision} " in self.dev.log_text() and \
            f"revision {revision}: every group started" in self.dev.log_text()

    def boots(self) -> int:
        return sum(1 for line in self.err if "ended:" in line and "boot " in line)

    def poweroff(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def power_cut(self) -> None:
        """SIGKILL the launcher's whole process group: PID 1 dies with its namespace."""
        assert self.proc is not None
        for pid in _descendants(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):  # it may have exited meanwhile
                os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait()


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in children:
        found.append(int(child))
        found.extend(_descendants(int(child)))
    return found


@pytest.fixture
def updater(device: Device) -> Iterator[Updater]:
    world = Updater(device)
    try:
        yield world
    finally:
        world.poweroff()


def boot_factory(u: Updater) -> None:
    factory = u.bundle(GROUPS, base_containers(), name="factory.pvb")
    u.boot(factory)
    u.wait("revision 1 running", lambda: u.running(1))
    u.wait("revision 1 adopted as pv_rev", lambda: u.env().get("pv_rev") == "1")


def test_an_app_change_is_applied_without_reboot_and_committed(updater: Updater) -> None:
    u = updater
    boot_factory(u)
    u.drop(u.bundle(GROUPS, base_containers(app_env="2"), name="r2.pvb"))
    u.wait("revision 2 UPDATED", lambda: u.journal_state(2) == "UPDATED")
    assert u.env()["pv_rev"] == "2" and "pv_try" not in u.env()
    # The refs move after the journal says UPDATED (engine.commit's order): wait, do not race.
    u.wait("refs done and current at 2", lambda: read_ref(u.dev.layout, "done") == 2
           and read_ref(u.dev.layout, "current") == 2)
    log = u.dev.log_text()
    assert "platform: STOPPED" not in log  # only the app restarted
    assert u.boots() == 0
    # The worker moves a delivered bundle on its next look at the inbox, once the
    # update is final: soon after the journal says UPDATED, not at the same instant.
    moved = u.dev.storage / "inbox" / "done" / "r2.pvb"
    u.wait("r2.pvb moved to inbox/done", moved.is_file, timeout=30)
    # The factory install and the update ran in short-lived forks: none of the engine's
    # libraries (signatures, bundle decoding, hashing) ever entered the supervisor.
    pid1 = find_dev_pid1(u.dev.storage)
    assert pid1 is not None
    maps = Path(f"/proc/{supervisor_of(pid1)}/maps").read_text()
    for library in ("cryptography", "zstandard", "msgpack", "_hashlib"):
        assert library not in maps, library
    assert "the update preparer" not in log  # no fork failed


def test_a_device_change_reboots_into_try_and_commits(updater: Updater) -> None:
    u = updater
    boot_factory(u)
    groups = [group("platform", policy="system", timeout=12), group("app", timeout=10)]
    u.drop(u.bundle(groups, base_containers(), name="r2.pvb"))
    u.wait("revision 2 DONE", lambda: u.journal_state(2) == "DONE")
    assert u.boots() == 1
    assert u.env().get("pv_rev") == "2" and "pv_try" not in u.env()
    u.wait("refs done at 2, no try", lambda: read_ref(u.dev.layout, "done") == 2
           and read_ref(u.dev.layout, "try") is None)


def test_a_container_exiting_during_testing_rolls_back_and_is_not_tried_again(
    updater: Updater,
) -> None:
    u = updater
    boot_factory(u)
    groups = [group("platform", policy="system", timeout=12), group("app", timeout=10)]
    bad = u.bundle(groups, base_containers(app_init="/bin/crash.sh"), name="r2.pvb")
    u.drop(bad)
    u.wait("revision 2 ERROR", lambda: u.journal_state(2) == "ERROR")
    u.wait("back on revision 1", lambda: u.boots() >= 2 and u.running(1))
    journal = read_journal(u.dev.layout, 2)
    assert journal is not None and "exited during testing" in journal.reason
    assert u.env().get("pv_rev") == "1" and "pv_try" not in u.env()
    u.drop(bad)  # the same revision again: refused without a try
    u.wait("bundle handled", lambda: (u.dev.storage / "inbox" / "r2.pvb").exists() is False)
    time.sleep(2)
    assert u.boots() == 2 and u.journal_state(2) == "ERROR"


def test_a_goal_that_times_out_rolls_back(updater: Updater) -> None:
    u = updater
    boot_factory(u)
    groups = [group("platform", policy="system", timeout=12), group("app", timeout=2)]
    never_ready = base_containers()
    never_ready[1]["status_goal"] = "READY"  # run.sh never signals READY
    u.drop(u.bundle(groups, never_ready, name="r2.pvb"))
    u.wait("revision 2 ERROR", lambda: u.journal_state(2) == "ERROR")
    journal = read_journal(u.dev.layout, 2)
    assert journal is not None and "timed out" in journal.reason
    u.wait("back on revision 1", lambda: u.boots() >= 2 and u.running(1))


def test_a_supervisor_crash_during_the_try_rolls_back(updater: Updater) -> None:
    u = updater
    (u.dev.storage / "config" / "pvinit.json").write_text(json.dumps({"commit_delay": 60}))
    boot_factory(u)
    groups = [group("platform", policy="system", timeout=12), group("app", timeout=10)]
    u.drop(u.bundle(groups, base_containers(), name="r2.pvb"))
    u.wait("revision 2 running as a try", lambda: u.running(2))
    supervisor = [pid for pid in _descendants(u.proc.pid if u.proc else 0)
                  if b"pvinit.supervisor" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert supervisor, "no supervisor process found"
    os.kill(supervisor[0], signal.SIGKILL)
    u.wait("revision 2 ERROR", lambda: u.journal_state(2) == "ERROR")
    u.wait("back on revision 1", lambda: u.boots() >= 2 and u.running(1))
    assert u.env().get("pv_rev") == "1"


def test_power_cut_before_commit_comes_back_on_the_committed_revision(
    updater: Updater,
) -> None:
    u = updater
    (u.dev.storage / "config" / "pvinit.json").write_text(json.dumps({"commit_delay": 60}))
    boot_factory(u)
    groups = [group("platform", policy="system", timeout=12), group("app", timeout=10)]
    u.drop(u.bundle(groups, base_containers(), name="r2.pvb"))
    u.wait("revision 2 running as a try", lambda: u.running(2))
    u.power_cut()
    for mount in reversed(u.dev.mounts_left()):
        subprocess.run(["umount", "-l", mount], check=False)
    u.err.clear()
    u.boot()
    u.wait("revision 2 ERROR after the power cut", lambda: u.journal_state(2) == "ERROR")
    u.wait("revision 1 running", lambda: u.env().get("pv_rev") == "1" and u.running(1))
    assert "pv_try" not in u.env()


def test_replayed_and_badly_signed_revisions_are_refused(updater: Updater) -> None:
    u = updater
    boot_factory(u)
    unsigned = u.bundle(GROUPS, base_containers(app_env="3"), name="unsigned.pvb", sign=False)
    u.drop(unsigned)
    u.wait("unsigned WONTGO", lambda: u.journal_state(2) == "WONTGO")
    journal = read_journal(u.dev.layout, 2)
    assert journal is not None and "signature" in journal.reason
    failed = u.dev.storage / "inbox" / "failed"
    u.wait("unsigned.pvb moved to inbox/failed", (failed / "unsigned.pvb.reason").is_file)
    assert "WONTGO" in (failed / "unsigned.pvb.reason").read_text()
    replay = u.bundle(GROUPS, base_containers(app_env="9"), name="replay.pvb", revision=1)
    u.drop(replay)
    u.wait("replay handled", (failed / "replay.pvb.reason").is_file)  # written after the move
    assert u.journal_state(1) is None or u.journal_state(1) != "WONTGO"
    assert "not newer" in (failed / "replay.pvb.reason").read_text()
    assert u.env().get("pv_rev") == "1" and u.boots() == 0

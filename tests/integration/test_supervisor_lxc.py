"""The supervisor with real LXC containers from real squashfs objects (as root).

Each test drives ``python3 -m pvinit.supervisor`` as a subprocess on a
storage directory in /tmp and watches its status file with a deadline.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pvinit.supervisor.loop import EXIT_REBOOT
from pvinit.supervisor.status import StatusDocument
from pvinit.trails.refs import read_ref
from tests.integration.test_containers_support import pvnotify_binary
from tests.integration.test_supervisor_support import (
    Device,
    container,
    device,
    group,
    supervisor_image,
)

__all__ = ["device", "pvnotify_binary", "supervisor_image"]  # fixtures used by name

pytest.importorskip("pvinit.containers.lxc_driver", reason="needs python-lxc")
pytestmark = pytest.mark.root


def line_index(log: str, pattern: str) -> int:
    for index, line in enumerate(log.splitlines()):
        if re.search(pattern, line):
            return index
    raise AssertionError(f"no log line matches {pattern!r} in:\n{log}")


def groups_of(doc: StatusDocument) -> dict[str, str]:
    return {g.name: g.status.value for g in doc.groups}


def test_groups_start_in_order_each_after_the_previous_reached_its_goal(device: Device) -> None:
    device.install(
        [group("data", "MOUNTED"), group("platform", "READY"), group("late", "READY", timeout=1),
         group("app")],
        [container("notifier", "platform", "/bin/notify.sh"),
         container("silent", "late", "/bin/run.sh"),
         container("app", "app", "/bin/run.sh")],
    )  # fmt: skip
    device.start()
    # While "late" waits out its timeout, "app" is already mounted but its group not started.
    doc = device.wait_for(lambda d: groups_of(d).get("late") == "STARTING")
    assert device.statuses(doc)["app"] == "MOUNTED" and groups_of(doc)["app"] == "WAITING"
    doc = device.wait_for(lambda d: d.phase.value == "RUNNING")
    assert device.statuses(doc) == {"notifier": "READY", "silent": "STARTED", "app": "STARTED"}
    assert [(g.name, g.status.value) for g in doc.groups] == [
        ("data", "REACHED"), ("platform", "REACHED"), ("late", "TIMED_OUT"), ("app", "REACHED"),
    ]  # fmt: skip
    assert all(c.pid for c in doc.containers)
    log = device.log_text()
    assert line_index(log, r"notifier: READY") < line_index(log, r"group late: starting")
    assert line_index(log, r"group late: timed out .* waiting for silent") < line_index(
        log, r"group app: starting"
    )
    assert device.stop() == 0


def test_sigterm_stops_groups_in_reverse_order_and_leaves_nothing_behind(device: Device) -> None:
    bundle = device.bundle(
        [group("first"), group("second")],
        [container("base", "first", "/bin/run.sh"), container("top", "second", "/bin/run.sh")],
    )
    device.start("--factory", str(bundle))
    device.wait_for(lambda d: d.phase.value == "RUNNING")
    assert read_ref(device.layout, "current") == read_ref(device.layout, "factory") == 1
    assert (device.layout.trail(1) / "base" / "root.squashfs").is_file()
    assert device.mounts_left()
    assert device.stop() == 0
    doc = device.status()
    assert doc is not None and doc.phase.value == "STOPPED"
    assert device.statuses(doc) == {"base": "STOPPED", "top": "STOPPED"}
    log = device.log_text()
    assert line_index(log, r"top: STOPPED") < line_index(log, r"base: STOPPED")
    assert device.mounts_left() == []
    assert device.containers_left() == []


def test_crashing_container_is_restarted_with_backoff_until_retries_run_out(
    device: Device,
) -> None:
    recovery = {"policy": "on-failure", "max_retries": 2, "retry_delay": 0.2,
                "backoff_factor": 2, "stable_timeout": 60}  # fmt: skip
    device.install(
        [group("app")],
        [container("crasher", "app", "/bin/crash.sh", recovery=recovery),
         container("steady", "app", "/bin/run.sh")],
    )  # fmt: skip
    device.start()
    code = device.wait_exit(60)
    assert code == EXIT_REBOOT
    log = device.log_text()
    assert "restart 1/2 in 0.2s" in log
    assert "restart 2/2 in 0.4s" in log
    assert line_index(log, r"restart 1/2") < line_index(log, r"restart 2/2") < line_index(
        log, r"reboot requested: crasher exited with status 3; 2 restarts in a row exhausted"
    )
    doc = device.status()
    assert doc is not None and doc.phase.value == "REBOOTING"
    crasher = doc.container("crasher")
    assert crasher is not None and crasher.restarts == 2 and crasher.status.value == "FAILED"
    assert device.mounts_left() == []


def test_a_system_container_that_exits_makes_the_supervisor_exit_for_reboot(
    device: Device,
) -> None:
    device.install(
        [group("platform", policy="system"), group("app")],
        [container("platform", "platform", "/bin/crash.sh"),
         container("app", "app", "/bin/run.sh")],
    )  # fmt: skip
    device.start()
    assert device.wait_exit(60) == EXIT_REBOOT
    doc = device.status()
    assert doc is not None and doc.phase.value == "REBOOTING"
    assert doc.reason is not None and "platform exited with status 3" in doc.reason
    assert "restart policy system" in doc.reason
    assert device.mounts_left() == []


def test_a_permanent_volume_survives_a_restart_and_a_boot_volume_does_not(
    device: Device,
) -> None:
    device.install(
        [group("app")],
        [container("keeper", "app", "/bin/persist.sh",
                   storage={"lxc-overlay": "permanent", "data": "permanent"}),
         container("scratch", "app", "/bin/persist.sh",
                   storage={"lxc-overlay": "boot", "data": "revision"})],
    )  # fmt: skip
    disks = device.layout.disks
    keeper_count = disks / "perm/keeper/lxc-overlay/upper/var/count"
    keeper_data = disks / "perm/keeper/data/count"
    scratch_count = disks / "boot/scratch/lxc-overlay/upper/var/count"
    scratch_data = disks / "rev/1/scratch/data/count"

    def boot_once() -> None:
        device.start()
        device.wait_for(lambda d: d.phase.value == "RUNNING")
        device.wait_for(lambda d: scratch_data.is_file() and keeper_data.is_file()
                        and scratch_count.is_file() and keeper_count.is_file())  # fmt: skip
        assert device.stop() == 0

    boot_once()
    boot_once()
    assert keeper_count.read_text().strip() == "2"
    assert keeper_data.read_text().strip() == "2"
    assert scratch_data.read_text().strip() == "2"  # revision scope: same revision, kept
    assert scratch_count.read_text().strip() == "1"  # boot scope: wiped at each start


def test_containers_that_cannot_start_are_failed_with_a_reason_and_the_others_run(
    device: Device, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.squashfs"
    truncated.write_bytes(device.image.read_bytes()[: 64 << 10])
    device.install(
        [group("app", timeout=2)],
        [container("noinit", "app", "/bin/nope"),
         container("badkey", "app", "/bin/run.sh", lxc={"lxc.bogus.key": "1"}),
         container("corrupt", "app", "/bin/run.sh", root="broken.squashfs"),
         container("missing", "app", "/bin/run.sh"),
         container("good", "app", "/bin/run.sh")],
        extra_objects={"corrupt/broken.squashfs": truncated},
    )  # fmt: skip
    (device.layout.trail(1) / "missing" / "root.squashfs").unlink()
    device.start()
    doc = device.wait_for(lambda d: d.phase.value == "RUNNING")
    statuses = device.statuses(doc)
    assert statuses == {"noinit": "FAILED", "badkey": "FAILED", "corrupt": "FAILED",
                        "missing": "FAILED", "good": "STARTED"}  # fmt: skip
    reasons = {c.name: c.reason or "" for c in doc.containers}
    assert "/bin/nope" in reasons["noinit"]
    assert "lxc.bogus.key" in reasons["badkey"]
    assert "truncated" in reasons["corrupt"] and "broken.squashfs" in reasons["corrupt"]
    assert "missing from the trail" in reasons["missing"]
    log = device.log_text()
    for name in ("noinit", "badkey", "corrupt", "missing"):
        assert f"{name}: FAILED: {reasons[name]}" in log
    assert device.stop() == 0
    assert device.mounts_left() == []
    assert device.containers_left() == []

"""The pure parts of PID 1 and its guards: tables, parsing, records, the watchdog protocol."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pvinit.errors import BadInputError, RefusedError
from pvinit.pid1 import mounts, syscalls
from pvinit.pid1.init import SIGNAL_ACTIONS, parse_args
from pvinit.pid1.launcher import BootEnd, classify
from pvinit.pid1.record import Action, ShutdownRecord, read_record, record_path, write_record
from pvinit.pid1.spawn import spawn_clean
from pvinit.pid1.watchdog import DEFAULT_TIMEOUT, Watchdog, ping_interval

MOUNTINFO = (
    "22 1 0:21 / /proc rw,relatime shared:5 - proc proc rw\n"
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "40 27 0:40 / /storage rw - ext4 /dev/vdb rw\n"
    "41 40 0:41 / /storage/run rw - tmpfs tmpfs rw\n"
    "42 40 0:42 / /storage/disks/my\\040vol rw master:1 propagate_from:2 - squashfs /dev/loop0 ro\n"
    "43 27 0:43 / /storage2 rw - tmpfs tmpfs rw\n"
    "garbage line\n"
)


def test_mountinfo_parse_decodes_escapes_and_skips_optional_fields() -> None:
    entries = mounts.parse_mountinfo(MOUNTINFO)
    assert [e.mount_point for e in entries] == [
        "/proc", "/", "/storage", "/storage/run", "/storage/disks/my vol", "/storage2",
    ]  # fmt: skip
    assert entries[4].fstype == "squashfs"
    assert entries[4].source == "/dev/loop0"


def test_unmount_plan_is_reverse_order_and_stays_below_its_top() -> None:
    entries = mounts.parse_mountinfo(MOUNTINFO)
    below_storage = mounts.plan_unmounts(entries, "/storage", keep_api=False)
    assert [e.mount_point for e in below_storage] == ["/storage/disks/my vol", "/storage/run"]
    whole = mounts.plan_unmounts(entries, "/", keep_api=True)  # / and API mounts stay
    assert [e.mount_point for e in whole] == [
        "/storage2", "/storage/disks/my vol", "/storage/run", "/storage",
    ]  # fmt: skip


class FailingLibc(syscalls.Libc):
    def mount(self, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "injected")


def test_failing_mounts_are_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syscalls, "libc", FailingLibc())
    empty = tmp_path / "mountinfo"
    empty.write_text("")
    logged: list[str] = []
    report = mounts.mount_basics(root=str(tmp_path), log=logged.append, mountinfo=str(empty))
    assert report.mounted == ()
    assert [target for target, _ in report.failed] == [
        str(tmp_path / spec.target.lstrip("/")) for spec in mounts.BASE_MOUNTS
    ]
    assert len(logged) == len(mounts.BASE_MOUNTS)


def test_dev_mode_refuses_to_mount_in_a_shared_mount_namespace() -> None:
    # pytest shares its parent's mount namespace: dev mode must refuse here.
    with pytest.raises(RefusedError, match="own mount namespace"):
        mounts.assert_own_mount_namespace()


def test_reboot_and_kill_all_refuse_outside_pid1() -> None:
    # Harmless even if the guard were broken: signal 0 only probes, and an
    # unknown reboot command is EINVAL -- which would fail this test.
    with pytest.raises(PermissionError, match="not PID 1"):
        syscalls.libc.kill_all(0)
    with pytest.raises(PermissionError, match="not PID 1"):
        syscalls.libc.reboot(0x0BADC0DE)


def test_signals_map_to_reboot_halt_and_poweroff() -> None:
    assert SIGNAL_ACTIONS == {
        signal.SIGTERM: Action.REBOOT,
        signal.SIGINT: Action.REBOOT,
        signal.SIGUSR1: Action.HALT,
        signal.SIGUSR2: Action.POWEROFF,
        signal.SIGPWR: Action.POWEROFF,
    }
    assert signal.SIGHUP not in SIGNAL_ACTIONS


def test_dev_mode_never_opens_the_watchdog_and_unknown_words_are_kept() -> None:
    config, unknown = parse_args(
        ["--dev", "--watchdog", "/dev/watchdog0", "--supervisor-cmd", "sup --x 'a b'", "splash"]
    )
    assert config.watchdog_path is None
    assert config.supervisor_argv == ("sup", "--x", "a b")
    assert unknown == ["splash"]
    device, _ = parse_args(["--watchdog", "/dev/watchdog0"])
    assert device.watchdog_path == "/dev/watchdog0"


def test_launcher_reads_reboot_from_sighup_and_poweroff_from_sigint() -> None:
    assert classify(-signal.SIGHUP) is BootEnd.REBOOT
    assert classify(-signal.SIGINT) is BootEnd.POWEROFF
    assert classify(1) is BootEnd.EXITED
    assert classify(-signal.SIGKILL) is BootEnd.KILLED


def test_shutdown_record_round_trips_durably(tmp_path: Path) -> None:
    record = ShutdownRecord(Action.HALT, "SIGUSR1 from pid 0\nsecond line", "b1", 12.5)
    write_record(tmp_path, record)
    assert read_record(tmp_path) == ShutdownRecord(
        Action.HALT, "SIGUSR1 from pid 0 second line", "b1", 12.5
    )
    assert [p.name for p in record_path(tmp_path).parent.iterdir()] == ["last-shutdown"]


def test_missing_record_is_none_and_a_bad_one_names_the_line(tmp_path: Path) -> None:
    assert read_record(tmp_path) is None
    path = record_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("action=reboot\nno equals sign\n")
    with pytest.raises(BadInputError, match=r"last-shutdown:2"):
        read_record(tmp_path)
    path.write_text("action=explode\n")
    with pytest.raises(BadInputError, match="unknown action 'explode'"):
        read_record(tmp_path)


def test_watchdog_pings_at_half_its_timeout_and_disarms_with_magic_close(
    tmp_path: Path,
) -> None:
    assert ping_interval(30) == 15.0
    assert Watchdog.open(str(tmp_path / "absent")) is None
    # A plain file stands in for the device: it cannot answer the ioctls,
    # so the fallbacks (default timeout, write as keepalive) are what run.
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    dog = Watchdog.open(str(device))
    assert dog is not None
    assert (dog.timeout, dog.interval) == (DEFAULT_TIMEOUT, DEFAULT_TIMEOUT / 2)
    dog.keepalive()
    dog.disarm()
    assert not dog.armed
    assert device.read_bytes() == b"\0V"
    dog.keepalive()  # disarmed: a no-op, not an error on a closed descriptor
    assert device.read_bytes() == b"\0V"


def test_supervisor_that_cannot_be_executed_raises_and_leaves_no_zombie() -> None:
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    before = children.read_text()
    with pytest.raises(FileNotFoundError):
        spawn_clean(["/nonexistent/supervisor"], dict(os.environ))
    assert children.read_text() == before


@pytest.mark.root
def test_device_mode_knows_a_child_pid_namespace_from_the_machine() -> None:
    # Device mode refuses a child PID namespace: its shutdown remounts / read-only.
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--", sys.executable, "-c",
         "from pvinit.pid1.init import in_child_pid_namespace as f; print(f())"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "True\n"), proc.stderr


def test_ctrl_alt_del_reboots_unless_the_kernel_command_line_says_otherwise() -> None:
    from pvinit.pid1.init import ctrl_alt_del_action
    from pvinit.pid1.record import Action

    assert ctrl_alt_del_action(None) is Action.REBOOT
    assert ctrl_alt_del_action("poweroff") is Action.POWEROFF
    assert ctrl_alt_del_action("HALT") is Action.HALT
    assert ctrl_alt_del_action("garbage") is Action.REBOOT

"""A real boot: the VM image under QEMU (TCG), pvinit as PID 1, the default state running.

The image is built by ``images/vm/build`` into ``build/vm/`` and reused while
nothing it is made from changed (Debian packages list, pvinit's sources, the
factory bundle).  Each test run boots a sparse copy of its disk, so the
built image stays a fresh device.  Console deadlines are generous: under
TCG on 2 busy cores a boot takes 10 s to a few minutes; no timing is asserted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import need_tool, skip_or_fail
from tests.vm.support import (
    REPO,
    DefaultState,
    VmRun,
    build_image,
    debugfs_cat,
    export_factory_bundle,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

BUILD_DIR = REPO / "build" / "vm"
SUPERVISOR_PRESENT = (REPO / "pvinit" / "supervisor" / "__main__.py").is_file()
BOOT_DEADLINE = 600.0
"""Seconds to wait for a console line (a first TCG boot on a loaded 2-core CI is slow)."""
SHUTDOWN_DEADLINE = 300.0

# pvinit's PID 1 logs "pvinit[1]: ..." (pvinit.pid1.console), the supervisor "pvinit: ...".
PID1_STARTED = r"pvinit\[1\]: starting \(device, storage /storage\)"
SUPERVISOR_STARTED = r"pvinit\[1\]: supervisor started, pid \d+"
ALL_GROUPS_STARTED = r"pvinit: revision (\d+): every group started"
# pvinit.supervisor.memory, 10 s after every group started.
IDLE_MEMORY = (r"pvinit: memory once idle: PID 1 ([\d.]+) MiB \+ supervisor ([\d.]+) MiB = "
               r"([\d.]+) MiB PSS \(RSS ([\d.]+) \+ ([\d.]+) MiB\)")
ORDERLY_END = r"pvinit\[1\]: (reboot|poweroff|halt): SIGINT from pid 0"
KERNEL_END = {"reboot": "reboot: Restarting system", "poweroff": "reboot: Power down",
              "halt": "reboot: System halted"}  # fmt: skip


@dataclass(frozen=True)
class Boot:
    """What one boot showed: its console, the launcher's exit status, the disk it ran on."""

    console: str
    status: int
    disk: Path


def boot_until_running_then_shut_down(disk: Path) -> Boot:
    """Boot, wait until the device runs (or PID 1 started what exists), then Ctrl-Alt-Del."""
    run = VmRun(BUILD_DIR, disk)
    try:
        run.wait_for(PID1_STARTED, BOOT_DEADLINE)
        run.wait_for(SUPERVISOR_STARTED, BOOT_DEADLINE)
        if SUPERVISOR_PRESENT:
            run.wait_for(ALL_GROUPS_STARTED, BOOT_DEADLINE)
            run.wait_for(IDLE_MEMORY, BOOT_DEADLINE)
        run.shutdown()
        status = run.finish(SHUTDOWN_DEADLINE)
    finally:
        run.kill()
    return Boot(run.text, status, disk)


@pytest.fixture(scope="module")
def vm_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("qemu-system-x86_64", "mmdebstrap", "mkfs.ext4", "debugfs"):
        need_tool(tool)
    work = tmp_path_factory.mktemp("vm")
    factory = export_factory_bundle(work / "factory.pvb") if SUPERVISOR_PRESENT else None
    build_image(BUILD_DIR, factory, work / "build.log")
    return BUILD_DIR


@pytest.fixture(scope="module")
def device_disk(vm_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh device: a sparse copy of the built disk, used by this module's boots in turn."""
    disk = tmp_path_factory.mktemp("vmdisk") / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(vm_build / "disk.img"), str(disk)], check=True)
    return disk


@pytest.fixture(scope="module")
def first_boot(device_disk: Path) -> Iterator[Boot]:
    yield boot_until_running_then_shut_down(device_disk)


@pytest.fixture(scope="module")
def second_boot(first_boot: Boot) -> Boot:
    """A normal boot: the installed revision again, no factory bundle to install."""
    return boot_until_running_then_shut_down(first_boot.disk)


def lines_matching(console: str, pattern: str) -> list[str]:
    return [line for line in console.splitlines() if re.search(pattern, line)]


def test_pvinit_runs_as_pid1_of_the_vm_and_starts_the_supervisor(first_boot: Boot) -> None:
    # pvinit.pid1 refuses to run (and says so) unless os.getpid() == 1.
    assert lines_matching(first_boot.console, PID1_STARTED)
    assert not lines_matching(first_boot.console, r"refusing to run: not PID 1")
    assert lines_matching(first_boot.console, SUPERVISOR_STARTED)
    assert not lines_matching(first_boot.console, r"Kernel panic|Traceback")


def test_every_default_container_reaches_its_goal(first_boot: Boot) -> None:
    if not SUPERVISOR_PRESENT:
        skip_or_fail("pvinit/supervisor/__main__.py is not there yet: no container goals to check")
    console = first_boot.console
    state = DefaultState.from_checkout(REPO / "state")
    assert state.containers, "the default state has no containers"
    assert lines_matching(console, r"pvinit: first boot: installing factory bundle")
    for name, goal in state.groups:
        assert lines_matching(console, rf"pvinit: group {re.escape(name)}: reached {goal}$"), (
            f"group {name} did not reach {goal}:\n{console}"
        )
    for name, goal in state.containers:
        assert lines_matching(console, rf"pvinit: {re.escape(name)}: STARTED, pid \d+")
        if goal == "READY":
            assert lines_matching(console, rf"pvinit: {re.escape(name)}: READY")
    assert not lines_matching(console, r": FAILED|timed out"), console


def test_pvinit_reports_its_own_memory_on_the_device_once_idle(
    first_boot: Boot, second_boot: Boot
) -> None:
    """The PSS of PID 1 and the supervisor where nothing else maps the interpreter.

    Not a limit (memory is a benchmark, see docs/benchmarks.md): the line must be
    there and add up; the figures are printed for the record (``pytest -rP``).
    The first boot installed the factory bundle (the verifier's modules stay
    loaded until the next boot); the second is a device's normal boot.
    """
    if not SUPERVISOR_PRESENT:
        skip_or_fail("pvinit/supervisor/__main__.py is not there yet: no supervisor to ask")
    for name, boot in (("first (factory install)", first_boot), ("second", second_boot)):
        found = re.search(IDLE_MEMORY, boot.console)
        assert found is not None, boot.console
        pid1, supervisor, total, rss1, rss2 = (float(v) for v in found.groups())
        assert 0 < pid1 <= rss1 and 0 < supervisor <= rss2
        assert abs(pid1 + supervisor - total) <= 0.11  # each rounded to 0.1
        print(f"idle memory on the VM, {name} boot: {found.group(0)}")


def test_ctrl_alt_del_shuts_the_vm_down_in_order_through_pvinit(first_boot: Boot) -> None:
    console = first_boot.console
    ends = [re.search(ORDERLY_END, line) for line in lines_matching(console, ORDERLY_END)]
    assert len(ends) == 1, console
    assert ends[0] is not None
    action = ends[0].group(1)
    assert lines_matching(console, re.escape(KERNEL_END[action])), console
    assert lines_matching(console, rf"vm: guest ended: {action} \(boot 1\)")
    assert first_boot.status == 0
    if SUPERVISOR_PRESENT:
        state = DefaultState.from_checkout(REPO / "state")
        for name, _goal in state.containers:
            assert lines_matching(console, rf"pvinit: {re.escape(name)}: STOPPED"), console
        assert lines_matching(console, r"pvinit\[1\]: supervisor exited with status 0")
    # PID 1 recorded why the boot ended, durably, on the guest's own disk.
    record = debugfs_cat(first_boot.disk, "/storage/logs/last-shutdown")
    assert f"action={action}" in record
    assert "SIGINT from pid 0" in record


def test_second_boot_keeps_the_installed_revision(first_boot: Boot, second_boot: Boot) -> None:
    if not SUPERVISOR_PRESENT:
        skip_or_fail("pvinit/supervisor/__main__.py is not there yet: nothing installed to keep")
    first = re.search(ALL_GROUPS_STARTED, first_boot.console)
    assert first is not None
    again = second_boot
    assert not lines_matching(again.console, r"first boot: installing factory bundle")
    second = re.search(ALL_GROUPS_STARTED, again.console)
    assert second is not None and second.group(1) == first.group(1)
    assert again.status == 0


def test_pvinit_works_with_debians_python_packages(vm_build: Path) -> None:
    """Every module imports and signing works with the image's own python3 and packages."""
    base = vm_build / "base"
    script = base / "tmp" / "pvinit-debian-compat.py"
    shutil.copyfile(REPO / "tests" / "vm" / "debian_compat.py", script)
    try:
        result = subprocess.run(
            ["chroot", str(base), "python3", "-I", "-B", "/tmp/pvinit-debian-compat.py"],
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
    finally:
        script.unlink()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: python 3.11"), result.stdout

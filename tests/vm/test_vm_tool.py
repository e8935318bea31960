"""The launcher's pure parts and the image build's input checks (no QEMU, no root)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import need_tool
from tests.vm.support import REPO, load_vm_tool

vm = load_vm_tool()


@pytest.mark.parametrize(
    ("line", "end"),
    [
        ("[   24.135596] reboot: Restarting system", "reboot"),
        ("[    9.1] reboot: Power down", "poweroff"),
        ("[    9.1] reboot: System halted", "halt"),
        ("[    2.0] Kernel panic - not syncing: Attempted to kill init!", "panic"),
    ],
)
def test_the_kernels_last_words_tell_how_a_boot_ended(line: str, end: str) -> None:
    assert vm.classify_line(line + "\n") is vm.End(end)


def test_ordinary_console_lines_end_nothing() -> None:
    assert vm.classify_line("pvinit[1]: reboot: SIGINT from pid 0\n") is None
    assert vm.classify_line("pvinit: group app: reached STARTED\n") is None


def test_only_a_pvinit_shutdown_is_a_successful_exit() -> None:
    assert [e.value for e in vm.End if e.exit_status() == 0] == ["poweroff", "halt", "reboot"]
    assert len({vm.End(v).exit_status() for v in ("panic", "timeout", "qemu-failed")}) == 3


def test_the_vm_runs_under_tcg_and_never_asks_for_kvm(tmp_path: Path) -> None:
    spec = vm.BootSpec(disk=tmp_path / "d.img", kernel=tmp_path / "k", initrd=tmp_path / "i")
    argv = spec.qemu_argv(qmp=tmp_path / "qmp")
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert not any("kvm" in word for word in argv)
    assert "-no-reboot" in argv
    append = argv[argv.index("-append") + 1].split()
    assert "init=/sbin/pvinit" in append
    assert any(word.startswith("panic=") and word != "panic=0" for word in append)
    assert f"file={tmp_path / 'd.img'},if=virtio,format=raw" in argv


def test_a_boot_by_hand_has_no_bootloader_and_a_reboot_ends_it(tmp_path: Path) -> None:
    spec = vm.BootSpec(disk=tmp_path / "d.img", kernel=tmp_path / "k", initrd=tmp_path / "i")
    assert vm.next_boot(spec, vm.End.REBOOT) is None


def test_only_a_reboot_or_a_watchdog_reset_starts_the_machine_again(tmp_path: Path) -> None:
    spec = vm.BootSpec(disk=tmp_path / "d.img", kernel=tmp_path / "k", initrd=tmp_path / "i",
                       image_kernel=tmp_path / "k", image_initrd=tmp_path / "i")  # fmt: skip
    for end in (vm.End.POWEROFF, vm.End.HALT, vm.End.PANIC, vm.End.TIMEOUT, vm.End.KILLED):
        assert vm.next_boot(spec, end) is None
    assert set(vm.AGAIN) == {vm.End.REBOOT, vm.End.WATCHDOG}


def test_fw_printenv_output_and_fw_setenv_argvs() -> None:
    assert vm.parse_printenv("pv_rev=1\npv_try=2\nbootcmd=run a=b\n") == {
        "pv_rev": "1", "pv_try": "2", "bootcmd": "run a=b"}
    assert vm.fw_setenv_argvs({"pv_trying": "2", "pv_try": None}) == [["pv_try"],
                                                                      ["pv_trying", "2"]]
    assert vm.unapplied({"pv_trying": "2", "pv_try": None}, {"pv_try": "2"}) == {
        "pv_trying": "2", "pv_try": None}
    assert vm.unapplied({"pv_trying": "2", "pv_try": None}, {"pv_trying": "2"}) == {}


def test_the_bootloaders_changes_reach_the_image_through_the_real_fw_setenv(
    tmp_path: Path,
) -> None:
    """Debian's libubootenv-tool writes what the rule decided, and reads it back."""
    need_tool("mkenvimage")
    need_tool("fw_setenv")
    text = tmp_path / "uenv.txt"
    text.write_text("bootdelay=0\npv_rev=1\npv_try=2\n")
    image = vm.UBootImage(tmp_path)
    subprocess.run(["mkenvimage", "-s", "0x4000", "-o", str(image.image), str(text)], check=True)
    choice = vm._pvinit_rule().choose_boot(image.printenv())
    image.setenv(choice.changes)
    assert image.printenv() == {"bootdelay": "0", "pv_rev": "1", "pv_try": "2", "pv_trying": "2"}
    assert vm._pvinit_rule().choose_boot(image.printenv()).rollback
    image.setenv({"pv_try": None, "pv_trying": None})
    assert image.printenv() == {"bootdelay": "0", "pv_rev": "1"}


def test_a_softdog_reset_and_a_killed_qemu_are_told_apart() -> None:
    assert vm.classify_line("[  9.1] softdog: Initiating system reboot\n") is vm.End.WATCHDOG
    assert vm.classify_line("qemu-system-x86_64: terminating on signal 15 from pid 4\n") \
        is vm.End.KILLED


def test_boot_names_a_missing_disk_and_starts_no_qemu(tmp_path: Path) -> None:
    missing = tmp_path / "none.img"
    result = subprocess.run(
        [str(REPO / "tools" / "vm"), "--build-dir", str(tmp_path), "boot", "--disk", str(missing)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 4
    assert str(missing) in result.stderr


def test_build_refuses_a_missing_factory_bundle_and_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pvb"
    result = subprocess.run(
        [str(REPO / "images" / "vm" / "build"), "--out", str(tmp_path / "out"),
         "--factory", str(missing)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 4
    assert str(missing) in result.stderr
    assert not (tmp_path / "out").exists()

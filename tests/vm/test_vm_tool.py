"""The launcher's pure parts and the image build's input checks (no QEMU, no root)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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


def test_a_reboot_ends_the_run_until_the_bootloader_hook_chooses_a_next_boot(
    tmp_path: Path,
) -> None:
    spec = vm.BootSpec(disk=tmp_path / "d.img", kernel=tmp_path / "k", initrd=tmp_path / "i")
    assert vm.next_boot(spec, vm.End.REBOOT) is None


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

"""A reboot update in the VM, with ``tools/vm`` playing U-Boot between boots (issue 4).

The device boots the factory revision, finds a signed revision 2 (a
device.json change: needs a reboot) in ``/storage/inbox/``, installs it,
sets ``pv_try`` in its U-Boot environment image and reboots; QEMU exits
(``-no-reboot``); the launcher reads the image out of the disk with
debugfs + ``fw_printenv``, applies the rule, sets ``pv_trying`` with
``fw_setenv``, and boots revision 2's kernel from its trail.  Everything is
then read back from the disk with the same real tools.

The watchdog test freezes the device during the try boot
(``PVINIT_TEST_HANG=testing``, a PID 1 test hook); softdog resets the
machine, the bootloader rule boots ``pv_rev`` and revision 2 is ERROR.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.vm.ota import (
    BOOTING,
    COMMITTED,
    EVERY_GROUP,
    boot,
    device_with_update,
    env_of,
    journal_state,
    journal_text,
    ota_image,
)
from tests.vm.support import debugfs_cat

pytestmark = [pytest.mark.root, pytest.mark.slow]
DEADLINE = 900.0


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ota_image(tmp_path_factory.mktemp("vmota"))


def test_a_reboot_update_boots_the_try_kernel_from_its_trail_and_commits(
    image: tuple[Path, Path], tmp_path: Path
) -> None:
    disk = device_with_update(*image, tmp_path / "disk.img")
    run = boot(disk)
    try:
        run.wait_for(r"pvinit: revision 1: every group started", DEADLINE)
        run.wait_for(r"pvinit: update 2: TESTING: rebooting into the try revision", DEADLINE)
        run.wait_for(r"vm: guest ended: reboot \(boot 1\)", DEADLINE)
        chosen = run.wait_for(r"vm: bootloader: (.*) -> revision 2 \(try\); kernel (\S+)", 120)
        run.wait_for(r"pv_boot_rev=2 pv_boot_trying=1", 60)
        run.wait_for(COMMITTED.replace(r"(\d+)", "2"), DEADLINE)
        run.shutdown()
        run.finish(300)
    finally:
        run.kill()
    console = run.text
    assert "pv_try=2" in chosen.group(1) and "pv_rev=1" in chosen.group(1)
    assert chosen.group(2).endswith("kernel.img")  # the trail's BSP kernel, not the image's
    assert re.findall(BOOTING, console) == ["1", "2"]
    env = env_of(disk)
    assert env.get("pv_rev") == "2", env
    assert "pv_try" not in env and "pv_trying" not in env, env
    assert journal_state(disk, 2) == "DONE", journal_text(disk, 2)
    assert debugfs_cat(disk, "/storage/inbox/done/r2.pvb.reason") == ""
    print(f"console:\n{console}")


def test_a_device_that_hangs_while_testing_is_reset_by_the_watchdog_and_rolls_back(
    image: tuple[Path, Path], tmp_path: Path
) -> None:
    disk = device_with_update(*image, tmp_path / "disk.img")
    # softdog's margin from the command line (kmod passes module.param words to modprobe):
    # the reset comes 10 s after the last ping instead of 60.
    run = boot(disk, append="PVINIT_TEST_HANG=testing softdog.soft_margin=10")
    try:
        run.wait_for(r"pvinit\[1\]: TEST HOOK PVINIT_TEST_HANG=testing: revision 2 is testing",
                     DEADLINE)  # fmt: skip
        run.wait_for(r"vm: guest ended: watchdog \(boot 2\)", 300)
        rolled = run.wait_for(r"vm: bootloader: (.*) -> revision 1 \(rollback\)", 120)
        run.wait_for(r"pvinit: update 2: ERROR", DEADLINE)
        run.wait_for(EVERY_GROUP.replace(r"(\d+)", "1"), DEADLINE)
        run.shutdown()
        run.finish(300)
    finally:
        run.kill()
    console = run.text
    assert "pv_try=2" in rolled.group(1) and "pv_trying=2" in rolled.group(1)
    assert "softdog: Initiating system reboot" in console
    assert re.findall(COMMITTED, console) == []
    assert journal_state(disk, 2) == "ERROR"
    assert "did not commit" in journal_text(disk, 2)
    env = env_of(disk)
    assert env.get("pv_rev") == "1" and "pv_try" not in env, env

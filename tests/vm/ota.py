"""Shared by the VM update tests: the OTA-ready image, a device with revision 2 in its inbox.

Not a test module.  The image is the standard VM image (``tests.vm.support``)
built with the BSP's kernel and the test release key trusted; a cycle's disk
is a sparse copy of it with a signed reboot update (revision 2) written into
``/storage/inbox/`` with debugfs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import need_tool
from tests.vm.support import (
    BSP_OUT,
    REPO,
    VmRun,
    build_image,
    debugfs_cat,
    debugfs_put,
    device_change_bundle,
    export_factory_bundle,
    fresh_disk,
    guest_env,
    release_key,
)

BUILD_DIR = REPO / "build" / "vm"
EVERY_GROUP = r"pvinit: revision (\d+): every group started"
BOOTING = r"pvinit: booting revision (\d+)"
COMMITTED = r"pvinit: revision (\d+): committed"


def ota_image(work: Path, *, stable_timeout: int | None = None) -> tuple[Path, Path]:
    """Build (or reuse) the image; returns (built disk, revision 2 bundle)."""
    for tool in ("qemu-system-x86_64", "mmdebstrap", "mkfs.ext4", "debugfs", "e2fsck",
                 "fw_printenv", "fw_setenv", "mkenvimage"):  # fmt: skip
        need_tool(tool)
    factory = export_factory_bundle(work / "factory.pvb")
    if not (BSP_OUT / "version").is_file():
        subprocess.run([str(REPO / "tools" / "build-default-state")], check=True,
                       capture_output=True, timeout=1800)  # fmt: skip
    build_image(BUILD_DIR, factory, work / "build.log")
    key, _trust = release_key(BUILD_DIR)
    bundle = device_change_bundle(work / "r2.pvb", key, stable_timeout=stable_timeout)
    return BUILD_DIR / "disk.img", bundle


def device_with_update(built: Path, bundle: Path, disk: Path) -> Path:
    fresh_disk(built, disk)
    debugfs_put(disk, "/storage/inbox", bundle, bundle.name)
    return disk


def journal_state(disk: Path, revision: int) -> str | None:
    text = debugfs_cat(disk, f"/storage/progress/{revision}.json")
    if not text.strip():
        return None
    state = json.loads(text)["state"]
    return str(state)


def journal_text(disk: Path, revision: int) -> str:
    return debugfs_cat(disk, f"/storage/progress/{revision}.json")


def env_of(disk: Path) -> dict[str, str]:
    return guest_env(disk, disk.parent / f".{disk.name}.env")


def boot(disk: Path, *, append: str = "", timeout: float = 600.0) -> VmRun:
    return VmRun(BUILD_DIR, disk, timeout=timeout, append=append)

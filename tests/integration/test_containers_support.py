"""Shared builders for the container tests: a busybox rootfs, its squashfs, pvnotify.

Not a test module itself (it defines no tests); it is named ``test_containers_*``
to live beside the tests that import it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need_tool

REPO = Path(__file__).resolve().parents[2]
PVNOTIFY_C = REPO / "images" / "common" / "pvnotify.c"

#: Init scripts of the test image, by path inside the rootfs.
SCRIPTS = {
    # Prints, proves env and a read-only bind mount, then waits as PID 1 (ignoring SIGTERM).
    "bin/hello.sh": """#!/bin/sh
echo "hello from $(hostname) FOO=$FOO"
if [ -d /mnt/in ]; then
    cat /mnt/in/msg
    if echo x > /mnt/in/new 2>/dev/null; then echo BIND-WRITABLE; else echo BIND-READONLY; fi
fi
exec sleep 1000
""",
    # Reports readiness through $NOTIFY_SOCKET, then waits.
    "bin/ready.sh": """#!/bin/sh
echo "notify socket is $NOTIFY_SOCKET"
/bin/pvnotify READY=1 STATUS=serving || echo PVNOTIFY-FAILED
exec sleep 1000
""",
    # Handles SIGTERM: a clean stop within the grace period.
    "bin/graceful.sh": """#!/bin/sh
trap 'echo got TERM; exit 0' TERM
echo up
sleep 1000 &
wait $!
""",
    # Counts its runs in the (overlay) root filesystem, then exits.
    "bin/count.sh": """#!/bin/sh
n=$(cat /var/count 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > /var/count
sync
echo count=$n
""",
    "bin/fail7.sh": """#!/bin/sh
echo failing
exit 7
""",
}


def compile_pvnotify(out: Path) -> Path:
    """Build the static pvnotify the image recipes also build."""
    gcc = need_tool("gcc")
    binary = out / "pvnotify"
    subprocess.run(
        [
            gcc,
            "-static",
            "-Os",
            "-s",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
            str(binary),
            str(PVNOTIFY_C),
        ],
        check=True,
    )
    return binary


def build_rootfs(root: Path, pvnotify: Path) -> Path:
    """A busybox-static rootfs with the test scripts and pvnotify."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("needs busybox-static at /bin/busybox")
    for directory in ("bin", "proc", "sys", "dev", "tmp", "run", "var", "mnt", "etc"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run(
        [str(busybox), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    shutil.copy2(pvnotify, root / "bin" / "pvnotify")
    for relative, text in SCRIPTS.items():
        path = root / relative
        path.write_text(text)
        path.chmod(0o755)
    return root


def make_squashfs(source: Path, image: Path) -> Path:
    """A reproducible squashfs of ``source`` (flags from NOTES.md)."""
    mksquashfs = need_tool("mksquashfs")
    subprocess.run(
        [
            mksquashfs,
            str(source),
            str(image),
            "-comp",
            "zstd",
            "-noappend",
            "-reproducible",
            "-mkfs-time",
            "0",
            "-all-time",
            "0",
            "-all-root",
            "-quiet",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return image


@pytest.fixture(scope="session")
def pvnotify_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_pvnotify(tmp_path_factory.mktemp("pvnotify"))


@pytest.fixture(scope="session")
def rootfs_image(tmp_path_factory: pytest.TempPathFactory, pvnotify_binary: Path) -> Path:
    """The test image as a squashfs object (built once per session)."""
    base = tmp_path_factory.mktemp("image")
    root = build_rootfs(base / "rootfs", pvnotify_binary)
    return make_squashfs(root, base / "root.squashfs")

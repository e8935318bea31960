"""The default images and the BSP, built for real and run from their squashfs.

The image inits run here under ``chroot`` from the loop-mounted, read-only
squashfs (with a private /proc), which is how a container sees its root
volume; the LXC driver's own tests run them as containers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_tool

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "images" / "build.py"
GATHER = REPO / "bsp" / "gather.py"
IMAGES = ("platform", "sensor", "dashboard")
CHROOT_ENV = {"PATH": "/bin:/sbin:/usr/bin:/usr/sbin"}
#: A deadline for a child to show the expected behaviour; never a speed check.
DEADLINE = 30.0


def build_images(outdir: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BUILD), str(outdir), *names, "--squashfs"],
        capture_output=True, text=True, check=False,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_tool("mksquashfs")
    need_tool("gcc")
    outdir = tmp_path_factory.mktemp("images")
    result = build_images(outdir)
    assert result.returncode == 0, result.stderr
    return outdir


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(root: Path) -> list[tuple[str, int, int, int, str]]:
    """Every entry of a tree: path, mode, owner, mtime, and content or link target."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                content = "-> " + str(path.readlink())
            elif stat.S_ISREG(info.st_mode):
                content = sha256_file(path)
            else:
                content = ""
            entries.append((str(path.relative_to(root)), info.st_mode, info.st_uid,
                            int(info.st_mtime), content))
    return entries


def test_images_have_busybox_applets_etc_and_their_init(built: Path) -> None:
    for name in IMAGES:
        root = built / name
        init = root / "bin" / name
        assert stat.S_IMODE(init.stat().st_mode) == 0o755, name
        assert init.read_text().startswith("#!/bin/sh\n")
        assert stat.S_IMODE((root / "bin" / "busybox").stat().st_mode) == 0o755
        assert str((root / "bin" / "sh").readlink()) == "busybox"
        assert str((root / "usr" / "bin" / "env").readlink()) == "../../bin/busybox"
        assert (root / "etc" / "passwd").read_text().startswith("root:x:0:0:")
        assert "root:x:0:" in (root / "etc" / "group").read_text()
        assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
        for empty in ("proc", "sys", "dev", "run", "var"):
            assert list((root / empty).iterdir()) == [], (name, empty)
        assert {entry[3] for entry in manifest(root)} == {0}, f"{name}: a timestamp leaked"
    assert (built / "sensor" / "bin" / "pvnotify").is_file()
    assert not (built / "platform" / "bin" / "pvnotify").exists()
    cgi = built / "dashboard" / "www" / "cgi-bin" / "status"
    assert stat.S_IMODE(cgi.stat().st_mode) == 0o755
    assert stat.S_IMODE((built / "dashboard" / "www" / "index.html").stat().st_mode) == 0o644


@pytest.mark.slow
def test_building_all_images_twice_gives_identical_trees_and_squashfs(
    built: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    result = build_images(again)
    assert result.returncode == 0, result.stderr
    for name in IMAGES:
        assert manifest(built / name) == manifest(again / name), name
        assert sha256_file(built / f"{name}.squashfs") == sha256_file(again / f"{name}.squashfs")
    digests = {sha256_file(built / f"{name}.squashfs") for name in IMAGES}
    assert len(digests) == 3


def test_rebuilding_one_image_replaces_it_and_leaves_no_scratch(built: Path) -> None:
    before = sha256_file(built / "platform.squashfs")
    (built / "platform" / "stray").write_text("left over from an old build")
    result = build_images(built, "platform")
    assert result.returncode == 0, result.stderr
    assert not (built / "platform" / "stray").exists()
    assert sha256_file(built / "platform.squashfs") == before
    assert sorted(p.name for p in built.iterdir() if p.name.startswith(".")) == []


def test_unknown_image_name_is_a_usage_error(tmp_path: Path) -> None:
    result = build_images(tmp_path, "nope")
    assert result.returncode == 2
    assert "unknown image 'nope'" in result.stderr
    assert list(tmp_path.iterdir()) == []


@contextlib.contextmanager
def mounted(image: Path, mnt: Path) -> Iterator[Path]:
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", "-t", "squashfs", str(image), str(mnt)],
                   check=True, capture_output=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


#: In a private mount namespace: /proc and the host's /dev (as LXC's autodev
#: would give) over the read-only image, then exec the init chrooted.  Each
#: step execs, so the child's pid is the init's and signals reach it directly.
ENTER = 'mount -t proc proc "$0/proc" && mount --bind /dev "$0/dev" && exec chroot "$0" "$@"'


class Running:
    """An image's init started under chroot, with its stdout lines collected."""

    def __init__(self, root: Path, argv: list[str], env: dict[str, str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private",
             "/bin/sh", "-c", ENTER, str(root), *argv],
            env={**CHROOT_ENV, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, fragment: str) -> str:
        end = time.monotonic() + DEADLINE
        while (left := end - time.monotonic()) > 0:
            with contextlib.suppress(queue.Empty):
                line = self.lines.get(timeout=left)
                if fragment in line:
                    return line
        raise AssertionError(f"no line with {fragment!r} before the deadline")

    def stop(self, signum: int) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(timeout=DEADLINE)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def running(root: Path, argv: list[str], env: dict[str, str]) -> Iterator[Running]:
    child = Running(root, argv, env)
    try:
        yield child
    finally:
        child.close()


@pytest.mark.root
def test_squashfs_images_mount_read_only_with_their_files(built: Path, tmp_path: Path) -> None:
    for name in IMAGES:
        with mounted(built / f"{name}.squashfs", tmp_path / name) as root:
            info = (root / "bin" / name).stat()
            assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_mtime) == (0o755, 0, 0)
            assert (root / "bin" / name).read_bytes() == (built / name / "bin" / name).read_bytes()
            assert str((root / "bin" / "sh").readlink()) == "busybox"
            with pytest.raises(OSError, match="Read-only file system"):
                (root / "tmp" / "x").write_text("x")


@pytest.mark.root
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGPWR])
def test_platform_logs_heartbeats_and_exits_zero_when_halted(
    built: Path, tmp_path: Path, signum: int
) -> None:
    with mounted(built / "platform.squashfs", tmp_path / "mnt") as root, \
            running(root, ["/bin/platform"], {"HEARTBEAT": "1"}) as child:
        child.expect("platform: heartbeat 1")
        child.expect("platform: heartbeat 2")
        assert child.stop(signum) == 0
        child.expect(f"got {signal.Signals(signum).name}")


@pytest.mark.root
def test_sensor_reports_ready_after_its_first_reading(built: Path, tmp_path: Path) -> None:
    address = f"pvinit-test-{secrets.token_hex(6)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind("\0" + address)
        notify.settimeout(DEADLINE)
        with mounted(built / "sensor.squashfs", tmp_path / "mnt") as root, \
                running(root, ["/bin/sensor"],
                        {"RATE": "1", "NOTIFY_SOCKET": "@" + address}) as child:
            first = child.expect("sensor: reading 1 ")
            assert "load1=" in first
            message = notify.recv(4096).decode()
            assert message.split("\n")[0] == "READY=1"
            child.expect("sensor: reading 2 ")
            assert child.stop(signal.SIGTERM) == 0


@pytest.mark.root
def test_sensor_refuses_a_bad_rate(built: Path, tmp_path: Path) -> None:
    with mounted(built / "sensor.squashfs", tmp_path / "mnt") as root, \
            running(root, ["/bin/sensor"], {"RATE": "soon"}) as child:
        assert child.proc.wait(timeout=DEADLINE) == 2
        child.expect("RATE must be a positive integer")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_get(url: str) -> str:
    end = time.monotonic() + DEADLINE
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local test URL
                body: str = response.read().decode()
                return body
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


@pytest.mark.root
def test_dashboard_serves_its_page_and_live_status(built: Path, tmp_path: Path) -> None:
    port = free_port()
    with mounted(built / "dashboard.squashfs", tmp_path / "mnt") as root, \
            running(root, ["/bin/dashboard"], {"PORT": str(port)}) as child:
        child.expect(f"serving http://127.0.0.1:{port}/")
        assert "pvinit dashboard" in http_get(f"http://127.0.0.1:{port}/")
        status = http_get(f"http://127.0.0.1:{port}/cgi-bin/status")
        assert "status: ok" in status
        assert "load: " in status
        assert child.stop(signal.SIGTERM) == 0
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))  # httpd went away with the dashboard


@pytest.mark.slow
def test_bsp_gather_yields_a_bootable_kernel_modules_and_firmware(tmp_path: Path) -> None:
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "depmod", "mksquashfs"):
        need_tool(tool)
    out = tmp_path / "bsp"
    result = subprocess.run([sys.executable, str(GATHER), str(out)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    kernel = (out / "kernel.img").read_bytes()
    assert kernel[0x202:0x206] == b"HdrS", "kernel.img is not a bzImage"
    version = (out / "version").read_text().strip()
    assert version.endswith("-cloud-amd64")
    assert (out / "modules" / version / "modules.dep").is_file()
    assert (out / "modules" / version / "modules.dep.bin").is_file()
    assert any((out / "modules" / version / "kernel").rglob("*.ko*"))
    assert any(path.is_file() for path in (out / "firmware").rglob("*"))
    used = json.loads((out / "packages.json").read_text())
    assert used["kernel_version"] == version
    assert {pkg["name"] for pkg in used["packages"]} == {
        f"linux-image-{version}", "firmware-linux-free"}
    for name in ("modules.squashfs", "firmware.squashfs"):
        assert (out / name).read_bytes()[:4] == b"hsqs"
    run = json.loads((REPO / "bsp" / "run.json").read_text())
    assert run == {"linux": "kernel.img", "modules": "modules.squashfs",
                   "firmware": "firmware.squashfs"}
    assert all((out / value).is_file() for value in run.values())

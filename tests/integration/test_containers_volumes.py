"""Volumes with real squashfs images, loop devices and overlayfs (as root)."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvinit.containers import loopmount
from pvinit.containers.volumes import (
    SquashfsSuperblock,
    bind_mount,
    check_squashfs,
    is_mountpoint,
    mount_overlay,
    mount_root,
    mount_squashfs,
    overlay_options,
    parse_mountinfo,
    unmount,
)
from pvinit.errors import BadInputError, ExternalToolError, IntegrityError
from tests.integration.test_containers_support import pvnotify_binary, rootfs_image

__all__ = ["pvnotify_binary", "rootfs_image"]  # fixtures used by name

OBJECT_ID = "ab" * 32


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points to unmount (last first) even when the test fails."""
    points: list[Path] = []
    yield points
    for point in reversed(points):
        unmount(point)


def loops_of(image: Path) -> str:
    return subprocess.run(
        ["losetup", "-j", str(image)], capture_output=True, text=True, check=True
    ).stdout


# -- pure parts -----------------------------------------------------------


def test_superblock_of_a_real_image_parses(rootfs_image: Path) -> None:
    block = check_squashfs(rootfs_image)
    assert block.block_size == 131072
    assert block.bytes_used <= rootfs_image.stat().st_size


def test_bad_magic_is_an_integrity_error_naming_the_object() -> None:
    with pytest.raises(IntegrityError, match="bad magic") as caught:
        SquashfsSuperblock.parse(b"\0" * 96, size=4096, where=OBJECT_ID)
    assert caught.value.where == OBJECT_ID


def test_image_shorter_than_a_superblock_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="shorter than a superblock"):
        SquashfsSuperblock.parse(b"hsqs", size=4, where=OBJECT_ID)


def test_mountinfo_mount_points_are_unescaped() -> None:
    text = (
        "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n"
        "37 35 98:0 / /proc rw - proc proc rw\n"
    )
    assert parse_mountinfo(text) == ["/mnt/with space", "/proc"]


def test_overlay_paths_overlayfs_would_misparse_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError) as caught:
        overlay_options([tmp_path / "a,b"], tmp_path / "up", tmp_path / "work")
    assert "a,b" in str(caught.value.where)


# -- real mounts ----------------------------------------------------------


@pytest.fixture(params=["syscalls", "mount-tool"])
def mount_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways volumes are mounted: loop ioctls + mount(2), or util-linux's mount."""
    if request.param == "mount-tool":
        monkeypatch.setattr(loopmount, "available", lambda: False)
    return str(request.param)


@pytest.mark.root
def test_squashfs_object_mounts_read_only_and_unmount_frees_its_loop(
    rootfs_image: Path, tmp_path: Path, mounts: list[Path], mount_path: str
) -> None:
    target = tmp_path / "lower"
    mount_squashfs(rootfs_image, target, name=OBJECT_ID)
    mounts.append(target)
    assert (target / "bin" / "busybox").is_file()
    with pytest.raises(OSError) as caught:
        (target / "new").write_text("x")
    assert caught.value.errno == errno.EROFS
    assert loops_of(rootfs_image)
    unmount(target)
    assert not is_mountpoint(target)
    assert loops_of(rootfs_image) == ""


@pytest.mark.root
def test_overwritten_squashfs_object_is_refused_before_mounting(
    rootfs_image: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.squashfs"
    bad.write_bytes(b"\0" * 64 + rootfs_image.read_bytes()[64:])
    with pytest.raises(IntegrityError) as caught:
        mount_squashfs(bad, tmp_path / "lower", name=OBJECT_ID)
    assert caught.value.where == OBJECT_ID
    assert not is_mountpoint(tmp_path / "lower")


@pytest.mark.root
def test_truncated_squashfs_object_is_refused_before_mounting(
    rootfs_image: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.squashfs"
    bad.write_bytes(rootfs_image.read_bytes()[: 64 * 1024])
    with pytest.raises(IntegrityError, match="truncated") as caught:
        mount_squashfs(bad, tmp_path / "lower", name=OBJECT_ID)
    assert caught.value.where == OBJECT_ID


@pytest.mark.root
def test_squashfs_with_corrupt_tables_gives_a_mount_error_naming_object_and_mount_point(
    rootfs_image: Path, tmp_path: Path, mount_path: str
) -> None:
    data = bytearray(rootfs_image.read_bytes())
    id_table, _xattr, inode_table, directory_table = struct.unpack_from("<QQQQ", data, 48)
    for offset in (id_table, inode_table, directory_table):
        data[offset : offset + 64] = b"\xff" * 64
    bad = tmp_path / "bad.squashfs"
    bad.write_bytes(bytes(data))
    target = tmp_path / "lower"
    with pytest.raises(ExternalToolError) as caught:
        mount_squashfs(bad, target, name=OBJECT_ID)
    assert caught.value.where == OBJECT_ID
    assert str(target) in caught.value.message
    assert caught.value.hint is not None
    assert "corrupt" in caught.value.hint
    assert not is_mountpoint(target)
    assert loops_of(bad) == ""


@pytest.mark.root
def test_overlay_writes_land_in_the_persistence_dir_and_survive_remount(
    rootfs_image: Path, tmp_path: Path, mounts: list[Path], mount_path: str
) -> None:
    lower, persist, root = tmp_path / "lower", tmp_path / "persist", tmp_path / "root"
    first = mount_root(rootfs_image, lower=lower, persist=persist, target=root)
    mounts.extend([lower, root])
    (root / "var" / "state").write_text("kept")
    first.unmount()
    assert (persist / "upper" / "var" / "state").read_text() == "kept"
    mount_root(rootfs_image, lower=lower, persist=persist, target=root)
    assert (root / "var" / "state").read_text() == "kept"
    assert (root / "bin" / "busybox").is_file()


@pytest.mark.root
def test_failed_overlay_leaves_nothing_mounted(rootfs_image: Path, tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    with pytest.raises(BadInputError):
        mount_root(rootfs_image, lower=lower, persist=tmp_path / "a:b", target=tmp_path / "root")
    assert not is_mountpoint(lower)
    assert loops_of(rootfs_image) == ""


@pytest.mark.root
def test_overlay_over_a_missing_lower_dir_names_the_overlay(
    tmp_path: Path, mount_path: str
) -> None:
    with pytest.raises(ExternalToolError) as caught:
        mount_overlay([tmp_path / "missing"], tmp_path / "persist", tmp_path / "root")
    assert "missing" in str(caught.value.where)


@pytest.mark.root
def test_read_only_bind_mount_refuses_writes(tmp_path: Path, mounts: list[Path]) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    (source / "msg").write_text("hi")
    bind_mount(source, target, readonly=True)
    mounts.append(target)
    assert (target / "msg").read_text() == "hi"
    with pytest.raises(OSError) as caught:
        (target / "new").write_text("x")
    assert caught.value.errno == errno.EROFS


@pytest.mark.root
def test_busy_mount_is_detached_lazily(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    (source / "msg").write_text("hi")
    bind_mount(source, target)
    busy = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chdir(target)  # makes a plain umount fail with EBUSY
        unmount(target)
        assert not is_mountpoint(target)
    finally:
        os.chdir("/")
        os.close(busy)


@pytest.mark.root
def test_unmounting_what_is_not_mounted_is_a_noop(tmp_path: Path) -> None:
    unmount(tmp_path)
    assert not is_mountpoint(tmp_path)

"""Reproducible squashfs builds with the real mksquashfs."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from pvinit import durable
from pvinit.build.squashfs import make_squashfs, parse_progress
from pvinit.errors import BadInputError, ExternalToolError, NotFoundError
from tests.conftest import need_tool


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "etc" / "config").write_text("rate=5\n")
    (root / "bin" / "alias").symlink_to("tool")
    return root


@pytest.fixture(autouse=True)
def _mksquashfs() -> None:
    need_tool("mksquashfs")


def test_same_tree_gives_identical_bytes_even_with_other_times(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    make_squashfs(tree, tmp_path / "a.squashfs")
    for path in tree.rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    make_squashfs(tree, tmp_path / "b.squashfs")
    assert sha256_file(tmp_path / "a.squashfs") == sha256_file(tmp_path / "b.squashfs")


def test_copies_of_a_tree_made_separately_give_identical_bytes(tmp_path: Path) -> None:
    make_squashfs(make_tree(tmp_path / "one"), tmp_path / "a.squashfs", processors=1)
    make_squashfs(make_tree(tmp_path / "two"), tmp_path / "b.squashfs", processors=2)
    assert sha256_file(tmp_path / "a.squashfs") == sha256_file(tmp_path / "b.squashfs")


def test_changing_one_file_changes_the_image(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    make_squashfs(tree, tmp_path / "a.squashfs")
    (tree / "etc" / "config").write_text("rate=6\n")
    make_squashfs(tree, tmp_path / "b.squashfs")
    assert sha256_file(tmp_path / "a.squashfs") != sha256_file(tmp_path / "b.squashfs")


def test_changing_a_mode_changes_the_image(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    make_squashfs(tree, tmp_path / "a.squashfs")
    (tree / "etc" / "config").chmod(0o600)
    make_squashfs(tree, tmp_path / "b.squashfs")
    assert sha256_file(tmp_path / "a.squashfs") != sha256_file(tmp_path / "b.squashfs")


def test_image_holds_the_tree(tmp_path: Path) -> None:
    tool = need_tool("unsquashfs")
    tree = make_tree(tmp_path / "tree")
    image = tmp_path / "a.squashfs"
    make_squashfs(tree, image)
    listing = subprocess.run(
        [tool, "-lls", str(image)], check=True, capture_output=True, text=True
    ).stdout
    assert "squashfs-root/etc/config" in listing
    assert "squashfs-root/bin/alias -> tool" in listing
    assert "-rwxr-xr-x root/root" in listing
    assert oct(image.stat().st_mode & 0o777) == "0o644"


def test_existing_output_is_replaced_and_no_temp_file_is_left(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "root.squashfs").write_bytes(b"old")
    make_squashfs(tree, out_dir / "root.squashfs")
    assert (out_dir / "root.squashfs").read_bytes()[:4] == b"hsqs"
    assert [p.name for p in out_dir.iterdir()] == ["root.squashfs"]


def test_failing_mksquashfs_raises_with_its_stderr_and_keeps_old_output(
    tmp_path: Path,
) -> None:
    tree = make_tree(tmp_path / "tree")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "root.squashfs").write_bytes(b"old")
    with pytest.raises(ExternalToolError, match="processors should be 1 or larger") as info:
        make_squashfs(tree, out_dir / "root.squashfs", processors=0)
    assert info.value.exit_code == 10
    assert (out_dir / "root.squashfs").read_bytes() == b"old"
    assert [p.name for p in out_dir.iterdir()] == ["root.squashfs"]


def test_missing_mksquashfs_is_an_external_tool_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if Path("/usr/sbin/mksquashfs").exists():
        pytest.skip("mksquashfs is also in /usr/sbin, which is searched regardless of PATH")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExternalToolError, match="squashfs-tools"):
        make_squashfs(make_tree(tmp_path / "tree"), tmp_path / "a.squashfs")


def test_missing_source_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        make_squashfs(tmp_path / "nope", tmp_path / "a.squashfs")
    assert info.value.where == str(tmp_path / "nope")
    assert not (tmp_path / "a.squashfs").exists()


def test_source_that_is_a_file_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError):
        make_squashfs(tmp_path / "file", tmp_path / "a.squashfs")


def test_missing_output_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        make_squashfs(make_tree(tmp_path / "tree"), tmp_path / "no" / "a.squashfs")
    assert info.value.where == str(tmp_path / "no")


def test_crash_before_rename_leaves_the_old_image(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    out = tmp_path / "root.squashfs"
    out.write_bytes(b"old")
    durable.arm_crash("squashfs.rename")
    try:
        with pytest.raises(durable.SimulatedCrash):
            make_squashfs(tree, out)
        assert "squashfs.write" in durable.seen_points()
    finally:
        durable.arm_crash(None)
    assert out.read_bytes() == b"old"


def test_progress_is_reported_in_order_and_ends_at_one(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for index in range(400):
        # incompressible, distinct blocks so mksquashfs has real work to show
        (tree / f"f{index:03}").write_bytes(hashlib.sha256(str(index).encode()).digest() * 2048)
    seen: list[float] = []
    make_squashfs(tree, tmp_path / "a.squashfs", progress=seen.append)
    assert seen[-1] == 1.0
    assert len(seen) >= 2
    assert all(0.0 <= value <= 1.0 for value in seen)
    assert seen == sorted(seen)


def test_progress_parser_takes_the_last_complete_bar() -> None:
    output = b"\r[==   ]  10/200   5%\r[=====|  ]  150/200  75%\r[======"
    assert parse_progress(output) == 0.75
    assert parse_progress(b"\r[=====  ]  12/4") is None
    assert parse_progress(b"nothing here") is None
    assert parse_progress(b"\r[]  0/0  0%") is None


@pytest.mark.root
def test_loop_mounted_image_shows_the_tree_read_only(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    image = tmp_path / "a.squashfs"
    make_squashfs(tree, image)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", "-t", "squashfs", str(image), str(mnt)],
                   check=True, capture_output=True)
    try:
        assert (mnt / "etc" / "config").read_text() == "rate=5\n"
        assert str((mnt / "bin" / "alias").readlink()) == "tool"
        info = (mnt / "bin" / "tool").stat()
        assert (info.st_mode & 0o777, info.st_uid, info.st_mtime) == (0o755, 0, 0)
        with pytest.raises(OSError, match="Read-only file system"):
            (mnt / "new").write_text("x")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)

"""durable: save_file's all-or-nothing replace, makedirs, remove_tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvinit import durable


def test_remove_tree_removes_everything_but_never_follows_a_symlink_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep" / "file").write_text("precious")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "deep").write_text("x")
    (tree / "top").write_text("y")
    (tree / "a" / "to_dir").symlink_to(outside / "keep")
    (tree / "to_file").symlink_to(outside / "keep" / "file")
    (tree / "dangling").symlink_to(tmp_path / "nowhere")

    durable.remove_tree(tree)

    assert not tree.exists()
    assert (outside / "keep" / "file").read_text() == "precious"


def test_remove_tree_of_a_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        durable.remove_tree(tmp_path / "missing")


def _left_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_save_file_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with durable.save_file(target, mode=0o600, name="t") as handle:
        handle.write(b"new")
        assert target.read_bytes() == b"old"  # nothing visible before the rename
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600
    assert _left_in(tmp_path) == ["f"]
    assert durable.seen_points()[-2:] == ["t.write", "t.rename"]


def test_save_file_that_fails_midway_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), durable.save_file(target) as handle:
        handle.write(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert _left_in(tmp_path) == ["f"]


@pytest.mark.parametrize("point", ["t.write", "t.rename"])
def test_power_cut_inside_save_file_leaves_the_old_file(tmp_path: Path, point: str) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    durable.arm_crash(point)
    try:
        with pytest.raises(durable.SimulatedCrash), durable.save_file(target, name="t") as out:
            out.write(b"new")
    finally:
        durable.arm_crash(None)
    assert target.read_bytes() == b"old"
    assert _left_in(tmp_path) == ["f"]


def test_makedirs_creates_every_missing_parent_and_accepts_existing(tmp_path: Path) -> None:
    durable.makedirs(tmp_path / "a" / "b" / "c")
    durable.makedirs(str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b" / "c").is_dir()


def test_temp_path_is_a_hidden_sibling_of_the_target(tmp_path: Path) -> None:
    temp = durable.temp_path(tmp_path / "state.json")
    assert Path(temp).parent == tmp_path
    assert Path(temp).name.startswith(".state.json.") and temp.endswith(".tmp")
    assert temp != durable.temp_path(tmp_path / "state.json")

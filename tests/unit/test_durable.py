"""durable.remove_tree: what a boot uses to clear boot-scope volumes."""

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

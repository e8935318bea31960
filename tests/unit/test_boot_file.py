"""The file backend and open_boot_env."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvinit.boot import FileBootEnv, GrubEnv, UBootEnv, open_boot_env
from pvinit.errors import BadInputError


def test_missing_file_is_an_empty_environment(tmp_path: Path) -> None:
    assert FileBootEnv(tmp_path / "none").read() == {}


def test_update_writes_sorted_key_value_lines(tmp_path: Path) -> None:
    env = FileBootEnv(tmp_path / "boot" / "env")
    env.update({"pv_try": "2", "pv_rev": "1"})
    assert Path(env.path).read_text() == "pv_rev=1\npv_try=2\n"
    env.update({"pv_try": None, "pv_rev": "2"})
    assert Path(env.path).read_text() == "pv_rev=2\n"


def test_values_may_hold_equals(tmp_path: Path) -> None:
    env = FileBootEnv(tmp_path / "env")
    env.update({"args": "console=ttyS0 root=/dev/vda"})
    assert env.read() == {"args": "console=ttyS0 root=/dev/vda"}


def test_bad_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("# comment\n\npv_rev=1\ngarbage\n")
    snapshot = FileBootEnv(path).inspect()
    assert snapshot.values == {"pv_rev": "1"}
    assert snapshot.problems == (f"{path}:4: line is not key=value, ignored",)


def test_a_bad_change_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    env = FileBootEnv(tmp_path / "env")
    env.update({"pv_rev": "1"})
    with pytest.raises(BadInputError) as info:
        env.update({"pv_try": "2", "bad\nkey": "x"})
    assert "bad\\nkey" in str(info.value)
    assert env.read() == {"pv_rev": "1"}


def test_open_boot_env_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_boot_env("file", tmp_path / "e"), FileBootEnv)
    assert isinstance(open_boot_env("grub", tmp_path / "e"), GrubEnv)
    uboot = open_boot_env("uboot", tmp_path / "e", size="0x2000", redundant=True)
    assert isinstance(uboot, UBootEnv)
    assert (uboot.size, uboot.redundant) == (0x2000, True)


def test_open_boot_env_refuses_unknown_kinds_and_options(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="barebox"):
        open_boot_env("barebox", tmp_path / "e")
    with pytest.raises(BadInputError, match="size"):
        open_boot_env("grub", tmp_path / "e", size=1024)
    with pytest.raises(BadInputError):
        open_boot_env("uboot", tmp_path / "e", size="big")
    with pytest.raises(BadInputError):
        open_boot_env("uboot", tmp_path / "e", redundant="yes")

"""The supervisor's command line, as PID 1 writes it (parsed without argparse)."""

from __future__ import annotations

import _thread
from pathlib import Path

import pytest

from pvinit.supervisor.main import THREAD_STACK_BYTES, main, parse_args


def test_options_in_both_spellings_are_understood(tmp_path: Path) -> None:
    config = parse_args(["--storage", str(tmp_path), "--factory=f.pvb", "--stop-grace", "2.5"])
    assert config.storage == tmp_path
    assert config.factory == Path("f.pvb").absolute()
    assert config.stop_grace == 2.5


def test_storage_comes_from_the_environment_when_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PVINIT_STORAGE", str(tmp_path))
    monkeypatch.setenv("PVINIT_DEV", "1")
    config = parse_args([])
    assert config.storage == tmp_path
    assert config.run_dir == tmp_path / "run"  # dev mode keeps run/ under the storage
    assert config.factory is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unknown argument '--bogus'"),
        (["--storage"], "--storage needs a value"),
        (["--stop-grace", "soon"], "--stop-grace needs seconds"),
    ],
)
def test_a_bad_word_exits_2_naming_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_supervisor_threads_get_stacks_too_small_to_hold_a_huge_page() -> None:
    """Under THP ``always`` an 8 MiB thread stack costs a whole 2 MiB page (seen on the VM)."""
    before = _thread.stack_size()
    try:
        assert main(["--bogus"]) == 2
        assert _thread.stack_size() == THREAD_STACK_BYTES
        assert THREAD_STACK_BYTES < 2 << 20
    finally:
        _thread.stack_size(before)

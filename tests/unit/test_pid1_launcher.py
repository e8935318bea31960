"""The dev launcher's own start: its options, its helpers and what it imports (issue 3)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pvinit.cli.pvinit import LaunchArgs, _quick_parse, parse_launch_args, parse_with_argparse
from pvinit.pid1.launcher import find_program, shell_words

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "words",
    [
        ["--storage", "/s"],
        ["--storage=/s", "--max-boots", "3", "--status-interval=0.5"],
        ["--factory", "b.pvb", "--storage", "/s", "--stop-grace", "2", "--supervisor-cmd", "x y"],
        ["--storage", "/a", "--storage", "/b"],  # the last one wins
        ["--kill-grace=1", "--storage", "/s", "plain"],
    ],
)
def test_the_quick_parser_reads_what_argparse_reads(words: list[str]) -> None:
    quick = _quick_parse(words)
    assert quick is not None
    assert quick == parse_with_argparse(words)


@pytest.mark.parametrize(
    "words",
    [
        [],  # --storage missing
        ["--storage"],  # its value missing
        ["--storage", "/s", "--max-boots", "many"],
        ["--storage", "/s", "--status-interval", "-1"],  # looks like an option: argparse judges
        ["--stor", "/s"],  # an abbreviation
        ["--storage", "/s", "--help"],
        ["--version"],
    ],
)
def test_anything_unusual_is_left_to_argparse(words: list[str]) -> None:
    assert _quick_parse(words) is None


def test_argparse_still_answers_abbreviations_help_and_bad_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse_launch_args(["--stor", "/s", "--max-b", "2"]) == LaunchArgs("/s", max_boots=2)
    with pytest.raises(SystemExit) as exit_info:
        parse_launch_args(["--storage", "/s", "--max-boots", "many"])
    assert exit_info.value.code == 2
    assert "--max-boots: invalid int value: 'many'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        parse_launch_args([])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --storage" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        parse_launch_args(["--help"])
    assert exit_info.value.code == 0
    assert "--status-interval SECONDS" in capsys.readouterr().out


def test_shell_words_split_back_as_shlex_would() -> None:
    words = ["/usr/bin/unshare", "--pid", "a b", "it's", "", "$HOME", "x=1,y:2", "tab\there"]
    line = shell_words(words)
    assert shlex.split(line) == words
    assert line.startswith("/usr/bin/unshare --pid 'a b' ")


def test_find_program_finds_what_shutil_which_finds() -> None:
    for name in ("unshare", "sh", "no-such-program-here"):
        assert find_program(name) == shutil.which(name)


def test_the_launch_path_imports_no_heavy_module(tmp_path: Path) -> None:
    """Everything the launcher imports before ``unshare`` runs is in front of every dev boot.

    ``pathlib`` with ``re``/``urllib.parse``/``ipaddress`` was ~7 ms, ``argparse``
    ~2 ms past ``re``, ``subprocess``/``threading``/``shutil``/``enum``/
    ``contextlib`` a few more: ~21 ms of imports before, ~3.5 ms now.
    """
    heavy = ["argparse", "collections", "contextlib", "enum", "json", "pathlib", "re",
             "shutil", "signal", "subprocess", "threading", "typing"]
    code = (
        "import sys\n"
        "from pvinit.cli.pvinit import parse_launch_args\n"
        f"args = parse_launch_args(['--storage', {str(tmp_path)!r}, '--stop-grace', '2'])\n"
        "from pvinit.pid1.launcher import Launcher, LaunchConfig, choose_boot\n"
        "launcher = Launcher(LaunchConfig(storage=args.storage, pid1_args=args.passthrough))\n"
        "print(choose_boot(args.storage), launcher.command()[0])\n"
        f"print(*[n for n in {heavy!r} if n in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-P", "-c", code],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        check=True,
    )
    choice, held = out.stdout.splitlines()
    assert choice.startswith("{'pv_boot_trying': '0'}")  # it really chose a boot
    assert held.split() == []

"""What PID 1 and the dev launcher start with: options, interpreter flags, imports (issue 3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pvinit.pid1 import suppress
from pvinit.pid1.init import (
    DEFAULT_SUPERVISOR,
    Pid1Config,
    interpreter_flags,
    parse_args,
    signal_name,
    split_options,
)
from pvinit.pid1.launcher import LaunchConfig, Launcher, site_dirs
from pvinit.pid1.mounts import MountEntry, MountReport, MountSpec
from pvinit.pid1.record import Action, ShutdownRecord

REPO = Path(__file__).resolve().parents[2]


def test_options_take_values_spaced_or_after_an_equals_sign() -> None:
    found, unknown = split_options(["--storage=/s", "--stop-grace", "2", "--dev", "quiet", "a=b"])
    assert found == {"--storage": "/s", "--stop-grace": "2", "--dev": ""}
    assert unknown == ["quiet", "a=b"]


def test_option_missing_its_value_or_flag_given_one_is_refused() -> None:
    with pytest.raises(ValueError, match="--storage needs a value"):
        split_options(["--dev", "--storage"])
    with pytest.raises(ValueError, match="--dev takes no value"):
        split_options(["--dev=1"])


def test_grace_that_is_not_a_number_is_refused_naming_the_option() -> None:
    with pytest.raises(ValueError, match="--kill-grace"):
        parse_args(["--kill-grace", "soon"])


def test_defaults_without_options() -> None:
    config, unknown = parse_args([])
    assert unknown == []
    assert config.storage == "/storage"
    assert config.supervisor_argv == DEFAULT_SUPERVISOR
    assert config.watchdog_path == "/dev/watchdog"
    assert (config.stop_grace, config.kill_grace, config.dev) == (10.0, 3.0, False)
    assert parse_args(["--no-watchdog"])[0].watchdog_path is None


def _flags_of(*flags: str) -> tuple[str, ...]:
    code = "from pvinit.pid1.init import interpreter_flags; print(' '.join(interpreter_flags()))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *site_dirs()]))
    out = subprocess.run(  # cwd: under -E (no PYTHONPATH) pvinit comes from the cwd
        [sys.executable, *flags, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return tuple(out.stdout.split())


def test_supervisor_inherits_the_isolation_optimisation_and_site_flags_of_pid1() -> None:
    assert _flags_of("-S", "-P") == ("-P", "-S")
    assert _flags_of("-OO", "-S", "-P") == ("-OO", "-P", "-S")
    assert _flags_of("-ESOO") == ("-OO", "-E", "-S")
    assert _flags_of("-E", "-s", "-S") == ("-E", "-s", "-S")
    assert _flags_of() == ()
    assert DEFAULT_SUPERVISOR[1:-2] == interpreter_flags()


def test_launcher_runs_pid1_without_site_and_passes_the_site_dirs(tmp_path: Path) -> None:
    launcher = Launcher(LaunchConfig(storage=str(tmp_path)))
    command = launcher.command()
    at = command.index(sys.executable)
    script = str(REPO / "pvinit" / "pid1" / "__main__.py")
    assert command[at + 1 : at + 5] == ["-OO", "-S", "-P", script]
    path = launcher.python_path("/extra").split(os.pathsep)
    assert path[:2] == [str(REPO), "/extra"]
    assert all(d in path for d in site_dirs())


def test_launcher_runs_another_interpreter_plainly(tmp_path: Path) -> None:
    launcher = Launcher(LaunchConfig(storage=str(tmp_path), python="/usr/bin/false"))
    command = launcher.command()
    at = command.index("/usr/bin/false")
    assert command[at + 1 : at + 4] == ["-m", "pvinit.pid1", "--dev"]
    assert launcher.python_path("") == str(REPO)


def _held_after_importing_pid1(*names: str) -> list[str]:
    """Which of ``names`` a fresh ``python -S -P`` holds once it imported PID 1's code."""
    asked = sorted(names)
    code = f"import sys, pvinit.pid1.init\nprint(*[n for n in {asked!r} if n in sys.modules])"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-S", "-P", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_pid1_imports_neither_dataclasses_argparse_pathlib_nor_openssl() -> None:
    heavy = ("dataclasses", "argparse", "inspect", "hashlib", "json", "subprocess", "pathlib")
    assert _held_after_importing_pid1(*heavy) == []


def test_pid1_imports_neither_typing_nor_re() -> None:
    """PID 1 holds what it imports for life, and the supervisor forked from it copies it.

    ``typing`` (with the ``re`` it imports) was ~1 MiB of PID 1's 5 MiB RssAnon,
    for five ``NamedTuple`` records and ``NoReturn`` (issue 3): the records
    are :class:`pvinit.pid1.SlotsRecord`, ``TYPE_CHECKING`` is a local constant.
    """
    assert _held_after_importing_pid1("typing", "re", "dataclasses", "pathlib") == []


def test_pid1_imports_neither_signal_enum_contextlib_nor_collections() -> None:
    """What PID 1 imports before it forks the supervisor, the device holds twice.

    The forked supervisor's reference counting copies every page of PID 1's
    heap it touches.  ``signal`` builds its enums with ``enum``, ``contextlib``
    brings ``collections`` and ``functools``: 4.0 -> 3.2 MiB RssAnon once PID 1
    ran on ``_signal`` and its own ``suppress``.
    """
    assert _held_after_importing_pid1(
        "signal", "enum", "contextlib", "collections", "functools", "site"
    ) == []


def test_pid1_suppress_swallows_only_the_kinds_it_names() -> None:
    with suppress(OSError, ValueError):
        raise FileNotFoundError(2, "gone")
    with pytest.raises(KeyError), suppress(OSError):
        raise KeyError("k")
    with suppress(OSError):
        pass


def test_shutdown_actions_are_three_members_found_by_value() -> None:
    assert [Action.of(v) for v in ("reboot", "halt", "poweroff")] == [
        Action.REBOOT, Action.HALT, Action.POWEROFF]
    assert Action.of("halt") is Action.HALT and Action.HALT.name == "HALT"
    with pytest.raises(ValueError, match="unknown action 'kexec'"):
        Action.of("kexec")


def test_signals_are_named_as_the_signal_module_names_them() -> None:
    for signo in sorted(signal.valid_signals()):
        expected = signal.Signals(signo).name if signo in signal.Signals._value2member_map_ \
            else f"signal {signo}"
        assert signal_name(signo) == expected
    assert signal_name(999) == "signal 999"


def test_pid1_records_compare_and_print_by_their_fields() -> None:
    record = ShutdownRecord(Action.HALT, "SIGUSR1 from pid 0", "b1", 12.5)
    assert record == ShutdownRecord(Action.HALT, "SIGUSR1 from pid 0", boot_id="b1", time=12.5)
    assert record != ShutdownRecord(Action.HALT, "SIGUSR1 from pid 0", "b2", 12.5)
    assert record != MountEntry(1, 0, "/", "ext4", "/dev/root")
    assert len({record, ShutdownRecord(Action.HALT, "SIGUSR1 from pid 0", "b1", 12.5)}) == 1
    assert repr(record) == (
        "ShutdownRecord(action=<Action.HALT: 'halt'>, reason='SIGUSR1 from pid 0',"
        " boot_id='b1', time=12.5)"
    )
    assert (MountReport().mounted, MountReport().failed) == ((), ())
    assert MountSpec("/run", "tmpfs", "tmpfs").data is None
    assert Pid1Config(dev=True) == Pid1Config(dev=True)
    assert Pid1Config(dev=True) != Pid1Config()

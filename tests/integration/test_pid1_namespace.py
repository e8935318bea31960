"""PID 1 as PID 1 of a fresh PID + mount namespace: reaping, signals, failures, reboots.

Each test boots the real PID 1 (``python3 -m pvinit.pid1 --dev``) through
the launcher with a small shell or Python script as its supervisor, and
reads what happened from the launcher's view of each boot and from the
``last-shutdown`` record PID 1 wrote.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pvinit.pid1.launcher import BootEnd, BootResult, LaunchConfig, Launcher
from pvinit.pid1.record import Action, read_record

pytestmark = pytest.mark.root


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll until ``predicate`` holds; the timeout only bounds a broken run."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_for_file(path: Path, timeout: float = 15.0) -> str:
    wait_for(path.exists, str(path), timeout)
    return path.read_text()


class Booted:
    """A launcher running in a background thread, booting PID 1 with ``supervisor``."""

    def __init__(
        self,
        storage: Path,
        supervisor: str,
        *,
        max_boots: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        extra = dict(env or {})
        self.lines: list[str] = []
        self.launcher = Launcher(
            LaunchConfig(
                storage=str(storage),
                max_boots=max_boots,
                pid1_args=(
                    "--supervisor-cmd", supervisor, "--stop-grace", "3", "--kill-grace", "1"
                ),
                stop_timeout=15.0,
            ),
            choose=lambda _storage: dict(extra),
            log=self.lines.append,
        )
        self.results: list[BootResult] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.results = self.launcher.run()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            self.error = error

    @property
    def init_pid(self) -> int:
        wait_for(lambda: self.launcher.init_pid is not None, "the namespace's PID 1")
        pid = self.launcher.init_pid
        assert pid is not None
        return pid

    def finish(self, timeout: float = 30.0) -> list[BootResult]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.launcher.request_poweroff()
            self._thread.join(20)
            raise AssertionError("the launcher did not finish:\n" + "\n".join(self.lines))
        if self.error is not None:
            raise self.error
        assert self.results is not None
        return self.results

    def poweroff(self) -> list[BootResult]:
        self.launcher.request_poweroff()
        return self.finish()


def sh(script: str) -> str:
    """A supervisor command line running ``script`` with /bin/sh."""
    quoted = script.replace("'", "'\"'\"'")
    return f"/bin/sh -c '{quoted}'"

# A supervisor that says it is ready, and says it was stopped when SIGTERMed.
POLITE = sh(
    'trap "echo stopped > $PVINIT_STORAGE/stopped; exit 0" TERM; '
    "echo ready > $PVINIT_STORAGE/ready; "
    "while :; do sleep 0.05; done"
)

ORPHAN_MAKER = textwrap.dedent(
    """
    import os, sys, time
    out = sys.argv[1]
    for i in range(1000):
        child = os.fork()
        if child == 0:
            if os.fork() == 0:  # the grandchild: orphaned as soon as its parent exits
                if i % 2:
                    os.execv("/bin/sleep", ["sleep", "0.%d" % (i % 5 + 1)])
                os._exit(0)
            os._exit(0)
        os.waitpid(child, 0)

    def census():
        zombies = alive = 0
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in (1, os.getpid()):
                continue
            try:
                with open("/proc/%s/stat" % name) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state == "Z":
                zombies += 1
            else:
                alive += 1
        return zombies, alive

    deadline = time.monotonic() + 8
    zombies, alive = census()
    while (zombies or alive) and time.monotonic() < deadline:
        time.sleep(0.05)
        zombies, alive = census()
    with open(out + ".tmp", "w") as f:
        f.write("%d %d\\n" % (zombies, alive))
    os.rename(out + ".tmp", out)
    time.sleep(60)
    """
)


def test_thousand_orphaned_grandchildren_are_all_reaped(tmp_path: Path) -> None:
    script = tmp_path / "orphans.py"
    script.write_text(ORPHAN_MAKER)
    result = tmp_path / "census"
    boot = Booted(tmp_path / "storage", f"{sys.executable} {script} {result}")
    zombies, alive = map(int, wait_for_file(result, timeout=30).split())
    results = boot.poweroff()
    assert (zombies, alive) == (0, 0)
    assert [r.end for r in results] == [BootEnd.POWEROFF]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_from_outside_end_in_an_orderly_reboot(
    tmp_path: Path, sig: signal.Signals
) -> None:
    storage = tmp_path / "storage"
    boot = Booted(storage, POLITE)
    wait_for_file(storage / "ready")
    os.kill(boot.init_pid, sig)
    results = boot.finish()
    assert [r.end for r in results] == [BootEnd.REBOOT]
    record = results[0].record
    assert record is not None
    assert record.action is Action.REBOOT
    assert sig.name in record.reason
    assert (storage / "stopped").read_text() == "stopped\n"  # the supervisor was asked to stop


def test_sighup_from_outside_is_ignored(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    boot = Booted(storage, POLITE)
    wait_for_file(storage / "ready")
    os.kill(boot.init_pid, signal.SIGHUP)
    # Both are queued; the lower-numbered SIGHUP is read first.  Had it
    # rebooted (or killed PID 1), SIGUSR2's power-off would not be the end.
    os.kill(boot.init_pid, signal.SIGUSR2)
    results = boot.finish()
    assert [r.end for r in results] == [BootEnd.POWEROFF]
    record = results[0].record
    assert record is not None
    assert (record.action, record.reason) == (Action.POWEROFF, "SIGUSR2 from pid 0")


def test_sigusr1_halts_and_the_launcher_stops(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    boot = Booted(storage, POLITE, max_boots=3)
    wait_for_file(storage / "ready")
    os.kill(boot.init_pid, signal.SIGUSR1)
    results = boot.finish()
    assert [r.end for r in results] == [BootEnd.POWEROFF]
    assert results[0].record is not None
    assert results[0].record.action is Action.HALT


def test_exception_inside_the_loop_ends_in_an_orderly_reboot(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    boot = Booted(storage, POLITE, env={"PVINIT_TEST_RAISE": "loop"})
    wait_for_file(storage / "ready")
    os.kill(boot.init_pid, signal.SIGHUP)  # wake the loop; the hook raises right after
    results = boot.finish()
    assert [r.end for r in results] == [BootEnd.REBOOT]
    record = results[0].record
    assert record is not None
    assert record.action is Action.REBOOT
    assert "internal error: RuntimeError: injected failure at loop" in record.reason
    assert (storage / "stopped").exists()  # orderly: the supervisor was stopped first


def test_exception_during_shutdown_still_reboots(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    boot = Booted(storage, POLITE, env={"PVINIT_TEST_RAISE": "shutdown"})
    wait_for_file(storage / "ready")
    os.kill(boot.init_pid, signal.SIGUSR2)
    results = boot.finish()
    # The power-off failed half-way; PID 1 still ended with the requested reboot(2).
    assert [r.end for r in results] == [BootEnd.POWEROFF]
    assert not (storage / "stopped").exists()


def test_killed_supervisor_makes_pid1_reboot(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    boot = Booted(storage, sh("echo ready > $PVINIT_STORAGE/ready; kill -KILL $$"))
    results = boot.finish()
    assert [r.end for r in results] == [BootEnd.REBOOT]
    assert results[0].record is not None
    assert results[0].record.reason == "supervisor killed by SIGKILL"


def test_supervisor_that_cannot_start_makes_pid1_reboot(tmp_path: Path) -> None:
    boot = Booted(tmp_path / "storage", "/nonexistent/supervisor")
    results = boot.finish()
    assert [r.end for r in results] == [BootEnd.REBOOT]
    assert results[0].record is not None
    assert "supervisor could not start" in results[0].record.reason


def test_supervisor_starts_with_empty_mask_default_dispositions_own_session(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "storage"
    # exec: cat *is* the supervisor process, reading its own state as PID 1 left it.
    boot = Booted(storage, sh("exec cat /proc/self/status /proc/self/stat > $PVINIT_STORAGE/out"))
    results = boot.finish()
    assert [r.end for r in results] == [BootEnd.REBOOT]  # the supervisor exited
    *status_lines, stat = (storage / "out").read_text().splitlines()
    status = dict(line.split(":\t", 1) for line in status_lines)
    assert int(status["SigBlk"], 16) == 0
    assert int(status["SigIgn"], 16) == 0
    assert status["PPid"] == "1"
    pid = int(stat.split()[0])
    session = int(stat.rsplit(")", 1)[1].split()[3])
    assert session == pid


def test_launcher_boots_again_after_reboot_and_stops_after_poweroff(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    supervisor = sh(
        'n=$(cat "$PVINIT_STORAGE/boots" 2>/dev/null || echo 0); n=$((n + 1)); '
        'echo $n > "$PVINIT_STORAGE/boots"; echo "$PV_TEST_CHOICE" >> "$PVINIT_STORAGE/choices"; '
        'if [ $n -ge 3 ]; then kill -USR2 1; sleep 30; fi'
    )
    boot = Booted(storage, supervisor, max_boots=10, env={"PV_TEST_CHOICE": "rev-7"})
    results = boot.finish()
    assert [r.end for r in results] == [BootEnd.REBOOT, BootEnd.REBOOT, BootEnd.POWEROFF]
    assert [r.number for r in results] == [1, 2, 3]
    assert (storage / "boots").read_text() == "3\n"
    assert (storage / "choices").read_text() == "rev-7\n" * 3  # choose_boot reached PID 1's env
    reasons = [r.record.reason if r.record else None for r in results]
    assert reasons == [
        "supervisor exited with status 0",
        "supervisor exited with status 0",
        reasons[2],
    ]
    assert str(reasons[2]).startswith("SIGUSR2 from pid ")
    record = read_record(storage)
    assert record is not None and record.action is Action.POWEROFF
    with open("/proc/self/mountinfo") as handle:
        assert str(storage) not in handle.read()  # the device's /run never reached the host


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_to_the_launcher_powers_the_namespace_off(
    tmp_path: Path, sig: signal.Signals
) -> None:
    storage = tmp_path / "storage"
    launcher = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys; from pvinit.cli.pvinit import main; sys.exit(main())",
            "--storage", str(storage), "--supervisor-cmd", POLITE,
            "--stop-grace", "3", "--kill-grace", "1",
        ],
        start_new_session=True,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_for_file(storage / "ready")
        # Ctrl-C on a terminal signals the whole foreground process group.
        os.killpg(launcher.pid, sig)
        _, err = launcher.communicate(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 0, err
    assert err.count("boot 1 ended: poweroff") == 1
    assert "boot 2" not in err
    record = read_record(storage)
    assert record is not None
    assert (record.action, record.reason) == (Action.POWEROFF, "SIGUSR2 from pid 0")
    assert (storage / "stopped").exists()


def test_pid1_refuses_to_run_when_not_pid1(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pvinit.pid1", "--dev", "--storage", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "not PID 1" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_dev_pid1_refuses_without_its_own_mount_namespace(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    # A PID namespace but *no* mount namespace: dev mode must not mount anything.
    proc = subprocess.run(
        [
            "unshare", "--pid", "--fork", "--kill-child", "--",
            sys.executable, "-m", "pvinit.pid1", "--dev", "--storage", str(storage),
            "--supervisor-cmd", "/bin/true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGHUP  # refused, then rebooted the namespace
    assert "needs its own mount namespace" in proc.stderr
    wait_for(lambda: read_record(storage) is not None, "the shutdown record")
    with open("/proc/self/mountinfo") as handle:
        assert str(storage) not in handle.read()

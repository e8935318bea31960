"""PID 1: start the supervisor, reap orphans, turn signals into an orderly reboot.

The loop has one fixed order, so every step is predictable:

1. wait for a signal (all are blocked and read with ``sigtimedwait``, so no
   handler ever runs in the middle of something else) or the timeout;
2. reap every exited child, noticing when the supervisor is among them;
3. act on a requested shutdown (a signal, the supervisor's death);
4. ping the watchdog.

PID 1 never exits and never raises: an exception anywhere becomes an
orderly reboot, and if that fails too it keeps calling ``reboot(2)``.  The
supervisor is a separate child with an empty signal mask and default
dispositions, in its own session; PID 1 only waits for it to notice its
death, so the supervisor keeps ``waitpid`` of its own children to itself
(NOTES: a ``waitpid(-1)`` reaper steals ``subprocess``'s children).

Signals: SIGTERM and SIGINT (Ctrl-Alt-Del) reboot, SIGUSR1 halts, SIGUSR2
and SIGPWR power off.  SIGHUP is logged and ignored: PID 1 has no
configuration to reload, and a console hangup must not reboot a device.
"""

# PID 1 does not import pathlib (~0.7 MiB for its whole life, ~3 ms per boot): os.path
# on purpose; pathlib.Path only in what runs outside PID 1 or at shutdown.
# ruff: noqa: PTH100, PTH115

from __future__ import annotations

import os
import sys
import time

from pvinit.pid1 import BOOT_ID_ENV, SlotsRecord, mounts, signal, suppress, syscalls
from pvinit.pid1.console import Console
from pvinit.pid1.record import Action, ShutdownRecord, write_record
from pvinit.pid1.spawn import ALL_CATCHABLE, reset_signals, spawn_clean
from pvinit.pid1.watchdog import Watchdog

# PID 1 does not import typing (with re ~1 MiB of its heap for life, see SlotsRecord),
# signal, enum or contextlib (see pvinit.pid1): this TYPE_CHECKING is a plain
# constant, which mypy takes as true like typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn


def interpreter_flags() -> tuple[str, ...]:
    """The flags this interpreter runs with that the supervisor should share.

    A device's ``/sbin/pvinit`` runs ``python3 -ISOO`` so the kernel's
    environment cannot change what PID 1 imports; the supervisor needs the
    same protection.  The dev launcher runs PID 1 with ``-OO -S -P`` (see
    :class:`pvinit.pid1.launcher.LaunchConfig`), which saves the supervisor
    the same start-up cost and docstrings.
    """
    flags = sys.flags
    chosen = ["-" + "O" * flags.optimize] if flags.optimize else []
    if flags.isolated:
        chosen.append("-I")  # implies -E, -s and -P
    else:
        pairs = ((flags.ignore_environment, "-E"), (flags.no_user_site, "-s"))
        chosen += [flag for on, flag in pairs if on]
        if flags.safe_path:
            chosen.append("-P")
    if flags.no_site:
        chosen.append("-S")
    return tuple(chosen)


DEFAULT_SUPERVISOR: tuple[str, ...] = (
    sys.executable or "python3",
    *interpreter_flags(),
    "-m",
    "pvinit.supervisor",
)
DEFAULT_STORAGE = "/storage"
#: What the forked supervisor shows as its command line (see :func:`fork_supervisor`).
SUPERVISOR_TITLE = "pvinit.supervisor"
TEST_RAISE_ENV = "PVINIT_TEST_RAISE"
"""Test hook: ``start``, ``loop`` or ``shutdown`` raises once at that stage."""
BOOT_REV_ENV = "pv_boot_rev"  # the bootloader's kernel command line words (boot.rule)
BOOT_TRYING_ENV = "pv_boot_trying"
TEST_HANG_ENV = "PVINIT_TEST_HANG"
"""Test hook (VM watchdog test only): ``testing`` freezes the device once the
supervisor runs a *try* revision (``pv_boot_trying=1`` and ``refs/current``
moved to ``pv_boot_rev``): every process is SIGSTOPped and PID 1 blocks
without pinging the watchdog, so the watchdog resets the machine."""

CONSOLE_RETRY = 0.05
"""Seconds between tries while the console holds PID 1's lines back (a slow serial line)."""
CONSOLE_DRAIN = 3.0
"""Seconds the console gets to take PID 1's last lines before reboot(2)."""
REBOOT_COMMANDS = {
    Action.REBOOT: syscalls.RB_AUTOBOOT,
    Action.HALT: syscalls.RB_HALT_SYSTEM,
    Action.POWEROFF: syscalls.RB_POWER_OFF,
}


def ctrl_alt_del_action(setting: str | None) -> Action:
    """What Ctrl-Alt-Del (SIGINT) asks for: reboot, unless ``PVINIT_CAD`` says otherwise.

    A kernel command line word ``PVINIT_CAD=poweroff`` (it reaches PID 1's
    environment) turns the key into a power button: the VM launcher uses it,
    since without acpid an ACPI power button never reaches init.
    """
    choices = {"reboot": Action.REBOOT, "poweroff": Action.POWEROFF, "halt": Action.HALT}
    return choices.get((setting or "reboot").strip().lower(), Action.REBOOT)


SIGNAL_ACTIONS: dict[int, Action] = {
    signal.SIGTERM: Action.REBOOT,
    signal.SIGINT: Action.REBOOT,
    signal.SIGUSR1: Action.HALT,
    signal.SIGUSR2: Action.POWEROFF,
    signal.SIGPWR: Action.POWEROFF,
}


def signal_name(signo: int) -> str:
    """``SIGTERM`` for 15; where two names share a number, the one ``signal.Signals`` uses."""
    names = sorted(name for name in dir(signal) if name.startswith("SIG")
                   and not name.startswith("SIG_") and getattr(signal, name) == signo)
    return names[0] if names else f"signal {signo}"


def describe_wait_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal_name(os.WTERMSIG(status))}"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended with wait status {status:#x}"


PROC_PID_INIT_INO = 0xEFFFFFFC
"""Inode of the machine's initial PID namespace (include/linux/proc_ns.h)."""


def in_child_pid_namespace() -> bool:
    """True when /proc shows this process outside the machine's initial PID namespace.

    Without /proc (a real boot, before anything is mounted) it is False.
    Device mode refuses to run in a child namespace: its shutdown remounts
    ``/`` read-only, which on a developer's machine would be the host's root.
    """
    try:
        link = os.readlink("/proc/self/ns/pid")
    except OSError:
        return False
    return link != f"pid:[{PROC_PID_INIT_INO}]"


def block_all_signals() -> None:
    """Block every catchable signal; PID 1 reads them with sigtimedwait only.

    Blocked signals sent to a PID namespace's init from outside are queued,
    where unblocked default-disposition ones would be dropped (NOTES).
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, ALL_CATCHABLE)


def fork_supervisor(env: dict[str, str]) -> int:
    """Start the default supervisor as a fork of PID 1 that runs it in-process (no exec).

    A fresh ``python3 -m pvinit.supervisor`` would start a new interpreter
    and import again what PID 1 already holds (the interpreter's own start,
    ``os``, ``enum``, ``ctypes``, ...): ~15-20 ms on every boot, and ~1.7 MiB
    of heap that a fork shares with PID 1 copy-on-write (``gc.freeze`` keeps
    the collector from touching, and so copying, those inherited objects).
    The child starts as an exec'd supervisor would: its own session, an
    empty signal mask, default dispositions (SIGPIPE and SIGXFSZ ignored, as
    a new interpreter sets them), no descriptor of PID 1's but 0-2, and the
    environment it is given.  Nothing here may return into PID 1's code:
    every path ends in ``os._exit``.
    """
    for stream in (sys.stdout, sys.stderr):  # or the child would write PID 1's buffers again
        with suppress(Exception):
            stream.flush()
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:
        os.setsid()
        reset_signals()
        for signo in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signo, signal.SIG_IGN)
        os.closerange(3, 1 << 16)  # the watchdog, /dev/kmsg: PID 1's alone
        os.environ.clear()
        os.environ.update(env)
        with suppress(OSError, ValueError, IndexError):
            syscalls.Libc().set_process_title(SUPERVISOR_TITLE)
        import gc

        gc.freeze()
        # No collection while the supervisor imports and boots: its imports and the
        # state it loads allocate in one burst, and each collection pass over them is
        # wasted (~2 ms of the imports alone).  It enables collection once RUNNING.
        gc.disable()
        from pvinit.supervisor.main import main as supervisor_main

        code = supervisor_main([])
    except SystemExit as leaving:
        code = leaving.code if isinstance(leaving.code, int) else 1
    except BaseException:  # noqa: BLE001 - the supervisor's crash, told; PID 1 reboots
        with suppress(BaseException):
            import traceback

            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with suppress(BaseException):
                stream.flush()
        os._exit(code)


class Pid1Config(SlotsRecord):
    """How this PID 1 runs; dev mode is PID 1 of a namespace on a developer's machine.

    A :class:`~pvinit.pid1.SlotsRecord` rather than a dataclass, as every
    record PID 1 holds: ``dataclasses`` pulls in ``inspect`` and ``ast``
    (~1.8 MiB for PID 1's whole life, ~10 ms at every boot) for five small
    records, and ``typing.NamedTuple`` pulls in ``typing`` and ``re``.
    """

    __slots__ = (  # noqa: RUF023 - constructor order
        "storage", "dev", "supervisor_argv", "stop_grace", "kill_grace", "watchdog_path", "tick",
    )  # fmt: skip

    def __init__(  # keyword-only, as PID 1 builds it
        self,
        *,
        storage: str = DEFAULT_STORAGE,
        dev: bool = False,
        supervisor_argv: tuple[str, ...] = DEFAULT_SUPERVISOR,
        stop_grace: float = 10.0,
        kill_grace: float = 3.0,
        watchdog_path: str | None = "/dev/watchdog",
        tick: float = 5.0,
    ) -> None:
        self.storage = storage
        """Absolute path of the storage dir (a str: PID 1 does not import ``pathlib``)."""
        self.dev = dev
        self.supervisor_argv = supervisor_argv
        self.stop_grace = stop_grace
        """Seconds the supervisor gets after SIGTERM to stop its containers."""
        self.kill_grace = kill_grace
        """Seconds everyone else gets between SIGTERM and SIGKILL."""
        self.watchdog_path = watchdog_path
        self.tick = tick
        """Longest wait for a signal; the watchdog interval shortens it."""


#: PID 1's options: name -> takes a value.  Parsed by hand, not with argparse
#: (~0.7 MiB and ~7 ms PID 1 would carry for one parse at boot).
OPTIONS: dict[str, bool] = {
    "--dev": False,
    "--storage": True,
    "--supervisor-cmd": True,
    "--stop-grace": True,
    "--kill-grace": True,
    "--watchdog": True,
    "--no-watchdog": False,
}
USAGE = (
    "pvinit-pid1 [--dev] [--storage DIR] [--supervisor-cmd 'SHELL WORDS'] "
    "[--stop-grace S] [--kill-grace S] [--watchdog DEV] [--no-watchdog]"
)


def split_options(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Known options (``--name value`` or ``--name=value``; flags map to "") and the rest.

    The kernel passes init every command-line word it does not know, so
    unknown words are returned, not refused.  A value-taking option at the
    end of the line is an error (ValueError), as with argparse.
    """
    found: dict[str, str] = {}
    unknown: list[str] = []
    words = list(argv)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        name, equals, value = word.partition("=")
        if name not in OPTIONS:
            unknown.append(word)
        elif not OPTIONS[name]:
            if equals:
                raise ValueError(f"{name} takes no value; usage: {USAGE}")
            found[name] = ""
        elif equals:
            found[name] = value
        elif index < len(words):
            found[name] = words[index]
            index += 1
        else:
            raise ValueError(f"{name} needs a value; usage: {USAGE}")
    return found, unknown


def parse_args(argv: Sequence[str]) -> tuple[Pid1Config, list[str]]:
    """The config and the words not understood (the kernel passes its own to init)."""
    found, unknown = split_options(argv)
    defaults = Pid1Config()
    supervisor = None
    if found.get("--supervisor-cmd"):
        import shlex  # only tests and experiments replace the supervisor

        supervisor = tuple(shlex.split(found["--supervisor-cmd"]))
    dev = "--dev" in found

    def seconds(name: str, default: float) -> float:
        try:
            return float(found[name]) if name in found else default
        except ValueError:
            raise ValueError(f"{name}: not a number of seconds: {found[name]!r}") from None

    config = Pid1Config(
        storage=os.path.abspath(found.get("--storage") or defaults.storage),
        dev=dev,
        supervisor_argv=supervisor or DEFAULT_SUPERVISOR,
        stop_grace=seconds("--stop-grace", defaults.stop_grace),
        kill_grace=seconds("--kill-grace", defaults.kill_grace),
        # Dev mode never touches the host's watchdog, whatever was asked.
        watchdog_path=(
            None if (dev or "--no-watchdog" in found) else found.get("--watchdog", "/dev/watchdog")
        ),
    )
    return config, unknown


class Pid1:
    """The state of PID 1: the supervisor's pid, a pending shutdown, the watchdog."""

    def __init__(self, config: Pid1Config, console: Console) -> None:
        self.config = config
        self.console = console
        self.supervisor_pid: int | None = None
        self.pending: tuple[Action, str] | None = None
        self.watchdog: Watchdog | None = None
        self._next_ping = 0.0
        self._private_mounts = False
        self._shutting_down = False
        self._test_raise = os.environ.get(TEST_RAISE_ENV, "")
        self._boot_id = os.environ.get(BOOT_ID_ENV, "")
        self._test_hang = os.environ.get(TEST_HANG_ENV, "") == "testing" and \
            os.environ.get(BOOT_TRYING_ENV) == "1"

    def log(self, message: str) -> None:
        self.console.log(message)

    def _hook(self, stage: str) -> None:
        if self._test_raise == stage:
            self._test_raise = ""
            raise RuntimeError(f"injected failure at {stage} ({TEST_RAISE_ENV})")

    # -- the life of PID 1 ---------------------------------------------------

    def run(self) -> NoReturn:
        """Boot, then loop forever; any exception ends in an orderly reboot."""
        try:
            self.boot()
            while True:
                self.step()
        except BaseException as error:  # noqa: BLE001 - PID 1 must turn everything into a reboot
            self.log(f"internal error: {error!r}; rebooting")
            self.shutdown(Action.REBOOT, f"internal error: {type(error).__name__}: {error}")

    def boot(self) -> None:
        mode = "dev mode" if self.config.dev else "device"
        self.log(f"starting ({mode}, storage {self.config.storage})")
        try:  # pvinit's own small heaps in 2 MiB pages: see THP in pvinit.pid1.syscalls
            syscalls.libc.set_thp_disable(True)
        except OSError as error:
            self.log(f"cannot opt out of transparent huge pages: {error}")
        if self.config.dev:
            mounts.dev_mounts(self.config.storage, log=self.log)
            self._private_mounts = True
        else:
            mounts.mount_basics(log=self.log)
            try:  # Ctrl-Alt-Del then sends SIGINT to PID 1 instead of an instant reboot
                syscalls.libc.reboot(syscalls.RB_DISABLE_CAD)
            except OSError as error:
                self.log(f"cannot disable Ctrl-Alt-Del: {error}")
        self.console.reopen()  # /proc is there now: a non-blocking console of PID 1's own
        if self.config.watchdog_path is not None:
            self.watchdog = Watchdog.open(self.config.watchdog_path)
            if self.watchdog is not None:
                self.log(f"watchdog {self.watchdog.path} armed, timeout {self.watchdog.timeout}s")
        self._hook("start")
        self.start_supervisor()

    def step(self) -> None:
        """One turn of the loop: wait, reap, act, ping, log -- always in that order."""
        info = signal.sigtimedwait(ALL_CATCHABLE, self._wait_timeout())
        self.reap()
        self._hook("loop")
        if info is not None:
            self.on_signal(info.si_signo, info.si_pid)
        if self.pending is not None:
            self.shutdown(*self.pending)
        if self._test_hang:
            self._hang_if_testing()
        self.ping_watchdog()
        self.console.flush()  # what a slow console could not take last time

    def _hang_if_testing(self) -> None:
        """TEST HOOK (``PVINIT_TEST_HANG=testing``): a device that hangs while it tests a try."""
        booted = os.environ.get(BOOT_REV_ENV, "")
        try:
            ref = os.path.join(self.config.storage, "refs", "current")  # noqa: PTH118
            with open(ref, encoding="ascii") as f:
                current = f.read().strip()
        except (OSError, UnicodeDecodeError):
            return
        if not booted or current != booted:
            return
        self.log(f"TEST HOOK {TEST_HANG_ENV}=testing: revision {booted} is testing; "
                 "freezing every process and no longer pinging the watchdog")
        self.console.drain(5.0)
        with suppress(OSError):
            os.kill(-1, signal.SIGSTOP)  # everyone but PID 1
        while True:  # hung: no reaping, no pings, until the watchdog resets the machine
            time.sleep(3600)

    def _wait_timeout(self) -> float:
        tick = min(self.config.tick, CONSOLE_RETRY) if self.console.pending else self.config.tick
        if self.watchdog is None:
            return tick
        return max(0.0, min(tick, self._next_ping - time.monotonic()))

    # -- children -------------------------------------------------------------

    def start_supervisor(self) -> None:
        argv = list(self.config.supervisor_argv)
        env = dict(os.environ)
        env["PVINIT_STORAGE"] = self.config.storage
        if self.config.dev:
            env["PVINIT_DEV"] = "1"
        try:
            if self.config.supervisor_argv == DEFAULT_SUPERVISOR:
                pid = fork_supervisor(env)
                argv = [SUPERVISOR_TITLE, "(a fork of PID 1)"]
            else:
                pid = spawn_clean(argv, env)
        except OSError as error:
            self.log(f"cannot start the supervisor {argv[0]!r}: {error}")
            self.request(Action.REBOOT, f"supervisor could not start: {error}")
            return
        self.supervisor_pid = pid
        self.log(f"supervisor started, pid {pid}: {' '.join(argv)}")

    def reap(self) -> bool:
        """Reap every exited child; False once PID 1 has no children at all."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.supervisor_pid:
                self.supervisor_pid = None
                how = describe_wait_status(status)
                self.log(f"supervisor {how}")
                if not self._shutting_down:
                    self.request(Action.REBOOT, f"supervisor {how}")

    def request(self, action: Action, reason: str) -> None:
        """Ask for a shutdown; the first request wins."""
        if self.pending is None:
            self.pending = (action, reason)

    def on_signal(self, signo: int, sender: int) -> None:
        if signo == signal.SIGCHLD:
            return
        name = signal_name(signo)
        action = SIGNAL_ACTIONS.get(signo)
        if signo == signal.SIGINT:
            action = ctrl_alt_del_action(os.environ.get("PVINIT_CAD"))
        if action is not None:
            self.request(action, f"{name} from pid {sender}")
        else:
            self.log(f"{name} from pid {sender} ignored")

    def ping_watchdog(self) -> None:
        if self.watchdog is None or time.monotonic() < self._next_ping:
            return
        try:
            self.watchdog.keepalive()
        except OSError as error:
            self.log(f"watchdog ping failed: {error}")
        self._next_ping = time.monotonic() + self.watchdog.interval

    # -- the way down ---------------------------------------------------------

    def shutdown(self, action: Action, reason: str) -> NoReturn:
        """Orderly shutdown, then reboot(2); never returns, whatever fails."""
        self._shutting_down = True
        try:
            self._orderly_shutdown(action, reason)
        except BaseException as error:  # noqa: BLE001 - nothing may stop the reboot
            self.log(f"shutdown step failed: {error!r}; going straight to {action.value}")
        self._final(action)

    def _orderly_shutdown(self, action: Action, reason: str) -> None:
        self.log(f"{action.value}: {reason}")
        self._write_record(action, reason)
        self._hook("shutdown")
        self._stop_supervisor()
        self._kill_everyone()
        syscalls.libc.sync()
        self._unmount()
        if self.watchdog is not None:
            self.watchdog.disarm()

    def _write_record(self, action: Action, reason: str) -> None:
        record = ShutdownRecord(action, reason, self._boot_id, time.time())
        try:
            write_record(self.config.storage, record)
        except OSError as error:
            self.log(f"cannot record the shutdown reason: {error}")

    def _wait_children(self, seconds: float, done: str) -> bool:
        """Reap until ``done`` holds ('supervisor' gone or 'all' children gone) or time runs out."""
        deadline = time.monotonic() + seconds
        while True:
            any_left = self.reap()
            if (done == "supervisor" and self.supervisor_pid is None) or not any_left:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            signal.sigtimedwait({signal.SIGCHLD}, min(remaining, 0.5))
            self.ping_watchdog()

    def _stop_supervisor(self) -> None:
        pid = self.supervisor_pid
        if pid is None:
            return
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_children(self.config.stop_grace, "supervisor"):
            self.log(f"supervisor still running after {self.config.stop_grace}s")

    def _kill_everyone(self) -> None:
        for sig, grace in ((signal.SIGTERM, self.config.kill_grace), (signal.SIGKILL, 5.0)):
            if not self.reap():
                return
            syscalls.libc.kill_all(sig)
            if self._wait_children(grace, "all"):
                return
            self.log(f"processes left after {signal_name(sig)}")

    def _unmount(self) -> None:
        if self.config.dev:
            # Only our private namespace's mounts below the storage dir, never a
            # read-only remount (it would change the host's superblock).
            if self._private_mounts:
                mounts.unmount_all(
                    self.config.storage, keep_api=False, remount_ro=False, log=self.log
                )
            return
        mounts.unmount_all("/", keep_api=True, remount_ro=True, log=self.log)

    def _final(self, action: Action) -> NoReturn:
        command = REBOOT_COMMANDS[action]
        attempt = 0
        self.console.drain(CONSOLE_DRAIN)
        while True:
            try:
                syscalls.libc.sync()
                syscalls.libc.reboot(command)
            except BaseException as error:  # noqa: BLE001 - keep trying forever
                if attempt % 60 == 0:
                    self.log(f"reboot(2) failed: {error!r}; retrying")
            attempt += 1
            with suppress(BaseException):  # not even a signal ends PID 1
                time.sleep(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of ``python3 -m pvinit.pid1``; returns only when refusing to run.

    It refuses when this process is not PID 1 (on a dev machine use
    ``pvinit --storage DIR``, which makes a namespace for it).  As PID 1 it
    never returns.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    block_all_signals()
    console = Console(kmsg_path=None if "--dev" in words else "/dev/kmsg")
    if os.getpid() != 1:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, ALL_CATCHABLE)
        console.log(
            f"refusing to run: not PID 1 (pid {os.getpid()}); "
            "on a dev machine use: pvinit --storage DIR"
        )
        return 2
    try:
        config, unknown = parse_args(words)
    except BaseException as error:  # noqa: BLE001 - a bad line must not end PID 1
        if "--dev" in words:
            console.log(f"bad command line {words!r}: {error!r}")
            return 2
        # A device must boot even with a broken command line: use the defaults.
        console.log(f"bad command line {words!r}: {error!r}; using defaults")
        config, unknown = Pid1Config(), []
    if unknown:
        console.log(f"ignoring arguments {unknown!r}")
    if not config.dev and in_child_pid_namespace():
        console.log("refusing device mode in a child PID namespace: use --dev")
        return 2
    pid1 = Pid1(config, console)
    pid1.run()

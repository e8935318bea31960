"""Dev mode: run pvinit's PID 1 in a new PID + mount namespace and be its bootloader.

``pvinit --storage DIR`` on a developer's machine lands here.  Each boot is
``unshare --pid --mount --fork --kill-child -- python3 -OO -S -P
.../pvinit/pid1/__main__.py --dev --storage DIR``: the same PID 1 code a
device runs, as PID 1 of a fresh namespace.  When that PID 1 calls
``reboot(2)`` the kernel ends the namespace and reports how (NOTES): killed
by SIGHUP for a restart, by SIGINT for a halt or power-off.  ``unshare``
re-raises the signal on itself, so the launcher reads it from its child's
exit and, on a restart, boots again from the same storage -- choosing what
to boot the way a bootloader would (:func:`choose_boot` applies the boot
environment rule, passes its choice as environment variables, as a kernel
command line would).

Ctrl-C or SIGTERM to the launcher asks the namespace's PID 1 for an orderly
power-off (SIGUSR2), so containers stop cleanly; ``unshare`` runs in its
own session so a terminal's Ctrl-C reaches only the launcher, never PID 1
(where SIGINT means *reboot*).

Everything the launcher does before ``unshare`` runs is in front of every
dev boot (and of the boot benchmark's from-launch figure, issue 3), so it
is lean on purpose: :func:`~pvinit.pid1.spawn.spawn_clean` and ``waitpid``
instead of ``subprocess``, one loop instead of a status thread, and neither
``pathlib``, ``enum``, ``json`` (without a settings file) nor ``re``.
``tests/unit/test_pid1_startup.py`` checks what it imports.
"""

# os.path, not pathlib: the dev launcher imports this before every boot (issue 3).
# ruff: noqa: PTH110, PTH112, PTH118, PTH120

from __future__ import annotations

import os
import sys
import time

import pvinit
from pvinit.errors import BadInputError, ExternalToolError, RefusedError
from pvinit.pid1 import BOOT_ID_ENV, HANDED_OVER_ENV, signal
from pvinit.pid1.spawn import spawn_clean
from pvinit.record import record
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from pvinit.pid1.record import ShutdownRecord

    Chooser = Callable[[str], dict[str, str]]
    """What to boot from a storage dir, as PID 1's environment words."""
    Watcher = Callable[[int], None]
    """Called every ``watch_interval`` with the host pid of the namespace's PID 1."""

POLL_SECONDS = 0.05
"""How often the launcher looks at its ``unshare`` child, the stop request and the watcher."""


class BootEnd:
    """How one boot of the namespace ended, as its parent sees it.

    Plain strings, not an ``enum``: the launcher does not import ``enum``.
    """

    REBOOT = "reboot"
    POWEROFF = "poweroff"  # halt too: the kernel reports both as SIGINT
    EXITED = "exited"  # PID 1 exited: on a device, a kernel panic
    KILLED = "killed"  # any other signal, e.g. the launcher's SIGKILL


def classify(returncode: int) -> str:
    """Map ``unshare``'s exit code (``-signo`` when killed) to a :class:`BootEnd`."""
    if returncode == -signal.SIGHUP:
        return BootEnd.REBOOT
    if returncode == -signal.SIGINT:
        return BootEnd.POWEROFF
    if returncode >= 0:
        return BootEnd.EXITED
    return BootEnd.KILLED


@record(frozen=True)
class BootResult:
    """One boot: its number (from 1), how it ended, and PID 1's record of why."""

    number: int
    end: str
    """A :class:`BootEnd` value."""
    returncode: int
    record: ShutdownRecord | None


@record(frozen=True)
class LaunchConfig:
    storage: str
    """The device's storage directory (absolute)."""
    max_boots: int | None = None
    """Stop after this many boots even if the last one asked to reboot."""
    pid1_args: tuple[str, ...] = ()
    """Extra arguments for PID 1 (``--supervisor-cmd``, graces)."""
    python: str = sys.executable
    python_flags: tuple[str, ...] = ("-OO", "-S", "-P")
    """Interpreter flags of PID 1 (which passes them on to the supervisor).

    ``-OO``: no docstrings (nor ``assert``) in the code objects PID 1 and the
    supervisor hold for the device's whole life: ~0.35 MiB of the 16 MiB
    budget (issue 3).  A device image ships the ``.opt-2.pyc`` files
    (``images/vm/build``); here Python writes them on first use.
    ``-S``: no ``site``.  In a virtualenv with an editable install, ``site``
    runs the editable finder's ``.pth`` hook (pathlib, importlib.util, ...):
    ~13 ms and ~2.5 MiB per interpreter, paid by PID 1 and the supervisor.
    The launcher passes what ``site`` would have found -- the package root
    and the launcher's own site-packages directories -- on ``PYTHONPATH``.
    ``-P``: no current directory on ``sys.path``, as PID 1 of a device.
    Only applied when :attr:`python` is the launcher's own interpreter
    (whose site directories are known); ``()`` runs it plainly.
    """
    stop_timeout: float = 30.0
    """After asking PID 1 to power off, SIGKILL the namespace after this long."""


def choose_boot(storage: str) -> dict[str, str]:
    """What to boot, as a bootloader would decide it; passed to PID 1 as environment.

    Applies the ``pv_try``/``pv_trying``/``pv_rev`` rule to the device's boot
    environment (:func:`pvinit.update.bootloader.dev_choose_boot`).
    """
    from pvinit.update.bootloader import dev_choose_boot

    return dev_choose_boot(storage)


def site_dirs() -> list[str]:
    """This interpreter's site-packages directories (what ``-S`` would leave out)."""
    return [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]


def find_program(name: str) -> str | None:
    """``name`` on ``PATH``, as a shell would find it (``shutil.which`` without ``shutil``)."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def shell_words(words: list[str]) -> str:
    """``words`` as one line a shell would split back (``shlex.join`` without ``re``)."""
    plain = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_")
    return " ".join(
        word if word and set(word) <= plain else "'" + word.replace("'", "'\"'\"'") + "'"
        for word in words
    )


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            text = handle.read()
    except OSError:
        return []
    return [int(word) for word in text.split()]


class Launcher:
    """Boots the namespace again and again until it powers off (or max boots)."""

    def __init__(
        self,
        config: LaunchConfig,
        *,
        choose: Chooser = choose_boot,
        log: Callable[[str], None] | None = None,
        watch: Watcher | None = None,
        watch_interval: float = 1.0,
    ) -> None:
        self.config = config
        self.choose = choose
        self.log = log or _stderr_log
        self.watch = watch
        self.watch_interval = watch_interval
        self.init_pid: int | None = None
        """Host pid of the running namespace's PID 1, once known."""
        self._stop_requested = False
        self._unshare = find_program("unshare") or "/usr/bin/unshare"
        self._package = os.path.dirname(os.path.realpath(pvinit.__file__))

    def _flags(self) -> tuple[str, ...]:
        same = os.path.realpath(self.config.python) == os.path.realpath(sys.executable)
        return self.config.python_flags if same else ()

    def command(self) -> list[str]:
        return [
            self._unshare, "--pid", "--mount", "--fork", "--kill-child", "--",
            self.config.python, *self._flags(), *self._entry(), "--dev",
            "--storage", self.config.storage, *self.config.pid1_args,
        ]  # fmt: skip

    def _entry(self) -> list[str]:
        """How the interpreter is told to run PID 1.

        Under ``-P`` (our own interpreter) the file ``pvinit/pid1/__main__.py``
        itself, as ``/sbin/pvinit`` is run on a device: ``-m`` would import
        ``runpy`` with ``importlib.util`` and ``importlib.machinery`` into PID 1
        (~4 ms of every boot, and memory the forked supervisor inherits).
        Without ``-P`` a script's directory would lead ``sys.path``, so
        ``-m pvinit.pid1`` it is.
        """
        if "-P" in self._flags():
            return [os.path.join(self._package, "pid1", "__main__.py")]
        return ["-m", "pvinit.pid1"]

    def python_path(self, inherited: str) -> str:
        """PYTHONPATH of PID 1: the package root, then (under ``-S``) the site dirs."""
        package_root = os.path.dirname(self._package)
        extra = site_dirs() if "-S" in self._flags() else []
        words = [package_root, *inherited.split(os.pathsep), *extra]
        return os.pathsep.join(dict.fromkeys(w for w in words if w))

    def request_poweroff(self) -> None:
        """Ask for an orderly power-off; safe from a signal handler."""
        self._stop_requested = True

    def run(self) -> list[BootResult]:
        if os.geteuid() != 0:
            raise RefusedError("dev mode needs root (it creates PID and mount namespaces)")
        if not os.path.exists(self._unshare):
            raise ExternalToolError("unshare not found", hint="install util-linux")
        from pvinit import durable

        durable.makedirs(self.config.storage)
        results: list[BootResult] = []
        number = 0
        while True:
            number += 1
            result = self.boot_once(number)
            results.append(result)
            if result.end is not BootEnd.REBOOT or self._stop_requested:
                return results
            if self.config.max_boots is not None and number >= self.config.max_boots:
                self.log(f"reached --max-boots {self.config.max_boots}: not booting again")
                return results

    def boot_once(self, number: int) -> BootResult:
        boot_id = os.urandom(8).hex()  # not secrets: it loads OpenSSL for 8 bytes
        env = dict(os.environ)
        env.update(self.choose(self.config.storage))
        env[BOOT_ID_ENV] = boot_id
        env["PYTHONPATH"] = self.python_path(env.get("PYTHONPATH", ""))
        command = self.command()
        self.log(f"boot {number}: {shell_words(command)}")
        self.init_pid = None
        env[HANDED_OVER_ENV] = str(time.monotonic_ns())  # where a bootloader hands over
        # Its own session (Ctrl-C is the launcher's) and default dispositions:
        # Python ignores SIGPIPE and SIGXFSZ, and an ignored signal survives exec.
        pid = spawn_clean(command, env)
        returncode = self._wait(pid)
        self.init_pid = None
        end = classify(returncode)
        record = self._record_of(boot_id)
        why = f" ({record.action.value}: {record.reason})" if record is not None else ""
        self.log(f"boot {number} ended: {end}{why}")
        return BootResult(number, end, returncode, record)

    def _wait(self, pid: int) -> int:
        """Wait for ``unshare`` (``pid``) to end; meanwhile find PID 1, watch, and stop it."""
        asked_at: float | None = None
        last_ask = 0.0
        next_watch = time.monotonic() + self.watch_interval
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if self.init_pid is None:
                found = _children(pid)
                self.init_pid = found[0] if found else None
            now = time.monotonic()
            if self.watch is not None and self.init_pid is not None and now >= next_watch:
                self.watch(self.init_pid)
                next_watch = now + self.watch_interval
            if self._stop_requested and self.init_pid is not None:
                if asked_at is None:
                    asked_at = now
                    self.log("asking the namespace's PID 1 to power off")
                if now - asked_at > self.config.stop_timeout:
                    self.log(f"PID 1 did not stop in {self.config.stop_timeout}s: killing it")
                    os.kill(pid, signal.SIGKILL)  # unshare --kill-child takes the namespace
                    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                if now - last_ask >= 1.0:
                    # Repeated: a signal that arrives before PID 1 blocked it is dropped.
                    try:  # noqa: SIM105 - the launcher does not import contextlib
                        os.kill(self.init_pid, signal.SIGUSR2)
                    except ProcessLookupError:
                        pass  # the namespace is ending: the next waitpid reaps unshare
                    last_ask = now
            time.sleep(POLL_SECONDS)

    def _record_of(self, boot_id: str) -> ShutdownRecord | None:
        from pvinit.pid1.record import read_record  # after the boot: off the launch path

        try:
            record = read_record(self.config.storage)
        except BadInputError as error:
            self.log(f"unreadable shutdown record: {error}")
            return None
        return record if record is not None and record.boot_id == boot_id else None


def _stderr_log(message: str) -> None:
    sys.stderr.write(f"pvinit-launcher: {message}\n")
    sys.stderr.flush()

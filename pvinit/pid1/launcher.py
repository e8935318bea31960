"""Dev mode: run pvinit's PID 1 in a new PID + mount namespace and be its bootloader.

``pvinit --storage DIR`` on a developer's machine lands here.  Each boot is
``unshare --pid --mount --fork --kill-child -- python3 -OO -S -P -m pvinit.pid1
--dev --storage DIR``: the same PID 1 code a device runs, as PID 1 of a fresh
namespace.  When that PID 1 calls ``reboot(2)`` the kernel ends the
namespace and reports how (NOTES): killed by SIGHUP for a restart, by
SIGINT for a halt or power-off.  ``unshare`` re-raises the signal on
itself, so the launcher reads it from its child's exit and, on a restart,
boots again from the same storage -- choosing what to boot the way a
bootloader would (:func:`choose_boot` applies the boot environment rule, passes its
choice as environment variables, as a kernel command line would).

Ctrl-C or SIGTERM to the launcher asks the namespace's PID 1 for an orderly
power-off (SIGUSR2), so containers stop cleanly; ``unshare`` runs in its
own session so a terminal's Ctrl-C reaches only the launcher, never PID 1
(where SIGINT means *reboot*).
"""

from __future__ import annotations

import argparse
import enum
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pvinit
from pvinit import durable
from pvinit.errors import BadInputError, ExternalToolError, PvError, RefusedError
from pvinit.pid1 import BOOT_ID_ENV
from pvinit.pid1.record import ShutdownRecord, read_record
from pvinit.record import record

Chooser = Callable[[Path], dict[str, str]]


class BootEnd(enum.Enum):
    """How one boot of the namespace ended, as its parent sees it."""

    REBOOT = "reboot"
    POWEROFF = "poweroff"  # halt too: the kernel reports both as SIGINT
    EXITED = "exited"  # PID 1 exited: on a device, a kernel panic
    KILLED = "killed"  # any other signal, e.g. the launcher's SIGKILL


def classify(returncode: int) -> BootEnd:
    """Map ``unshare``'s exit (``Popen.returncode``) to how the boot ended."""
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
    end: BootEnd
    returncode: int
    record: ShutdownRecord | None


@record(frozen=True)
class LaunchConfig:
    storage: Path
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


def choose_boot(storage: Path) -> dict[str, str]:
    """What to boot, as a bootloader would decide it; passed to PID 1 as environment.

    Applies the ``pv_try``/``pv_trying``/``pv_rev`` rule to the device's boot
    environment (:func:`pvinit.update.bootloader.dev_choose_boot`).
    """
    from pvinit.update.bootloader import dev_choose_boot

    return dev_choose_boot(storage)


def site_dirs() -> list[str]:
    """This interpreter's site-packages directories (what ``-S`` would leave out)."""
    return [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
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
    ) -> None:
        self.config = config
        self.choose = choose
        self.log = log or _stderr_log
        self.init_pid: int | None = None
        """Host pid of the running namespace's PID 1, once known."""
        self._stop = threading.Event()
        self._unshare = shutil.which("unshare") or "/usr/bin/unshare"

    def _flags(self) -> tuple[str, ...]:
        same = os.path.realpath(self.config.python) == os.path.realpath(sys.executable)
        return self.config.python_flags if same else ()

    def command(self) -> list[str]:
        return [
            self._unshare, "--pid", "--mount", "--fork", "--kill-child", "--",
            self.config.python, *self._flags(), *self._entry(), "--dev",
            "--storage", str(self.config.storage), *self.config.pid1_args,
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
            return [str(Path(pvinit.__file__).resolve().parent / "pid1" / "__main__.py")]
        return ["-m", "pvinit.pid1"]

    def python_path(self, inherited: str) -> str:
        """PYTHONPATH of PID 1: the package root, then (under ``-S``) the site dirs."""
        package_root = str(Path(pvinit.__file__).resolve().parent.parent)
        extra = site_dirs() if "-S" in self._flags() else []
        words = [package_root, *inherited.split(os.pathsep), *extra]
        return os.pathsep.join(dict.fromkeys(w for w in words if w))

    def request_poweroff(self) -> None:
        """Ask for an orderly power-off; safe from a signal handler or another thread."""
        self._stop.set()

    def run(self) -> list[BootResult]:
        if os.geteuid() != 0:
            raise RefusedError("dev mode needs root (it creates PID and mount namespaces)")
        if not Path(self._unshare).exists():
            raise ExternalToolError("unshare not found", hint="install util-linux")
        durable.makedirs(self.config.storage)
        results: list[BootResult] = []
        number = 0
        while True:
            number += 1
            result = self.boot_once(number)
            results.append(result)
            if result.end is not BootEnd.REBOOT or self._stop.is_set():
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
        self.log(f"boot {number}: {shlex.join(self.command())}")
        self.init_pid = None
        proc = subprocess.Popen(self.command(), env=env, start_new_session=True)
        returncode = self._wait(proc)
        self.init_pid = None
        end = classify(returncode)
        record = self._record_of(boot_id)
        why = f" ({record.action.value}: {record.reason})" if record is not None else ""
        self.log(f"boot {number} ended: {end.value}{why}")
        return BootResult(number, end, returncode, record)

    def _wait(self, proc: subprocess.Popen[bytes]) -> int:
        asked_at: float | None = None
        last_ask = 0.0
        while True:
            try:
                return proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
            if self.init_pid is None:
                found = _children(proc.pid)
                self.init_pid = found[0] if found else None
            if not self._stop.is_set() or self.init_pid is None:
                continue
            now = time.monotonic()
            if asked_at is None:
                asked_at = now
                self.log("asking the namespace's PID 1 to power off")
            if now - asked_at > self.config.stop_timeout:
                self.log(f"PID 1 did not stop in {self.config.stop_timeout}s: killing it")
                proc.kill()  # unshare --kill-child takes PID 1 and the namespace with it
                return proc.wait()
            if now - last_ask >= 1.0 and proc.poll() is None:
                # Repeated: a signal that arrives before PID 1 blocked it is dropped.
                os.kill(self.init_pid, signal.SIGUSR2)
                last_ask = now

    def _record_of(self, boot_id: str) -> ShutdownRecord | None:
        try:
            record = read_record(self.config.storage)
        except BadInputError as error:
            self.log(f"unreadable shutdown record: {error}")
            return None
        return record if record is not None and record.boot_id == boot_id else None


def _stderr_log(message: str) -> None:
    sys.stderr.write(f"pvinit-launcher: {message}\n")
    sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pvinit",
        description="run pvinit's PID 1 in a new PID + mount namespace (dev mode)",
        epilog="other arguments are passed to PID 1 (e.g. --supervisor-cmd, --stop-grace)",
    )
    parser.add_argument("--storage", type=Path, required=True, help="the device's storage dir")
    parser.add_argument("--max-boots", type=int, default=None, help="stop after N boots")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``pvinit --storage DIR``: 0 after a power-off, halt or --max-boots; 1 if PID 1 died."""
    args, passthrough = build_parser().parse_known_args(
        list(sys.argv[1:] if argv is None else argv)
    )
    config = LaunchConfig(
        storage=Path(args.storage).absolute(),
        max_boots=args.max_boots,
        pid1_args=tuple(passthrough),
    )
    launcher = Launcher(config)

    def on_signal(signo: int, frame: object) -> None:
        del signo, frame
        launcher.request_poweroff()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        results = launcher.run()
    except PvError as error:
        _stderr_log(str(error))
        return error.exit_code
    return 0 if results and results[-1].end in (BootEnd.POWEROFF, BootEnd.REBOOT) else 1

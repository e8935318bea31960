"""Starting a program the way PID 1 promises: own session, empty mask, default dispositions.

Shared by PID 1 (a supervisor given as a command) and the dev launcher
(``unshare``, which passes what it inherits on to the namespace's PID 1).
Imports only ``os`` and ``_signal``.
"""

from __future__ import annotations

import os

from pvinit.pid1 import signal, suppress

TYPE_CHECKING = False  # a plain constant, as in pvinit.pid1.init: no typing here
if TYPE_CHECKING:
    from collections.abc import Sequence

ALL_CATCHABLE = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
"""Signals a process can block or reset to default (SIGKILL/SIGSTOP cannot)."""


def spawn_clean(argv: Sequence[str], env: dict[str, str]) -> int:
    """Start ``argv`` in its own session with an empty signal mask and default dispositions.

    Not ``os.posix_spawn(setsigdef=...)``: glibc 2.36's posix_spawn leaves
    its two internal signals (32, 33) *ignored* in the child, and an
    ignored signal stays ignored across exec, so the supervisor would start
    with ``SigIgn`` != 0.  A plain fork resets everything Python can name;
    32 and 33 were never touched in the parent.
    An exec failure comes back through a close-on-exec pipe as OSError,
    like posix_spawn's.
    """
    read_end, write_end = os.pipe()  # both close-on-exec (PEP 446)
    pid = os.fork()
    if pid == 0:  # the child: nothing here may return into the caller's code
        try:
            os.close(read_end)
            os.setsid()
            reset_signals()
            os.execvpe(argv[0], list(argv), env)  # noqa: S606 - argv, no shell, by design
        except BaseException as error:  # noqa: BLE001 - report, then die
            code = error.errno if isinstance(error, OSError) and error.errno else 0
            with suppress(BaseException):
                os.write(write_end, str(code).encode())
        os._exit(127)
    os.close(write_end)
    try:
        report = b""
        while chunk := os.read(read_end, 64):
            report += chunk
    finally:
        os.close(read_end)
    if report:
        os.waitpid(pid, 0)
        code = int(report) if report.isdigit() else 0
        raise OSError(code, os.strerror(code), argv[0])
    return pid


def reset_signals() -> None:
    """Default disposition for every catchable signal, then an empty mask."""
    for signo in ALL_CATCHABLE:
        with suppress(OSError, ValueError):
            signal.signal(signo, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())

"""python-lxc in a short-lived fork: liblxc never enters the supervisor's memory.

``import _lxc`` maps liblxc and the libraries it links (libselinux,
libapparmor, libpcre2, libcap, libgcc_s): ~1.4 MiB PSS on a device for as
long as the supervisor runs, about a tenth of issue 3's idle budget, held to
answer questions the driver answers itself from two pidfds (the container's
init and its ``lxc-start`` monitor, see :mod:`pvinit.containers.lxc_driver`).

What only liblxc can do runs here instead: name the key of a definition it
rejects (:func:`check_definition`, once ``lxc-start`` failed), look at or
stop a container another driver started (:func:`state`, :func:`init_pid`,
:func:`stop`), start one where LXC's tools are not installed
(:func:`start`).  :func:`call` forks (:mod:`pvinit.forked`); the child
imports python-lxc's C binding ``_lxc``, does the work, answers in JSON
and exits: ~3-5 ms a call, which is why a boot makes none.  Defining, starting, watching and
stopping the containers the driver started need no liblxc in the caller.

This is the one module that imports python-lxc.  It uses only the
binding's own calls (``lxc.Container`` adds network helpers the driver never
needs, and ``import lxc`` would load ``subprocess`` and ``locale`` too), so
PyPI's python-lxc 3.0.4 and Debian's python3-lxc 5.0 both work.  Never
``destroy()``: for a ``dir:`` rootfs it deletes the rootfs, i.e. the
overlay's persistent upper dir.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Callable, Sequence
from pathlib import Path

from pvinit.containers import lxclog
from pvinit.errors import BadInputError, ExternalToolError, NotFoundError
from pvinit.forked import run_forked
from pvinit.pid1 import syscalls
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

#: Name of the throw-away container object keys are tried on (not a valid container name).
_PROBE_NAME = "_pvinit_probe_"
#: How long to wait for liblxc's monitor to finish tearing a stopped container down.
TEARDOWN_SECONDS = 10


def call(work: Callable[[Any], object], *, where: str) -> object:
    """``work(_lxc)`` in a fork of this process; its JSON-able result, or its PvError again.

    :func:`pvinit.forked.run_forked` does the forking and the answering: a
    child that dies without answering (liblxc crashed) is an
    :class:`ExternalToolError` naming ``where``, any other exception one too.
    """

    def in_child(log: Callable[[str], None]) -> object:
        del log
        import _lxc

        return work(_lxc)

    return run_forked(in_child, what="the liblxc helper", where=where)


# -- what runs in the child -------------------------------------------------


def _container(lxc: Any, lxcpath: Path, name: str) -> Any:
    """A python-lxc object for a defined container (loads its config)."""
    if not (lxcpath / name / "config").is_file():
        raise NotFoundError("no such container", where=name)
    try:
        container = lxc.Container(name, str(lxcpath))
    except RuntimeError as exc:
        raise ExternalToolError(
            f"liblxc cannot load the container config: {exc}", where=name
        ) from None
    if not container.defined:
        raise NotFoundError("no such container", where=name)
    return container


def log_size(path: Path) -> int:
    """Bytes in liblxc's log (0 before it exists): where a start's lines will begin."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def read_log(path: Path, offset: int) -> str:
    """liblxc's log from ``offset`` (the last 64 KiB at most)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(offset, log_size(path) - 65536))
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _probe_keys(
    lxc: Any, lxcpath: Path, name: str, log: Path, lines: Sequence[tuple[str, str]]
) -> None:
    """Try each key on a throw-away object, so a rejected one is named in the error.

    ``set_config_item`` of the C binding: python-lxc's Python wrapper reads
    the value back and reports ``False`` when liblxc normalised it (``SIGTERM``
    -> ``15``), and clears list keys before setting them.
    """
    probe = lxc.Container(_PROBE_NAME, str(lxcpath))
    offset = log_size(log)
    probe.set_config_item("lxc.log.file", str(log))
    for key, value in lines:
        try:
            accepted = bool(probe.set_config_item(key, value))
        except (KeyError, ValueError, TypeError):
            accepted = False
        if not accepted:
            reason = lxclog.first_error(read_log(log, offset))
            raise BadInputError(
                f"liblxc rejects {key} = {value!r}" + (f": {reason}" if reason else ""),
                where=f"{name}: lxc {key}",
            )


def check_definition(
    lxcpath: Path, name: str, log: Path, lines: Sequence[tuple[str, str]]
) -> Callable[[Any], object]:
    """Work for :func:`call`: which key of a definition liblxc rejects, if any.

    Run after ``lxc-start`` failed: liblxc then only says "Failed to load
    config"; this names the key and value (a :class:`BadInputError`), or
    tells that liblxc cannot load the file as a whole.  Answers None when
    liblxc accepts the definition, so the start failed for another reason.
    """

    def work(lxc: Any) -> None:
        _probe_keys(lxc, lxcpath, name, log, lines)
        _container(lxc, lxcpath, name)

    return work


def state(lxcpath: Path, name: str) -> Callable[[Any], object]:
    """Work for :func:`call`: liblxc's state word (STOPPED, RUNNING, ...)."""
    return lambda lxc: str(_container(lxc, lxcpath, name).state)


def init_pid(lxcpath: Path, name: str) -> Callable[[Any], object]:
    """Work for :func:`call`: the init's host pid, or None when it does not run."""

    def work(lxc: Any) -> int | None:
        pid = _container(lxc, lxcpath, name).init_pid
        return int(pid) if pid is not None and pid > 0 else None

    return work


def stop(lxcpath: Path, name: str, grace: float) -> Callable[[Any], object]:
    """Work for :func:`call`: halt signal, up to ``grace`` s, SIGKILL, wait for STOPPED."""

    def work(lxc: Any) -> None:
        container = _container(lxc, lxcpath, name)
        if not container.running:
            return
        if grace > 0:
            exit_fd = None
            with contextlib.suppress(OSError, TypeError, ValueError):
                exit_fd = os.pidfd_open(int(container.init_pid))
            container.shutdown(0)  # sends lxc.signal.halt, does not wait
            if exit_fd is not None:
                select.select([exit_fd], [], [], grace)
        if container.running:
            container.stop()
        if not container.wait("STOPPED", TEARDOWN_SECONDS):
            raise ExternalToolError(
                f"still {container.state} {TEARDOWN_SECONDS}s after SIGKILL", where=name
            )

    return work


def start(lxcpath: Path, name: str) -> Callable[[Any], object]:
    """Work for :func:`call`: python-lxc's ``start()``, for hosts without ``lxc-start``.

    ``start()`` forks its caller to become the container's monitor: here this
    short-lived child, not the supervisor.  Answers ``[started, init,
    monitor]``; the pids are None when already gone.  Why a start failed is
    in liblxc's log, which the caller reads.
    """

    def work(lxc: Any) -> list[object]:
        container = _container(lxc, lxcpath, name)
        with contextlib.suppress(OSError):  # the container gets the system's THP policy
            syscalls.libc.set_thp_disable(False)
        if not container.start(useinit=False, daemonize=True, close_fds=True):
            return [False, None, None]
        reported = container.init_pid
        pid = int(reported) if reported is not None and reported > 0 else None
        return [True, pid, parent_of(pid) if pid is not None else None]

    return work


def parent_of(pid: int) -> int | None:
    """The parent of ``pid`` (for a container's init: its monitor), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None

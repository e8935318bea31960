"""The LXC container driver: the one module that imports python-lxc.

Works with PyPI's python-lxc 3.0.4 and Debian's python3-lxc 5.0 by using only
calls both have, and by not trusting python-lxc's ``set_config_item``
wrapper (it reads the value back and reports ``False`` when liblxc
normalised it, e.g. ``SIGTERM`` -> ``15``, and *clears list keys* before
setting them).  Instead the driver writes the container's ``config`` file
itself from :func:`~pvinit.containers.lxcconf.lxc_config` and lets liblxc
load it; keys are first tried one by one on a throw-away container object,
so a key liblxc rejects is named in the error instead of a bare
"error during init".

The driver uses python-lxc's C binding, ``_lxc.Container``, the class
``lxc.Container`` extends: every call it makes is the binding's own
(``lxc.Container`` adds network helpers and wrappers the driver never
calls).  ``import lxc`` would also load ``subprocess`` and ``locale``,
~0.45 MiB the idle supervisor held for nothing.

python-lxc reports failures as ``False``/``-1``; the reason is read from the
container's ``lxc.log`` (see :mod:`pvinit.containers.lxclog`).

Exit detection: at start the driver opens a pidfd on the container's init
(``os.pidfd_open``, Linux >= 5.3).  It becomes readable when the init
exits, so the supervisor puts :meth:`LxcDriver.exit_fd` in its poll set
and wakes at once, without polling liblxc's monitor.  The exit status
comes from liblxc's log ("Child <pid> ended on error (N)").

Start: through LXC's own ``lxc-start -d`` binary, not python-lxc's
``start()``.  Both run the same liblxc code, but ``start()`` forks the
*caller* to become the container's monitor, so each monitor was a copy of
the Python supervisor (~7 MiB PSS each, ~20 MiB for three containers
against ~2.5 MiB for three ``lxc-start`` monitors).  ``lxc-start`` is
spawned with an empty signal mask and default dispositions (liblxc hands
its caller's mask down to the container's init; NOTES), and returns once
the container is RUNNING or failed, like ``start()``.  Without the binary
(liblxc installed, the ``lxc`` tools not) the driver falls back to
``start()``.  python-lxc is still used for state, init pid and stop.

Never ``lxc.Container.destroy()``: for a ``dir:`` rootfs it deletes the
rootfs, i.e. the contents of the overlay, persistent upper dir included.
:meth:`LxcDriver.destroy` removes only the container's config directory.

Not thread-safe: the supervisor calls it from its one loop.  With the
fallback ``start()``, the caller's signal mask is inherited by the
container's init; call :meth:`start` with no signals blocked (the
supervisor is not PID 1, see DESIGN.md).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import _lxc

from pvinit import durable
from pvinit.containers import lxclog
from pvinit.containers.driver import ContainerDriver
from pvinit.containers.lxcconf import host_has_apparmor, lxc_config, render_config
from pvinit.containers.spec import ContainerSpec, check_container_name
from pvinit.errors import BadInputError, BusyError, ExternalToolError, NotFoundError, PvError
from pvinit.record import record
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

#: Name of the throw-away container object keys are tried on (not a valid container name).
_PROBE_NAME = "_pvinit_probe_"
#: liblxc's log is truncated at start when it grew past this.
_LOG_LIMIT = 1 << 20
#: How long to wait for liblxc's monitor to finish tearing a stopped container down.
_TEARDOWN_SECONDS = 10
#: Signals reset to their default disposition in ``lxc-start`` (an ignored one would
#: stay ignored in the container's init).  Only named ones: glibc keeps 32 and 33.
_DEFAULT_SIGNALS = frozenset(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP}


@record
class _Run:
    """One start of a container: its init, its exit descriptor, where its log began."""

    pid: int
    exit_fd: int
    log_offset: int
    status: int | None = None


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_log(path: Path, offset: int) -> str:
    """liblxc's log from ``offset`` (the last 64 KiB at most)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(offset, _log_size(path) - 65536))
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


@record
class _Spawned:
    """A tool started by :func:`_spawn`, not yet waited for."""

    pid: int
    out: int  # memfd holding its stdout + stderr


def _spawn(argv: list[str]) -> _Spawned:
    """Start ``argv`` with a clean signal state, its output to a memfd; do not wait.

    ``os.posix_spawn``, not ``subprocess``: it sets the child's signal mask
    and dispositions without running Python in the child.  The output goes
    to a memfd, not a pipe: ``lxc-start -d`` leaves a daemon behind, and a
    pipe would only reach end-of-file when that daemon closes it.
    """
    out = os.memfd_create("lxc-start", os.MFD_CLOEXEC)
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, out, 2),
            ],
            setsigmask=(),
            setsigdef=_DEFAULT_SIGNALS,
        )
    except BaseException:
        os.close(out)
        raise
    return _Spawned(pid, out)


def _collect(spawned: _Spawned) -> tuple[int, str]:
    """Wait for a :func:`_spawn`-ed tool; its exit code and its output (last 4 KiB)."""
    try:
        _, status = os.waitpid(spawned.pid, 0)
        size = os.lseek(spawned.out, 0, os.SEEK_END)
        os.lseek(spawned.out, max(0, size - 4096), os.SEEK_SET)
        text = os.read(spawned.out, 4096).decode("utf-8", "replace")
    finally:
        os.close(spawned.out)
    return os.waitstatus_to_exitcode(status), text


def _spawn_output(argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` to its end (see :func:`_spawn`): its exit code and its output."""
    return _collect(_spawn(argv))


@record
class _Starting:
    """A container whose start was begun by :meth:`LxcDriver._begin_start`."""

    container: Any
    log: Path | None
    offset: int
    spawned: _Spawned | None  # lxc-start still running; None when started in-process


def _exited_fd() -> int:
    """A descriptor that is already readable: for an init that was gone before we looked."""
    return os.eventfd(1, os.EFD_CLOEXEC)



def find_on_path(program: str) -> str | None:
    """``shutil.which`` for an executable: ``shutil`` alone would cost the supervisor its
    ``bz2`` and ``lzma`` modules for as long as the device runs."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = Path(directory or ".") / program
        if os.access(candidate, os.X_OK) and not candidate.is_dir():
            return str(candidate)
    return None

class LxcDriver(ContainerDriver):
    """Run containers with liblxc, configs kept under ``lxcpath/<name>/config``."""

    def __init__(
        self,
        lxcpath: str | os.PathLike[str],
        *,
        apparmor: bool | None = None,
        lxc_start: str | None = "",
    ) -> None:
        """``lxc_start``: path of the ``lxc-start`` binary; ``""`` finds it on PATH,
        ``None`` uses python-lxc's ``start()`` (a fork of this process as monitor)."""
        self.lxcpath = Path(lxcpath)
        self.apparmor = host_has_apparmor() if apparmor is None else apparmor
        self.lxc_start = (find_on_path("lxc-start") if lxc_start == "" else lxc_start) or None
        self._runs: dict[str, _Run] = {}
        self._logs: dict[str, Path] = {}

    # -- helpers ---------------------------------------------------------

    def _config_path(self, name: str) -> Path:
        return self.lxcpath / name / "config"

    def _log_path(self, name: str) -> Path | None:
        """Where liblxc logs for ``name`` (remembered from create, else read from the config)."""
        if name in self._logs:
            return self._logs[name]
        try:
            text = self._config_path(name).read_text(encoding="utf-8")
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "lxc.log.file":
                self._logs[name] = Path(value.strip())
        return self._logs.get(name)

    def _reason(self, name: str, offset: int, fallback: str) -> str:
        log = self._log_path(name)
        reason = lxclog.first_error(_read_log(log, offset)) if log is not None else None
        return reason or fallback

    def _container(self, name: str) -> Any:
        """A fresh python-lxc object for a defined container (loads its config)."""
        check_container_name(name)
        if not self._config_path(name).is_file():
            raise NotFoundError("no such container", where=name)
        try:
            container = _lxc.Container(name, str(self.lxcpath))
        except RuntimeError as exc:
            raise ExternalToolError(
                f"liblxc cannot load the container config: {exc}", where=name
            ) from None
        if not container.defined:
            raise NotFoundError("no such container", where=name)
        return container

    def _forget_run(self, name: str) -> None:
        run = self._runs.pop(name, None)
        if run is not None:
            with contextlib.suppress(OSError):
                os.close(run.exit_fd)

    def _probe_keys(self, spec: ContainerSpec, lines: list[tuple[str, str]]) -> None:
        """Try each key on a throw-away object, so a rejected one is named in the error."""
        probe = _lxc.Container(_PROBE_NAME, str(self.lxcpath))

        def raw_set(key: str, value: str) -> bool:
            # The C method: no read-back comparison, no clearing of list keys.
            return bool(probe.set_config_item(key, value))

        offset = _log_size(spec.lxc_log)
        raw_set("lxc.log.file", str(spec.lxc_log))
        for key, value in lines:
            try:
                accepted = raw_set(key, value)
            except (KeyError, ValueError, TypeError):
                accepted = False
            if not accepted:
                reason = lxclog.first_error(_read_log(spec.lxc_log, offset))
                raise BadInputError(
                    f"liblxc rejects {key} = {value!r}" + (f": {reason}" if reason else ""),
                    where=f"{spec.name}: lxc {key}",
                )

    # -- the interface ---------------------------------------------------

    def create(self, spec: ContainerSpec) -> None:
        lines = lxc_config(spec, apparmor=self.apparmor)
        if self._config_path(spec.name).is_file() and self._container(spec.name).running:
            raise BusyError("container is running; stop it before redefining it", where=spec.name)
        durable.makedirs(spec.lxc_log.parent)
        durable.makedirs(spec.console_log.parent)
        self._probe_keys(spec, lines)
        # A new definition starts a new liblxc log, so old failures do not explain new ones.
        durable.write_file(spec.lxc_log, b"", name="lxc.log")
        durable.makedirs(self.lxcpath / spec.name)
        durable.write_file(
            self._config_path(spec.name), render_config(lines).encode(), name="lxc.config"
        )
        self._logs[spec.name] = spec.lxc_log
        self._container(spec.name)  # liblxc must accept the whole file, not just each key

    def start(self, name: str) -> int:
        return self._finish_start(name, self._begin_start(name))

    def start_all(
        self, names: Sequence[str], meanwhile: Callable[[], None] | None = None
    ) -> dict[str, int | PvError | OSError]:
        """Start every ``lxc-start -d`` first, then wait for each: a group starts together.

        Each ``lxc-start`` takes tens of milliseconds to set up its container
        (namespaces, mounts, cgroups); run one after the other they add up,
        run together they overlap (liblxc locks per container, not per path).
        ``meanwhile`` runs while they do, before the first wait.
        """
        results: dict[str, int | PvError | OSError] = {}
        begun: dict[str, _Starting] = {}
        for name in names:
            try:
                begun[name] = self._begin_start(name)
            except (PvError, OSError) as error:
                results[name] = error
        if meanwhile is not None:
            meanwhile()
        for name, starting in begun.items():
            try:
                results[name] = self._finish_start(name, starting)
            except (PvError, OSError) as error:
                results[name] = error
        return {name: results[name] for name in names}

    def _begin_start(self, name: str) -> _Starting:
        container = self._container(name)
        if container.running:
            raise BusyError("container is already running", where=name)
        if container.state != "STOPPED":
            container.wait("STOPPED", _TEARDOWN_SECONDS)
        log = self._log_path(name)
        if log is not None and _log_size(log) > _LOG_LIMIT:
            log.write_bytes(b"")
        offset = _log_size(log) if log is not None else 0
        self._forget_run(name)
        if self.lxc_start is None:
            if not container.start(useinit=False, daemonize=True, close_fds=True):
                raise ExternalToolError(
                    "failed to start: " + self._reason(name, offset, "liblxc gave no reason"),
                    where=name,
                )
            return _Starting(container, log, offset, None)
        argv = [self.lxc_start, "-n", name, "-P", str(self.lxcpath), "-d"]
        try:
            spawned = _spawn(argv)
        except OSError as error:
            raise ExternalToolError(f"cannot run {self.lxc_start}: {error}", where=name) from None
        return _Starting(container, log, offset, spawned)

    def _finish_start(self, name: str, starting: _Starting) -> int:
        log, offset = starting.log, starting.offset
        if starting.spawned is not None:
            code, output = _collect(starting.spawned)
            if code != 0:
                fallback = lxclog.first_error(output) or output.strip() or f"lxc-start exit {code}"
                raise ExternalToolError(
                    "failed to start: " + self._reason(name, offset, fallback), where=name
                )
        reported = starting.container.init_pid
        pid: int | None = int(reported) if reported is not None and reported > 0 else None
        exit_fd = None
        if pid is None:
            pid = lxclog.started_pid(_read_log(log, offset)) if log is not None else None
            if pid is None:
                raise ExternalToolError("started, but liblxc reports no init pid", where=name)
        else:
            with contextlib.suppress(ProcessLookupError):
                exit_fd = os.pidfd_open(pid)
        self._runs[name] = _Run(
            pid=pid, exit_fd=exit_fd if exit_fd is not None else _exited_fd(), log_offset=offset
        )
        return pid

    def stop(self, name: str, grace: float) -> None:
        container = self._container(name)
        if not container.running:
            return
        if grace > 0:
            run = self._runs.get(name)
            own_fd = None
            if run is None:  # started by an earlier driver (a restarted supervisor)
                with contextlib.suppress(OSError, TypeError):
                    own_fd = os.pidfd_open(int(container.init_pid))
            container.shutdown(0)  # sends lxc.signal.halt, does not wait
            watch = run.exit_fd if run is not None else own_fd
            try:
                if watch is not None:
                    select.select([watch], [], [], grace)
            finally:
                if own_fd is not None:
                    os.close(own_fd)
        if container.running:
            container.stop()
        if not container.wait("STOPPED", _TEARDOWN_SECONDS):
            raise ExternalToolError(
                f"still {container.state} {_TEARDOWN_SECONDS}s after SIGKILL", where=name
            )

    def state(self, name: str) -> str:
        return str(self._container(name).state)

    def init_pid(self, name: str) -> int | None:
        pid = self._container(name).init_pid
        return int(pid) if pid is not None and pid > 0 else None

    def exit_fd(self, name: str) -> int | None:
        run = self._runs.get(name)
        return run.exit_fd if run is not None else None

    def exited(self, name: str) -> bool:
        run = self._runs.get(name)
        if run is None:
            return False
        readable, _, _ = select.select([run.exit_fd], [], [], 0)
        return bool(readable)

    def exit_status(self, name: str) -> int | None:
        run = self._runs.get(name)
        if run is None or not self.exited(name):
            return None
        if run.status is None:
            # liblxc logs the status when it reaps the init, before it reports STOPPED.
            self._container(name).wait("STOPPED", _TEARDOWN_SECONDS)
            log = self._log_path(name)
            text = _read_log(log, run.log_offset) if log is not None else ""
            logged = lxclog.exit_status(text, run.pid)
            run.status = 0 if logged is None else logged
        return run.status

    def destroy(self, name: str) -> None:
        check_container_name(name)
        if self._config_path(name).is_file():
            with contextlib.suppress(NotFoundError):
                self.stop(name, 0)
        self._forget_run(name)
        self._logs.pop(name, None)
        directory = self.lxcpath / name
        if directory.exists():
            durable.remove_tree(directory)
            durable.fsync_dir(self.lxcpath)

    def close(self) -> None:
        """Close the exit descriptors this driver holds."""
        for name in list(self._runs):
            self._forget_run(name)

    def wait_exited(self, name: str, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for the init to exit (for tools and tests)."""
        run = self._runs.get(name)
        if run is None:
            return False
        deadline = time.monotonic() + timeout
        readable: list[int] = []
        while not readable and (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([run.exit_fd], [], [], left)
        return bool(readable) or self.exited(name)

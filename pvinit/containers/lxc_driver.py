"""The LXC container driver: LXC's ``lxc-start`` runs them, two pidfds watch each one.

Start: through LXC's own ``lxc-start -d`` binary, not python-lxc's
``start()``.  Both run the same liblxc code, but ``start()`` forks the
*caller* to become the container's monitor, so each monitor was a copy of
the Python supervisor (~7 MiB PSS each, ~20 MiB for three containers
against ~2.5 MiB for three ``lxc-start`` monitors).  ``lxc-start`` is
spawned with an empty signal mask and default dispositions (liblxc hands
its caller's mask down to the container's init; NOTES), and returns once
the container is RUNNING or failed.  ``-p`` makes it write its monitor's
pid.

Watching: at start the driver opens a pidfd on the container's init and
one on its monitor (``os.pidfd_open``, Linux >= 5.3).  The init's becomes
readable when the init exits, so the supervisor puts :meth:`LxcDriver.exit_fd`
in its poll set and wakes at once; the monitor's when liblxc finished
tearing the container down (STOPPED).  Stopping sends the configured
``lxc.signal.halt`` and then SIGKILL through the init's pidfd, as liblxc
would, and waits for the monitor.  The exit status comes from liblxc's log
("Child <pid> ended on error (N)", see :mod:`pvinit.containers.lxclog`),
as does the reason a start failed.

So the supervisor never loads liblxc: what only python-lxc can do (check a
definition's keys, look at a container another driver started, start one
where the ``lxc`` tools are not installed) runs in a short-lived fork
(:mod:`pvinit.containers.liblxc`).

:meth:`LxcDriver.destroy` removes only the container's config directory.

Not thread-safe: the supervisor calls it from its one loop.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pvinit import durable
from pvinit.containers import liblxc, lxclog
from pvinit.containers.driver import ContainerDriver
from pvinit.containers.lxcconf import host_has_apparmor, lxc_config, parse_config, render_config
from pvinit.containers.spec import ContainerSpec, check_container_name
from pvinit.errors import BusyError, ExternalToolError, NotFoundError, PvError
from pvinit.pid1 import syscalls
from pvinit.record import record

#: liblxc's log is truncated at start when it grew past this.
_LOG_LIMIT = 1 << 20
#: Signals reset to their default disposition in ``lxc-start`` (an ignored one would
#: stay ignored in the container's init).  Only named ones: glibc keeps 32 and 33.
_DEFAULT_SIGNALS = frozenset(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP}
#: liblxc's ``lxc.signal.halt`` when a config names none.
_DEFAULT_HALT = signal.SIGPWR


@record
class _Run:
    """One start of a container: its init's pid, the pidfds of init and monitor, its log."""

    pid: int
    exit_fd: int
    monitor_fd: int | None  # None: the monitor was gone before we looked
    log_offset: int
    status: int | None = None


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
        with syscalls.thp_as_the_system_has_it():  # the container's policy, not pvinit's
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


@record
class _Starting:
    """A container whose start was begun by :meth:`LxcDriver._begin_start`."""

    log: Path | None
    offset: int
    spawned: _Spawned | None  # lxc-start still running; None when started by python-lxc
    started: list[object] | None = None  # python-lxc's answer: [started, init, monitor]


def _exited_fd() -> int:
    """A descriptor that is already readable: for an init that was gone before we looked."""
    return os.eventfd(1, os.EFD_CLOEXEC)


def _pidfd(pid: int | None) -> int | None:
    """A pidfd on ``pid``; None when there is no pid or the process is gone."""
    if pid is None:
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _readable(fd: int, timeout: float = 0) -> bool:
    readable, _, _ = select.select([fd], [], [], timeout)
    return bool(readable)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def halt_signal(config_text: str) -> int | None:
    """The last ``lxc.signal.halt`` of a config, as liblxc parses it; None if unparsable.

    liblxc takes a number, ``SIG<NAME>`` (any case) or ``SIGRTMIN+n`` /
    ``SIGRTMAX-n``; without the key it sends SIGPWR.
    """
    value = None
    for line in config_text.splitlines():
        key, sep, rest = line.partition("=")
        if sep and key.strip() == "lxc.signal.halt":
            value = rest.strip()
    if value is None:
        return _DEFAULT_HALT
    if value.isdigit():
        return int(value)
    word = value.upper()
    if not word.startswith("SIG"):
        return None
    for base, sign in (("SIGRTMIN", 1), ("SIGRTMAX", -1)):
        if word.startswith(base):
            offset = word[len(base):].lstrip("+-")
            if not offset:
                return int(getattr(signal, base))
            return int(getattr(signal, base)) + sign * int(offset) if offset.isdigit() else None
    try:
        return int(signal.Signals[word])
    except KeyError:
        return None


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
        ``None`` uses python-lxc's ``start()`` (in a fork, see :func:`liblxc.start`)."""
        self.lxcpath = Path(lxcpath)
        self.apparmor = host_has_apparmor() if apparmor is None else apparmor
        self.lxc_start = (find_on_path("lxc-start") if lxc_start == "" else lxc_start) or None
        self._runs: dict[str, _Run] = {}
        self._logs: dict[str, Path] = {}
        self._failed: set[str] = set()  # last start failed here: known STOPPED, ask no liblxc

    # -- helpers ---------------------------------------------------------

    def _config_path(self, name: str) -> Path:
        return self.lxcpath / name / "config"

    def _check_defined(self, name: str) -> None:
        check_container_name(name)
        if not self._config_path(name).is_file():
            raise NotFoundError("no such container", where=name)

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

    def _check_definition(self, name: str) -> None:
        """After a failed start: raise naming the key liblxc rejects, if one is the cause."""
        log = self._log_path(name)
        try:
            lines = parse_config(self._config_path(name).read_text(encoding="utf-8"))
        except OSError:
            return
        if log is not None:
            liblxc.call(liblxc.check_definition(self.lxcpath, name, log, lines), where=name)

    def _forget_run(self, name: str) -> None:
        run = self._runs.pop(name, None)
        if run is not None:
            for fd in (run.exit_fd, run.monitor_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def _wait_torn_down(self, run: _Run, timeout: float) -> bool:
        return run.monitor_fd is None or _readable(run.monitor_fd, timeout)

    # -- the interface ---------------------------------------------------

    def create(self, spec: ContainerSpec) -> None:
        """Write the definition; liblxc reads it at start, and names a rejected key then.

        Not checked here key by key: that takes liblxc (a fork, ~4 ms per
        container on a boot's critical path) to tell what ``lxc-start``
        tells anyway.  When ``lxc-start`` fails, :meth:`_finish_start` asks
        :func:`liblxc.check_definition` which key it was.
        """
        check_container_name(spec.name)
        run = self._runs.get(spec.name)
        running = run is not None and not _readable(run.exit_fd)
        known = run is not None or spec.name in self._failed
        if not known and self._config_path(spec.name).is_file():  # another driver's
            seen = liblxc.call(liblxc.state(self.lxcpath, spec.name), where=spec.name)
            running = seen != "STOPPED"
        if running:
            raise BusyError("container is running; stop it before redefining it", where=spec.name)
        lines = lxc_config(spec, apparmor=self.apparmor)
        durable.ensure_dir(spec.lxc_log.parent)
        durable.ensure_dir(spec.console_log.parent)
        # A new definition starts a new liblxc log, so old failures do not explain new ones.
        # A log, not state: emptied in place, without the fsyncs of a durable write.
        spec.lxc_log.write_bytes(b"")
        durable.ensure_dir(self.lxcpath / spec.name)
        durable.write_file(
            self._config_path(spec.name), render_config(lines).encode(), name="lxc.config"
        )
        self._logs[spec.name] = spec.lxc_log

    def start(self, name: str) -> int:
        return self._finish_start(name, self._begin_start(name))

    def _untracked(self, name: str) -> bool:
        """Neither started nor failed to start here: only liblxc knows its state."""
        self._check_defined(name)
        return name not in self._runs and name not in self._failed

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
        self._check_defined(name)
        run = self._runs.get(name)
        if run is not None:
            if not _readable(run.exit_fd):
                raise BusyError("container is already running", where=name)
            self._wait_torn_down(run, liblxc.TEARDOWN_SECONDS)  # a restart right after an exit
        log = self._log_path(name)
        if log is not None and liblxc.log_size(log) > _LOG_LIMIT:
            log.write_bytes(b"")
        offset = liblxc.log_size(log) if log is not None else 0
        self._forget_run(name)
        pidfile = self.lxcpath / name / "monitor.pid"
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        if self.lxc_start is None:
            answer = liblxc.call(liblxc.start(self.lxcpath, name), where=name)
            return _Starting(log, offset, None, answer if isinstance(answer, list) else None)
        argv = [self.lxc_start, "-n", name, "-P", str(self.lxcpath), "-d", "-p", str(pidfile)]
        try:
            spawned = _spawn(argv)
        except OSError as error:
            raise ExternalToolError(f"cannot run {self.lxc_start}: {error}", where=name) from None
        return _Starting(log, offset, spawned)

    def _finish_start(self, name: str, starting: _Starting) -> int:
        try:
            pid = self._started_pid(name, starting)
        except BusyError:
            raise
        except (PvError, OSError):
            self._failed.add(name)
            raise
        self._failed.discard(name)
        return pid

    def _started_pid(self, name: str, starting: _Starting) -> int:
        """Wait for the start, record the run, return the init's pid; raise why it failed."""
        log, offset = starting.log, starting.offset
        if starting.spawned is not None:
            code, output = _collect(starting.spawned)
            logged = liblxc.read_log(log, offset) if log is not None else ""
            if code != 0:
                if "is already running" in output + logged:
                    raise BusyError("container is already running", where=name)
                self._check_definition(name)
                fallback = lxclog.first_error(output) or output.strip() or f"lxc-start exit {code}"
                raise ExternalToolError(
                    "failed to start: " + (lxclog.first_error(logged) or fallback), where=name
                )
            pid = lxclog.started_pid(logged)
            monitor = _read_int(self.lxcpath / name / "monitor.pid")
        else:
            started, reported, told = (starting.started or [False, None, None])[:3]
            logged = liblxc.read_log(log, offset) if log is not None else ""
            if not started:
                self._check_definition(name)
                raise ExternalToolError(
                    "failed to start: " + (lxclog.first_error(logged) or "liblxc gave no reason"),
                    where=name,
                )
            pid = reported if isinstance(reported, int) else lxclog.started_pid(logged)
            monitor = told if isinstance(told, int) else None
        if pid is None:
            raise ExternalToolError("started, but liblxc reports no init pid", where=name)
        if monitor is None:
            monitor = liblxc.parent_of(pid)
        # The monitor first: until it exits it has not reaped the init, so the pid is the init's.
        monitor_fd = _pidfd(monitor)
        exit_fd = _pidfd(pid) if monitor_fd is not None else None
        self._runs[name] = _Run(
            pid=pid,
            exit_fd=exit_fd if exit_fd is not None else _exited_fd(),
            monitor_fd=monitor_fd,
            log_offset=offset,
        )
        return pid

    def stop(self, name: str, grace: float) -> None:
        if self._untracked(name):  # started by an earlier supervisor, a tool
            liblxc.call(liblxc.stop(self.lxcpath, name, grace), where=name)
            return
        run = self._runs.get(name)
        if run is None:
            return
        if not _readable(run.exit_fd):
            if grace > 0:
                halt = self._halt_signal(name)
                if halt is None:  # a value only liblxc understands
                    liblxc.call(liblxc.stop(self.lxcpath, name, grace), where=name)
                    return
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(run.exit_fd, halt)
                _readable(run.exit_fd, grace)
            if not _readable(run.exit_fd):
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(run.exit_fd, signal.SIGKILL)
        if not self._wait_torn_down(run, liblxc.TEARDOWN_SECONDS):
            raise ExternalToolError(
                f"still STOPPING {liblxc.TEARDOWN_SECONDS}s after SIGKILL", where=name
            )

    def _halt_signal(self, name: str) -> int | None:
        try:
            return halt_signal(self._config_path(name).read_text(encoding="utf-8"))
        except OSError:
            return _DEFAULT_HALT

    def state(self, name: str) -> str:
        if self._untracked(name):
            return str(liblxc.call(liblxc.state(self.lxcpath, name), where=name))
        run = self._runs.get(name)
        if run is None:
            return "STOPPED"
        if not _readable(run.exit_fd):
            return "RUNNING"
        return "STOPPED" if self._wait_torn_down(run, 0) else "STOPPING"

    def init_pid(self, name: str) -> int | None:
        if self._untracked(name):
            pid = liblxc.call(liblxc.init_pid(self.lxcpath, name), where=name)
            return pid if isinstance(pid, int) else None
        run = self._runs.get(name)
        return None if run is None or _readable(run.exit_fd) else run.pid

    def exit_fd(self, name: str) -> int | None:
        run = self._runs.get(name)
        return run.exit_fd if run is not None else None

    def exited(self, name: str) -> bool:
        run = self._runs.get(name)
        return run is not None and _readable(run.exit_fd)

    def exit_status(self, name: str) -> int | None:
        run = self._runs.get(name)
        if run is None or not self.exited(name):
            return None
        if run.status is None:
            # liblxc logs the status when it reaps the init, before its monitor exits.
            self._wait_torn_down(run, liblxc.TEARDOWN_SECONDS)
            log = self._log_path(name)
            text = liblxc.read_log(log, run.log_offset) if log is not None else ""
            logged = lxclog.exit_status(text, run.pid)
            run.status = 0 if logged is None else logged
        return run.status

    def destroy(self, name: str) -> None:
        check_container_name(name)
        if self._config_path(name).is_file():
            # A config liblxc cannot load (ExternalToolError) is not one it runs.
            with contextlib.suppress(NotFoundError, ExternalToolError):
                self.stop(name, 0)
        self._forget_run(name)
        self._failed.discard(name)
        self._logs.pop(name, None)
        directory = self.lxcpath / name
        if directory.exists():
            durable.remove_tree(directory)
            durable.fsync_dir(self.lxcpath)

    def close(self) -> None:
        """Close the descriptors this driver holds."""
        for name in list(self._runs):
            self._forget_run(name)

    def wait_exited(self, name: str, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for the init to exit (for tools and tests)."""
        run = self._runs.get(name)
        if run is None:
            return False
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if _readable(run.exit_fd, left):
                return True
        return self.exited(name)

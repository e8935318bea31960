"""The supervisor: boot the current revision group by group, keep it running, stop it in order.

The main loop has one fixed order (as in s6 and supervisor), so every
turn is predictable and no handler runs in the middle of something else:

1. **poll**: wait in ``select`` for a notify datagram, a container's exit
   descriptor (a pidfd), a signal (the wakeup pipe) or the next timer
   (group timeout, restart due); read notify messages;
2. **act**: start the next group when the previous one reached its goal or
   timed out; restart containers whose backoff is over;
3. **reap**: collect containers whose init ended and decide their fate
   (:mod:`pvinit.supervisor.recovery`);
4. **signals**: the handlers only enqueue; SIGTERM/SIGINT ask for an orderly stop.

A group's containers are mounted together, then started together; the next
group starts when every container of this one reached its status goal, or
the group's ``timeout`` passed (logged, naming who is late).  A container
that cannot start (missing object, corrupt squashfs, broken LXC key,
missing init) is FAILED with the reason and the boot goes on: the late
group then times out, which is what the update engine watches.

Exit codes: 0 after an orderly stop asked by a signal; :data:`EXIT_REBOOT`
when a ``system`` container exited or a container ran out of retries.  PID
1 reboots whenever the supervisor exits, whatever the code; the code tells
a human (and the tests) why.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import time
from collections import deque
from pathlib import Path
from types import FrameType

from pvinit import durable
from pvinit.containers.driver import ContainerDriver
from pvinit.errors import NotFoundError, PvError
from pvinit.pid1 import HANDED_OVER_ENV
from pvinit.record import record
from pvinit.state.documents import Group
from pvinit.supervisor import memory
from pvinit.supervisor.log import SupervisorLog
from pvinit.supervisor.recovery import Verdict, decide_exit
from pvinit.supervisor.runtime import (
    Runtime,
    Unit,
    clean_run_dir,
    fresh_boot_scope,
    sweep_boot_scope,
)
from pvinit.supervisor.status import (
    STATUS_FILE,
    ContainerStatus,
    GroupReport,
    GroupStatus,
    StatusDocument,
    SupervisorPhase,
    write_status,
)
from pvinit.supervisor.updates import Health, UpdateCoordinator
from pvinit.trails.install import InstalledRevision, load_trail
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import move_ref, read_ref
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from pvinit.control.server import ControlServer
    from pvinit.update.trying import Prepared

#: Exit code asking PID 1 for a reboot (EX_TEMPFAIL: "try again").
EXIT_REBOOT = 75
#: Longest sleep of the loop without any event (a safety net, not a poll).
MAX_WAIT = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@record(frozen=True)
class SupervisorConfig:
    storage: Path
    run_dir: Path
    factory: Path | None = None
    stop_grace: float = 5.0
    """Seconds a container gets between its halt signal and SIGKILL."""

    @property
    def lxcpath(self) -> Path:
        return self.run_dir / "pvinit" / "lxc"

    @property
    def status_path(self) -> Path:
        return self.run_dir / STATUS_FILE


@record
class GroupRun:
    group: Group
    units: list[Unit]
    status: GroupStatus = GroupStatus.WAITING
    deadline: float = 0.0

    def report(self) -> GroupReport:
        return GroupReport(name=self.group.name, goal=self.group.status_goal, status=self.status)


CONTROL_OPEN_BY = 1.0
"""Seconds into the boot by which the control socket is open even if a group is still starting.

A boot that waits on a slow READY must still answer ``pvctl``; a fast one
opens it right after RUNNING, off the path of the containers' start.
"""

GC_HELD_AT_MOST = 30.0
"""Seconds the boot runs without garbage collection at most (it is on again at RUNNING)."""


def _since_handover() -> str:
    """How long the boot took, for the RUNNING log line of a dev boot (the launcher stamps it)."""
    stamp = os.environ.get(HANDED_OVER_ENV, "")
    if not stamp.isdigit():
        return ""  # a device: its boot started with the kernel's, which nothing here stamps
    return f", {(time.monotonic_ns() - int(stamp)) / 1e9:.3f} s after the launcher handed over"


def release_free_memory() -> None:
    """After the boot's burst of allocations: collect cycles, return free heap to the kernel.

    Also turns garbage collection back on: the supervisor boots without it
    (:func:`pvinit.supervisor.main.main`).
    """
    from pvinit.pid1.syscalls import Libc

    gc.enable()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        Libc().malloc_trim()


def install_factory(layout: StorageLayout, bundle: Path, log: SupervisorLog) -> int:
    """Install the factory bundle in a short-lived fork; the revision it installed.

    The bundle reader and verifier (``zstandard``, ``msgpack``, ``hashlib``)
    stay in the fork (:mod:`pvinit.forked`): a device's first boot idles as
    lean as its later ones.
    """
    from pvinit.forked import run_forked

    def work(child_log: object) -> object:
        del child_log  # install_bundle logs nothing
        from pvinit.trails.install import install_bundle

        return install_bundle(layout, bundle).revision

    revision = run_forked(work, what="the factory install", where=str(bundle), log=log)
    if not isinstance(revision, int):
        raise PvError("the factory install answered no revision", where=str(bundle))
    return revision


def choose_revision(layout: StorageLayout, factory: Path | None, log: SupervisorLog) -> int:
    """``refs/current``; on a blank device, install the factory bundle and point at it."""
    current = read_ref(layout, "current")
    if current is not None:
        return current
    installed_factory = read_ref(layout, "factory")
    if installed_factory is None:
        bundle = factory or (layout.factory_bundle if layout.factory_bundle.is_file() else None)
        if bundle is None:
            raise NotFoundError(
                "no revision to boot: refs/current is not set and there is no factory bundle",
                where=str(layout.root),
                hint=f"put one at {layout.factory_bundle} or pass --factory BUNDLE",
            )
        log(f"first boot: installing factory bundle {bundle}")
        installed_factory = install_factory(layout, bundle, log)
        move_ref(layout, "factory", installed_factory, expect=None)
    move_ref(layout, "current", installed_factory, expect=None)
    return installed_factory


class Supervisor:
    def __init__(
        self,
        config: SupervisorConfig,
        *,
        driver: ContainerDriver,
        log: SupervisorLog | None = None,
    ) -> None:
        self.config = config
        self.driver = driver
        self.log = log or SupervisorLog()
        self.layout = StorageLayout(config.storage)
        self.phase = SupervisorPhase.STARTING
        self.reason: str | None = None
        self.revision: int | None = None
        self.runtime: Runtime | None = None
        self.groups: list[GroupRun] = []
        self.stop_requested: tuple[bool, str] | None = None  # (reboot?, why)
        self._signals: deque[int] = deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._published: StatusDocument | None = None
        self.updates: UpdateCoordinator | None = None
        self.control: ControlServer | None = None  # the control socket (pvinit.control)
        self._control_tried = False
        self._control_due = time.monotonic() + CONTROL_OPEN_BY
        # REPORT_AFTER s into RUNNING, and again after each live commit
        self._memory_report_at: float | None = None
        self._collect_by: float | None = None  # garbage collection back on by then at the latest

    # -- status -----------------------------------------------------------------

    @property
    def units(self) -> list[Unit]:
        return [unit for run in self.groups for unit in run.units]

    def document(self) -> StatusDocument:
        return StatusDocument(
            revision=self.revision,
            phase=self.phase,
            pid=os.getpid(),
            updated=time.time(),
            reason=self.reason,
            groups=tuple(run.report() for run in self.groups),
            containers=tuple(unit.report() for unit in self.units),
        )

    def publish(self) -> None:
        """Write the status file when anything in it changed."""
        document = self.document()
        if document.same_content(self._published):
            return
        try:
            write_status(self.config.status_path, document)
        except OSError as error:
            self.log(f"cannot write {self.config.status_path}: {error}")
            return
        self._published = document

    # -- signals ----------------------------------------------------------------

    def _on_signal(self, signo: int, frame: FrameType | None) -> None:
        del frame
        self._signals.append(signo)

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signo in (*STOP_SIGNALS, signal.SIGHUP):
            signal.signal(signo, self._on_signal)

    def request_stop(self, *, reboot: bool, why: str) -> None:
        if self.stop_requested is None:
            self.stop_requested = (reboot, why)
            self.log(f"{'reboot' if reboot else 'stop'} requested: {why}")

    # -- life ---------------------------------------------------------------------

    def run(self) -> int:
        """Boot, loop until asked to stop, stop in order; returns the exit code."""
        self._install_signals()
        try:
            self.boot()
        except PvError as error:
            self.phase, self.reason = SupervisorPhase.ERROR, str(error)
            self.log(f"cannot boot: {error}")
            self.publish()
            return self._idle()
        while self.stop_requested is None:
            self.poll()
            self.act()
            self.reap()
            self.handle_signals()
            self.publish()
        return self.shutdown()

    def _idle(self) -> int:
        """Nothing to run: stay up (PID 1 would reboot into the same error) until told to stop.

        The control socket is served meanwhile, so a field technician can
        read the status and the log of a device that cannot boot, and reboot it.
        """
        release_free_memory()
        self._open_control()
        while self.stop_requested is None:
            ctl_read, ctl_write, timeout = self._control_watch(MAX_WAIT)
            readable, writable, _ = select.select(
                [self._wake_r, *ctl_read], ctl_write, [], timeout)
            self._control_serve(readable, writable)
            self._drain_wakeup()
            self.handle_signals()
        self._close_control()
        reboot = self.stop_requested[0]
        self.phase = SupervisorPhase.REBOOTING if reboot else SupervisorPhase.STOPPED
        self.publish()
        return EXIT_REBOOT if reboot else 0

    def boot(self) -> None:
        self._collect_by = time.monotonic() + GC_HELD_AT_MOST
        self._control_due = time.monotonic() + CONTROL_OPEN_BY
        layout = self.layout
        for directory in (layout.objects, layout.trails, layout.refs, layout.logs, layout.disks):
            durable.makedirs(directory)
        clean_run_dir(self.config.run_dir, self.config.lxcpath, self.driver, self.log)
        fresh_boot_scope(layout)
        revision = self._boot_revision()
        self.revision = revision
        self.log.open(layout.log_dir(revision, "pvinit") / "pvinit.log")
        installed: InstalledRevision = load_trail(layout, revision)
        self.log(f"booting revision {revision} ({installed.envelope.message or 'no message'})")
        state = installed.state
        self.groups = [
            GroupRun(
                group=group,
                units=[
                    Unit(
                        container=container,
                        goal=state.status_goal_of(name),
                        restart_policy=state.restart_policy_of(name),
                        recovery=container.auto_recovery,
                    )
                    for name, container in state.containers.items()
                    if container.group == group.name
                ],
            )
            for group in state.device.groups
        ]
        self.runtime = Runtime(
            layout=layout,
            installed=installed,
            run_dir=self.config.run_dir,
            driver=self.driver,
            log=self.log,
        )
        self.runtime.mount_bsp()
        if self.updates is not None:
            self.updates.booted(revision)
        self.publish()

    def _boot_revision(self) -> int:
        """What to run: the bootloader's choice reconciled with the journals, else refs/factory.

        A broken settings file or boot environment must not stop the device
        from booting what it has: updates are then off, and the log says why.
        """
        layout = self.layout
        planned: int | None = None
        try:
            self.updates = UpdateCoordinator(layout, self, log=self.log)
            planned = self.updates.on_boot().run
        except PvError as error:
            self.log(f"updates disabled: {error}")
            self.updates = None
        if planned is not None and layout.trail(planned).is_dir():
            return planned
        if planned is not None:
            self.log(f"revision {planned} has no trail here; booting refs/current instead")
        return choose_revision(layout, self.config.factory, self.log)

    # -- 1. poll ------------------------------------------------------------------

    def _next_timer(self, now: float) -> float:
        done = (GroupStatus.REACHED, GroupStatus.TIMED_OUT)
        pending = next((r for r in self.groups if r.status not in done), None)
        if pending is not None and pending.status is GroupStatus.WAITING:
            return 0.0  # the next group may start now: act() must not wait for a timer
        timers = [run.deadline for run in self.groups if run.status is GroupStatus.STARTING]
        timers += [u.restart_at for u in self.units if u.restart_at is not None]
        if self._memory_report_at is not None:
            timers.append(self._memory_report_at)
        if not self._control_tried:
            timers.append(self._control_due)
        if self.updates is not None:
            deadline = self.updates.next_deadline()
            if deadline is not None:
                timers.append(deadline)
        if not timers:
            return MAX_WAIT
        return min(MAX_WAIT, max(0.0, min(timers) - now))

    def _drain_wakeup(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def poll(self) -> None:
        watched: dict[int, Unit] = {}
        exits: list[int] = []
        for unit in self.units:
            if unit.notify is not None:
                watched[unit.notify.fileno()] = unit
            if unit.running:
                fd = self.driver.exit_fd(unit.name)
                if fd is not None:
                    exits.append(fd)
        timeout = 0.0 if self._signals else self._next_timer(time.monotonic())
        ctl_read, ctl_write, timeout = self._control_watch(timeout)
        readable, writable, _ = select.select(
            [self._wake_r, *watched, *exits, *ctl_read], ctl_write, [], timeout)
        self._control_serve(readable, writable)
        for fd in readable:
            if fd == self._wake_r:
                self._drain_wakeup()
            elif fd in watched:
                self._read_notify(watched[fd])

    def _read_notify(self, unit: Unit) -> None:
        assert unit.notify is not None
        for message in unit.notify.poll():
            if message.ready and unit.status is ContainerStatus.STARTED:
                unit.status = ContainerStatus.READY
                self.log(f"{unit.name}: READY" + (f" ({message.status})" if message.status else ""))

    # -- 2. act -------------------------------------------------------------------

    def act(self) -> None:
        if self.updates is not None and self.phase is not SupervisorPhase.STARTING:
            testing = self.updates.testing
            self.updates.tick()
            if self.stop_requested is not None:
                return  # a rollback or a try reboot is under way: start nothing more
            if testing is not None and self.updates.testing is None:
                # A live update committed: say again what the device holds once idle
                # (its preparation ran in a fork, so nothing of it should remain).
                release_free_memory()
                self._memory_report_at = time.monotonic() + memory.REPORT_AFTER
        now = time.monotonic()
        for run in self.groups:
            if run.status is GroupStatus.WAITING:
                self._start_group(run)
                run.status = GroupStatus.STARTING
                run.deadline = time.monotonic() + float(run.group.timeout)
            if run.status is GroupStatus.STARTING:
                late = [u.name for u in run.units if not u.report().goal_reached]
                if not late:
                    run.status = GroupStatus.REACHED
                    self.log(f"group {run.group.name}: reached {run.group.status_goal}")
                elif time.monotonic() >= run.deadline:
                    run.status = GroupStatus.TIMED_OUT
                    self.log(
                        f"group {run.group.name}: timed out after {run.group.timeout}s "
                        f"waiting for {', '.join(late)}"
                    )
                else:
                    break
        if self.phase is SupervisorPhase.STARTING and all(
            run.status in (GroupStatus.REACHED, GroupStatus.TIMED_OUT) for run in self.groups
        ):
            self.phase = SupervisorPhase.RUNNING
            self.log(f"revision {self.revision}: every group started{_since_handover()}")
            self.publish()  # say so first: the chores below are not part of the boot
            sweep_boot_scope(self.layout, self.log)
            if self.updates is not None:
                self.updates.tick()
                self.updates.start_worker()
            release_free_memory()
            self._memory_report_at = time.monotonic() + memory.REPORT_AFTER
        if not self._control_tried and (self.phase is not SupervisorPhase.STARTING
                                        or now >= self._control_due):
            # Once every group started (or CONTROL_OPEN_BY into a slow boot), not before:
            # importing and opening the control server is ~4-5 ms that would hold up a
            # READY message or the next group's start.
            self._open_control()
        if self._collect_by is not None and (now >= self._collect_by
                                             or self.phase is SupervisorPhase.RUNNING):
            self._collect_by = None
            gc.enable()  # a boot stuck waiting for a goal must not hold its garbage for good
        if self._memory_report_at is not None and now >= self._memory_report_at:
            self._memory_report_at = None
            mine = memory.describe(memory.read_memory(os.getppid()), memory.read_memory("self"))
            self.log(f"memory once idle: {mine}")
        for unit in self.units:
            if unit.restart_at is not None and now >= unit.restart_at:
                unit.restart_at = None
                self._start_unit(unit)

    def _fail(self, unit: Unit, error: PvError | OSError, doing: str) -> None:
        unit.status = ContainerStatus.FAILED
        unit.reason = f"{doing}: {error}"
        unit.pid = None
        self.log(f"{unit.name}: FAILED: {unit.reason}")
        self.publish()

    def _prepare_group(self, run: GroupRun) -> None:
        """Mount and define every container of ``run`` not done yet."""
        assert self.runtime is not None
        for unit in run.units:
            if unit.status is not ContainerStatus.WAITING:
                continue
            try:
                self.runtime.prepare(unit)
            except (PvError, OSError) as error:
                self._fail(unit, error, "cannot mount or define")
                continue
            unit.status = ContainerStatus.MOUNTED
            self.publish()

    def _start_group(self, run: GroupRun) -> None:
        """Start ``run``'s containers together; mount the next group's while they set up.

        Mounting is not starting: the next group still starts only when this
        one reached its goal, but its volumes are ready by then (~3-4 ms per
        container that no longer waits behind ``lxc-start``).  A next-group
        container whose volumes cannot be mounted is FAILED early, as it
        would have been at its turn.
        """
        if run.units:
            names = ", ".join(u.name for u in run.units)
            self.log(f"group {run.group.name}: starting {names}")
        self._prepare_group(run)
        mounted = [unit for unit in run.units if unit.status is ContainerStatus.MOUNTED]
        for unit in mounted:
            if unit.notify is not None:
                unit.notify.poll()  # stale messages from an earlier run mean nothing now
        position = next(i for i, other in enumerate(self.groups) if other is run)
        following = next((r for r in self.groups[position + 1:] if r.units), None)
        started = self.driver.start_all(
            [unit.name for unit in mounted],
            meanwhile=None if following is None else lambda: self._prepare_group(following),
        )
        for unit in mounted:
            outcome = started[unit.name]
            if isinstance(outcome, int):
                self._started(unit, outcome)
            else:
                self._fail(unit, outcome, "cannot start")

    def _start_unit(self, unit: Unit) -> None:
        if unit.notify is not None:
            unit.notify.poll()  # stale messages from an earlier run mean nothing now
        try:
            pid = self.driver.start(unit.name)
        except (PvError, OSError) as error:
            self._fail(unit, error, "cannot start")
            return
        self._started(unit, pid)

    def _started(self, unit: Unit, pid: int) -> None:
        unit.status = ContainerStatus.STARTED
        unit.pid = pid
        unit.started_at = time.time()
        unit.started_mono = time.monotonic()
        unit.reason = None
        self.log(f"{unit.name}: STARTED, pid {pid}")
        self.publish()

    # -- 3. reap --------------------------------------------------------------------

    def reap(self) -> None:
        for unit in self.units:
            if not unit.running or not self.driver.exited(unit.name):
                continue
            code = self.driver.exit_status(unit.name) or 0
            ran_for = time.monotonic() - (unit.started_mono or time.monotonic())
            decision = decide_exit(
                restart_policy=unit.restart_policy,
                recovery=unit.recovery,
                exit_status=code,
                retries=unit.retries,
                ran_for=ran_for,
            )
            unit.status = ContainerStatus.EXITED if code == 0 else ContainerStatus.FAILED
            unit.pid = None
            unit.reason = decision.reason
            unit.retries = decision.retries
            self.log(f"{unit.name}: {unit.status.value}: {decision.reason}")
            if decision.verdict is Verdict.RESTART:
                unit.restarts += 1
                unit.restart_at = time.monotonic() + decision.delay
            elif decision.verdict is Verdict.REBOOT:
                self.request_stop(reboot=True, why=f"{unit.name} {decision.reason}")

    # -- 4. signals -----------------------------------------------------------------

    def handle_signals(self) -> None:
        while self._signals:
            signo = self._signals.popleft()
            name = signal.Signals(signo).name
            if signo in STOP_SIGNALS:
                self.request_stop(reboot=False, why=name)
            else:
                self.log(f"{name} ignored")

    # -- hooks for updates ----------------------------------------------------------------

    def wake(self) -> None:
        """Interrupt the loop's select (from the update worker thread)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"u")

    def health(self) -> Health:
        done = (GroupStatus.REACHED, GroupStatus.TIMED_OUT)
        bad = (ContainerStatus.FAILED, ContainerStatus.EXITED)
        unstable_until = 0.0
        for unit in self.units:
            stable = unit.recovery.stable_timeout if unit.recovery is not None else 0
            if unit.running and unit.started_mono is not None and stable:
                unstable_until = max(unstable_until, unit.started_mono + float(stable))
        return Health(
            all_groups_done=all(run.status in done for run in self.groups)
            and all(u.report().goal_reached for u in self.units),
            timed_out_groups=tuple(
                run.group.name for run in self.groups if run.status is GroupStatus.TIMED_OUT
            ),
            failed_containers=tuple(
                u.name for u in self.units if u.status in bad or u.restart_at is not None
            ),
            restarts={u.name: u.restarts for u in self.units},
            unstable_until=unstable_until,
        )

    def apply_live(self, prepared: Prepared) -> None:
        """Switch to ``prepared`` without a reboot: restart only the containers it changes."""
        assert self.runtime is not None
        plan = prepared.plan
        stopping = set(plan.containers_to_stop)
        for run in reversed(self.groups):
            for unit in reversed(run.units):
                if unit.name not in stopping:
                    continue
                unit.restart_at = None
                if unit.running:
                    self.driver.stop(unit.name, self.config.stop_grace)
                self.runtime.release(unit)
                self.log(f"{unit.name}: STOPPED for revision {prepared.revision}")
            run.units = [u for u in run.units if u.name not in stopping]
        installed = load_trail(self.layout, prepared.revision)
        self.runtime.installed = installed
        self.revision = prepared.revision
        self.updates_booted(prepared.revision)
        state = installed.state
        by_group = {run.group.name: run for run in self.groups}
        for name in plan.containers_to_start:
            container = state.containers[name]
            target = by_group.get(container.group)
            if target is None:
                raise NotFoundError("group is not running", where=f"{name}: {container.group}")
            unit = Unit(
                container=container,
                goal=state.status_goal_of(name),
                restart_policy=state.restart_policy_of(name),
                recovery=container.auto_recovery,
            )
            target.units.append(unit)
            try:
                self.runtime.prepare(unit)
            except (PvError, OSError) as error:
                self._fail(unit, error, "cannot mount or define")
                continue
            unit.status = ContainerStatus.MOUNTED
            self._start_unit(unit)
        self.publish()
        release_free_memory()  # the update's verify/install buffers are garbage now

    def updates_booted(self, revision: int) -> None:
        if self.updates is not None:
            self.updates.booted(revision)

    # -- the way down -------------------------------------------------------------------

    def shutdown(self) -> int:
        """Stop containers in reverse group order, undo every mount; return the exit code."""
        reboot, why = self.stop_requested or (False, "stop")
        self._close_control()
        if self.updates is not None:
            self.updates.stop()
        self.phase, self.reason = SupervisorPhase.STOPPING, why
        self.publish()
        for run in reversed(self.groups):
            for unit in reversed(run.units):
                unit.restart_at = None
                if not unit.running:
                    continue
                unit.status = ContainerStatus.STOPPING
                self.publish()
                try:
                    self.driver.stop(unit.name, self.config.stop_grace)
                except PvError as error:
                    self.log(f"{unit.name}: stop failed: {error}")
                unit.status, unit.pid = ContainerStatus.STOPPED, None
                self.log(f"{unit.name}: STOPPED")
                self.publish()
        if self.runtime is not None:
            for unit in reversed(self.units):
                self.runtime.release(unit)
            self.runtime.unmount_bsp()
        self.phase = SupervisorPhase.REBOOTING if reboot else SupervisorPhase.STOPPED
        self.publish()
        self.log(f"stopped ({why}); {'asking for a reboot' if reboot else 'exiting'}")
        return EXIT_REBOOT if reboot else 0

    # -- the control socket (pvinit.control): open, watch in poll(), close -----------------

    def _open_control(self) -> None:
        """Serve ``<run-dir>/pvinit/ctl.sock``; a failure is logged, never fatal. Tried once."""
        if self._control_tried:
            return
        self._control_tried = True
        from pvinit.control.actions import control_group
        from pvinit.control.handlers import ControlApi, allow_peer, socket_path
        from pvinit.control.server import ControlServer

        server = ControlServer(
            socket_path(self.config.run_dir), ControlApi(self),
            upload_dir=self.layout.root / "inbox", log=self.log,
            allowed=allow_peer(self.layout), group=control_group(self.layout))
        try:
            server.open()
        except OSError as error:
            self.log(f"control socket unavailable: {error}")
            return
        self.control = server

    def _control_watch(self, timeout: float) -> tuple[list[int], list[int], float]:
        if self.control is None:
            return [], [], timeout
        deadline = self.control.next_deadline()
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        return self.control.read_fds(), self.control.write_fds(), timeout

    def _control_serve(self, readable: list[int], writable: list[int]) -> None:
        if self.control is not None:
            self.control.handle(readable, writable)
            self.control.tick()

    def _close_control(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None

    def stop_container(self, unit: Unit) -> None:
        """Stop one container on request (control API); it stays STOPPED until started."""
        unit.restart_at = None
        if unit.running:
            unit.status = ContainerStatus.STOPPING
            self.driver.stop(unit.name, self.config.stop_grace)
        unit.status, unit.pid, unit.reason = ContainerStatus.STOPPED, None, "stopped by request"
        self.log(f"{unit.name}: STOPPED by request")
        self.publish()

    def start_container(self, unit: Unit) -> None:
        unit.restart_at = None
        self._start_unit(unit)

    def request_poweroff(self, why: str) -> None:
        """PID 1 powers off on SIGUSR2 (then stops us with SIGTERM); without it, just stop."""
        self.reason = why
        self.log(why)
        if os.getppid() == 1:
            os.kill(1, signal.SIGUSR2)
        else:
            self.request_stop(reboot=False, why=why)

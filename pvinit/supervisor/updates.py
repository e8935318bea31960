"""The supervisor's side of updates: boot reconciliation, the update worker, testing and commit.

The main loop calls three things, in its fixed order:

- :meth:`UpdateCoordinator.on_boot` once, before choosing what to run: reads
  what the bootloader booted and the boot environment, marks failed tries
  ERROR (:func:`pvinit.update.bootplan.plan_boot`), moves the refs;
- :meth:`UpdateCoordinator.tick` every turn (in *act*): hands a prepared
  update to the loop (reboot into try, or apply live), watches a revision
  under test and commits it or rolls it back;
- :meth:`UpdateCoordinator.stop` on the way down.

Downloads run in one worker thread (:class:`pvinit.supervisor.worker.UpdateWorker`,
imported once every group started: a boot does not wait for ``threading`` and
the inbox watcher) that watches the inboxes and polls the remote, prepares
each update in a short-lived fork, and only ever touches storage (journal,
objects, trails); containers, the boot environment and the refs are changed
from the main loop only (:class:`pvinit.update.trying.TryController`, which
imports nothing heavy), so nothing is shared between the two but the deque
of prepared updates (``append`` and ``popleft`` are atomic).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Mapping

from pvinit.errors import PvError
from pvinit.record import record
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import move_ref, read_ref
from pvinit.typecheck import TYPE_CHECKING, Protocol
from pvinit.update.bootloader import open_device_bootenv
from pvinit.update.bootplan import BootFacts, BootPlan, plan_boot
from pvinit.update.journal import list_journals, read_journal, write_journal
from pvinit.update.machine import UpdateState
from pvinit.update.settings import load_settings

if TYPE_CHECKING:
    from pvinit.supervisor.worker import UpdateWorker
    from pvinit.update.trying import Prepared, TryController

Log = Callable[[str], None]
BOOT_REV_ENV = "pv_boot_rev"  # what BootChoice.as_environ passes, like a kernel cmdline word


class LoopHooks(Protocol):
    """What the coordinator needs from the supervisor's loop."""

    def wake(self) -> None: ...
    def request_stop(self, *, reboot: bool, why: str) -> None: ...
    def apply_live(self, prepared: Prepared) -> None: ...
    def health(self) -> Health: ...


@record(frozen=True)
class Health:
    """The running revision as the loop sees it, for the testing verdict."""

    all_groups_done: bool
    timed_out_groups: tuple[str, ...]
    failed_containers: tuple[str, ...]
    """Containers that are exited or failed now (or waiting for a restart)."""
    restarts: Mapping[str, int]
    """Restart count of each container since it was created."""
    unstable_until: float
    """Monotonic time when the last container's stable_timeout is met (0: none)."""


class UpdateCoordinator:
    def __init__(self, layout: StorageLayout, hooks: LoopHooks, *, log: Log,
                 environ: dict[str, str] | None = None) -> None:
        self.layout = layout
        self.hooks = hooks
        self.log = log
        self.environ = dict(os.environ) if environ is None else environ
        self.settings = load_settings(layout)
        self.bootenv = open_device_bootenv(layout, self.settings)
        self._engine: TryController | None = None
        self.testing: int | None = None
        self.test_started = 0.0
        self._baseline: Health | None = None
        self._prepared: deque[Prepared] = deque()  # from the worker thread
        self.worker: UpdateWorker | None = None

    @property
    def engine(self) -> TryController:
        """The loop's half of the update engine (``prepare`` runs in the worker's forks)."""
        if self._engine is None:
            from pvinit.update.trying import TryController

            self._engine = TryController(self.layout, bootenv=self.bootenv, log=self.log)
        return self._engine

    # -- boot --------------------------------------------------------------------
    def on_boot(self) -> BootPlan:
        """Reconcile the boot environment, journals and refs; returns what to run."""
        booted_text = self.environ.get(BOOT_REV_ENV, "").strip()
        facts = BootFacts(
            booted=int(booted_text) if booted_text.isdigit() else None,
            env=self.bootenv.read(),
            current=read_ref(self.layout, "current"),
            journals={j.revision: j.state for j in list_journals(self.layout)},
        )
        plan = plan_boot(facts)
        for revision, cause in plan.failed:
            journal = read_journal(self.layout, revision)
            if journal is not None and journal.state is UpdateState.TESTING:
                write_journal(self.layout, journal.advance(UpdateState.ERROR, cause))
            self.log(f"update {revision}: ERROR: {cause}")
        if plan.env_changes:
            self.bootenv.update(plan.env_changes)
        if plan.committed is not None:
            # A commit cut after its boot-environment write: finish journal and refs now.
            from pvinit.update.recovery import settle_committed

            settle_committed(self.layout, plan.committed, log=self.log)
            # If the revision rotates the keys, a cut after its commit point may have
            # left the old trust file: installing it again is idempotent.
            self.engine.install_trust(plan.committed)
        old_try = read_ref(self.layout, "try")
        if plan.testing:
            self.testing = plan.run
            self.test_started = time.monotonic()
            self._baseline = None  # a try boot: every failure since boot counts
            self.log(f"revision {plan.run}: try boot, testing before commit")
        elif old_try is not None:
            move_ref(self.layout, "try", None, expect=old_try)
        return plan

    def booted(self, revision: int) -> None:
        """The loop runs ``revision`` now: move current (and done, unless it is a try)."""
        current = read_ref(self.layout, "current")
        if current != revision:
            move_ref(self.layout, "current", revision, expect=current)
        if self.testing == revision:
            return
        done = read_ref(self.layout, "done")
        if done is None:
            move_ref(self.layout, "done", revision, expect=None)
        if self.bootenv.read().get("pv_rev") is None:
            self.bootenv.update({"pv_rev": str(revision)})

    def start_worker(self) -> None:
        from pvinit.supervisor.worker import UpdateWorker

        self.worker = UpdateWorker(self.layout, self.bootenv, self.settings,
                                   log=self.log, deliver=self.deliver)
        self.worker.start()

    def deliver(self, prepared: Prepared) -> None:
        """From the worker thread: a prepared update for the loop's next turn."""
        self._prepared.append(prepared)
        self.hooks.wake()

    @property
    def has_pending(self) -> bool:
        """Whether a delivered update waits for :meth:`tick`."""
        return bool(self._prepared)

    # -- every turn ---------------------------------------------------------------
    def tick(self) -> None:
        if self.testing is not None:
            self._judge(self.testing)
            return
        try:
            prepared = self._prepared.popleft()
        except IndexError:
            return
        if prepared.reboot:
            self.engine.begin_try(prepared)
            self.hooks.request_stop(
                reboot=True, why=f"update to revision {prepared.revision} needs a reboot")
            return
        self.engine.begin_live(prepared)
        self.testing = prepared.revision
        self.test_started = time.monotonic()
        self._baseline = self.hooks.health()  # what was already wrong is not this update's fault
        try:
            self.hooks.apply_live(prepared)
        except PvError as error:
            self._fail(prepared.revision, f"could not apply without reboot: {error}")

    def next_deadline(self) -> float | None:
        """When the testing verdict may change without any other event (for the loop's sleep)."""
        if self.testing is None:
            return None
        health = self.hooks.health()
        return max(self.test_started + self.settings.commit_delay, health.unstable_until)

    def _judge(self, revision: int) -> None:
        health = self.hooks.health()
        base = self._baseline
        culprits = sorted(
            {name for name in health.failed_containers
             if base is None or name not in base.failed_containers}
            | {name for name, count in health.restarts.items()
               if count > (base.restarts.get(name, 0) if base is not None else 0)}
        )
        if culprits:
            self._fail(revision, f"{', '.join(culprits)} exited during testing")
            return
        if health.timed_out_groups:
            self._fail(revision, f"goal timed out: group {', '.join(health.timed_out_groups)}")
            return
        now = time.monotonic()
        if not health.all_groups_done or now < health.unstable_until:
            return
        if now < self.test_started + self.settings.commit_delay:
            return
        self.engine.commit(revision)
        self.testing = None
        self.log(f"revision {revision}: committed")
        if self.worker is not None:
            self.worker.idle.set()

    def _fail(self, revision: int, cause: str) -> None:
        self.engine.fail(revision, cause)
        self.testing = None
        self.hooks.request_stop(reboot=True, why=f"revision {revision} failed: {cause}")

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()

"""The supervisor's side of updates: boot reconciliation, the update worker, testing and commit.

The main loop calls three things, in its fixed order:

- :meth:`UpdateCoordinator.on_boot` once, before choosing what to run: reads
  what the bootloader booted and the boot environment, marks failed tries
  ERROR (:func:`pvinit.update.bootplan.plan_boot`), moves the refs;
- :meth:`UpdateCoordinator.tick` every turn (in *act*): hands a prepared
  update to the loop (reboot into try, or apply live), watches a revision
  under test and commits it or rolls it back;
- :meth:`UpdateCoordinator.stop` on the way down.

Downloads run in one worker thread (:class:`UpdateWorker`) that watches the
inboxes (inotify, :mod:`pvinit.supervisor.inbox`) and polls the remote, and
only ever touches storage (journal, objects, trails); containers, the boot
environment and the refs are changed from the main loop only, so no lock is
needed beyond the queue between the two.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from pvinit import durable
from pvinit.errors import PvError, TransportError
from pvinit.record import record
from pvinit.supervisor.inbox import (
    FALLBACK_SCAN,
    POLL_SCAN,
    SETTLE,
    FileId,
    InboxWatcher,
    list_bundles,
    settled,
    writable,
)
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import move_ref, read_ref
from pvinit.typecheck import TYPE_CHECKING, Protocol
from pvinit.update.bootloader import open_device_bootenv
from pvinit.update.bootplan import BootFacts, BootPlan, plan_boot
from pvinit.update.journal import list_journals, read_journal, write_journal
from pvinit.update.machine import UpdateState
from pvinit.update.settings import DeviceSettings, RemoteSettings, load_settings

if TYPE_CHECKING:  # the engine pulls in cryptography, zstandard, http: only when updating
    from pvinit.transport.sources import UpdateSource
    from pvinit.update.engine import Prepared, UpdateEngine

Log = Callable[[str], None]
BOOT_REV_ENV = "pv_boot_rev"  # what BootChoice.as_environ passes, like a kernel cmdline word
INBOX_POLL = 1.0


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


class UpdateWorker(threading.Thread):
    """Watches the inboxes and polls the remote; prepares one update at a time.

    Inboxes are ``<storage>/inbox`` and the settings' ``inbox_paths``, watched
    with inotify (:mod:`pvinit.supervisor.inbox`), with a slow fallback scan.
    A bundle is judged where it lies and moved to ``done/`` or ``failed/``
    beside it (with ``<name>.reason`` when refused).  A bundle in a directory
    the device cannot write (a read-only stick) is copied into
    ``<storage>/inbox`` as ``copy-<name>`` instead, and the stick is left
    alone: its outcome is recorded under ``<storage>/inbox/``; the copy is
    remembered by size, mtime and inode until the next boot (after a reboot
    the same bundle is copied again and found "not new").
    """

    def __init__(self, layout: StorageLayout, engine: Callable[[], UpdateEngine],
                 settings: DeviceSettings, *, log: Log,
                 deliver: Callable[[Prepared], None]) -> None:
        super().__init__(name="pvinit-update", daemon=True)
        self.layout = layout
        self.engine = engine  # created on first use: an idle device never loads it
        self.settings = settings
        self.log = log
        self.deliver = deliver
        self.stopping = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self.inbox = layout.root / "inbox"
        self.inboxes = [self.inbox, *(Path(p) for p in settings.inbox_paths)]
        self._watcher: InboxWatcher | None = None
        self._seen: dict[Path, FileId] = {}
        self._copied: dict[Path, FileId] = {}
        self._next_scan = 0.0
        self._next_remote = 0.0
        self._backoff = 5.0

    def run(self) -> None:
        try:
            durable.makedirs(self.inbox)  # so it can be watched from the start
        except OSError as error:
            self.log(f"inbox: cannot create {self.inbox}: {error}")
        watcher = InboxWatcher(self.inboxes, log=self.log)
        self._watcher = watcher
        try:
            while not self.stopping.is_set():
                self.idle.wait()
                if self.stopping.is_set():
                    return
                try:
                    self._once()
                except Exception as error:  # noqa: BLE001 - the worker must outlive any update
                    self.log(f"update worker: {type(error).__name__}: {error}")
                    self._next_scan = time.monotonic() + INBOX_POLL
                watcher.wait(self._sleep())
        finally:
            self._watcher = None
            watcher.close()

    def stop(self) -> None:
        """Ask the thread to end (it may be waiting for events or for the loop)."""
        self.stopping.set()
        self.idle.set()
        watcher = self._watcher
        if watcher is not None:
            watcher.wake()

    def _sleep(self) -> float:
        deadlines = [self._next_scan]
        if self.settings.remote is not None:
            deadlines.append(self._next_remote)
        return max(0.0, min(deadlines) - time.monotonic())

    def _once(self) -> None:
        watcher = self._watcher
        if watcher is None or watcher.rescan or time.monotonic() >= self._next_scan:
            self._scan(watcher)
        remote = self.settings.remote
        if remote is not None and self.idle.is_set() and time.monotonic() >= self._next_remote:
            self._from_remote(remote)

    def _scan(self, watcher: InboxWatcher | None) -> None:
        announced: set[Path] = set()
        if watcher is not None:
            announced, watcher.announced = watcher.announced, set()
            watcher.rescan = False
            watcher.refresh()
        listing: dict[Path, FileId] = {}
        for directory in self.inboxes:
            listing.update(list_bundles(directory))
        # Driven by hand (no watcher: ``_once`` called outside ``run``), every bundle is taken.
        ready = settled(listing, self._seen, announced if watcher is not None else listing)
        self._seen = listing
        pending = len(listing) > len(ready)
        for bundle in ready:
            if self.stopping.is_set():
                return
            if not self.idle.is_set():
                pending = True  # one update at a time: the rest waits for the next scan
                break
            self._take(bundle, listing[bundle])
        slow = FALLBACK_SCAN if watcher is not None and watcher.inotify else POLL_SCAN
        self._next_scan = time.monotonic() + (SETTLE if pending else slow)

    def _take(self, bundle: Path, ident: FileId) -> None:
        if not bundle.is_file():
            return  # taken away since the scan
        directory = bundle.parent
        if directory != self.inbox and not writable(directory):
            if self._copied.get(bundle) != ident:
                self._copied[bundle] = ident
                self._copy_in(bundle)
            return
        self._from_bundle(bundle)

    def _copy_in(self, bundle: Path) -> None:
        """Copy a bundle from a read-only directory into the inbox (the stick stays untouched)."""
        n, target = 0, self.inbox / f"copy-{bundle.name}"
        while any(p.exists() for p in (target, self.inbox / "done" / target.name,
                                       self.inbox / "failed" / target.name)):
            n += 1
            target = self.inbox / f"copy-{n}-{bundle.name}"
        try:
            with open(bundle, "rb") as reader, durable.save_file(target, name="inbox") as out:
                while block := reader.read(1 << 20):
                    out.write(block)
        except OSError as error:
            self.log(f"inbox: cannot copy {bundle} from its read-only directory: {error}")
            return
        self.log(f"inbox: {bundle} is on a read-only directory: copied as {target}")

    def _offer(self, source: UpdateSource) -> Prepared | None:
        prepared = self.engine().prepare(source)
        if prepared is not None:
            self.idle.clear()  # one update at a time: wait until the loop is done with it
            self.deliver(prepared)
        return prepared

    def _refusal(self, source: UpdateSource) -> str:
        """Why ``prepare`` took nothing from ``source`` ("" when it was simply not new)."""
        from pvinit.signing.envelope import Envelope

        envelope = Envelope.from_json(source.envelope_bytes(), source=source.describe())
        journal = read_journal(self.layout, envelope.revision)
        if journal is not None and journal.state in (UpdateState.WONTGO, UpdateState.ERROR):
            return f"revision {envelope.revision} {journal.state.value}: {journal.reason}"
        committed = self.engine().last_committed()
        if journal is None and committed is not None and envelope.revision <= committed:
            return (f"revision {envelope.revision} is not newer than the committed revision "
                    f"{committed} (a replay or downgrade)")
        return ""

    def _from_bundle(self, bundle: Path) -> None:
        """Judge one bundle; move it to ``done/`` or ``failed/`` beside it, with the reason."""
        from pvinit.transport.sources import BundleSource

        outcome, reason = "done", ""
        try:
            source = BundleSource(bundle)
            if self._offer(source) is not None:
                # Handed to the loop: the bundle stays until the update is journalled
                # TESTING or final, so a power cut before that finds it again.
                return
            reason = self._refusal(source)
            outcome = "failed" if reason else "done"
        except (PvError, OSError) as error:  # a bad bundle must not be retried forever
            outcome, reason = "failed", str(error)
        self.log(f"inbox: {bundle}: {outcome}{': ' + reason if reason else ''}")
        target = bundle.parent / outcome
        durable.makedirs(target)
        os.replace(bundle, target / bundle.name)
        if reason:
            durable.write_file(target / f"{bundle.name}.reason", (reason + "\n").encode())

    def _from_remote(self, remote: RemoteSettings) -> None:
        from pvinit.transport.oci import open_remote
        from pvinit.transport.sources import RemoteSource

        url, interval = remote.url, remote.poll_interval
        try:
            repo = open_remote(url, auth=remote.auth)  # http(s)://, file://, oci:// alike
            self._offer(RemoteSource(repo, remote.channel))
        except TransportError as error:
            self.log(f"remote {url}: {error}; retrying in {self._backoff:.0f}s")
            self._next_remote = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, max(interval, 5.0))
            return
        self._backoff = 5.0
        self._next_remote = time.monotonic() + interval


class UpdateCoordinator:
    def __init__(self, layout: StorageLayout, hooks: LoopHooks, *, log: Log,
                 environ: dict[str, str] | None = None) -> None:
        self.layout = layout
        self.hooks = hooks
        self.log = log
        self.environ = dict(os.environ) if environ is None else environ
        self.settings = load_settings(layout)
        self.bootenv = open_device_bootenv(layout, self.settings)
        self._engine: UpdateEngine | None = None
        self.testing: int | None = None
        self.test_started = 0.0
        self._baseline: Health | None = None
        self._queue: queue.Queue[Prepared] = queue.Queue()
        self.worker: UpdateWorker | None = None

    @property
    def engine(self) -> UpdateEngine:
        if self._engine is None:
            from pvinit.update.engine import UpdateEngine

            self._engine = UpdateEngine(self.layout, bootenv=self.bootenv, log=self.log)
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
            if (self.layout.trail(plan.committed) / "trust.json").is_file():
                # The revision rotates the keys; a cut after its commit point may have
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
        def deliver(prepared: Prepared) -> None:
            self._queue.put(prepared)
            self.hooks.wake()

        self.worker = UpdateWorker(self.layout, lambda: self.engine, self.settings,
                                   log=self.log, deliver=deliver)
        self.worker.start()

    # -- every turn ---------------------------------------------------------------
    def tick(self) -> None:
        if self.testing is not None:
            self._judge(self.testing)
            return
        try:
            prepared = self._queue.get_nowait()
        except queue.Empty:
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

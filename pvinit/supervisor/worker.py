"""The update worker thread: watches the inboxes, polls the remote, prepares one update at a time.

Started by :meth:`pvinit.supervisor.updates.UpdateCoordinator.start_worker`
once every group started, and imported only then: ``threading`` and the
inbox watcher are not on the boot's path.  The worker only ever touches
storage (journal, objects, trails) and hands a prepared update to the main
loop through ``deliver``; the loop does the rest.

Each preparation -- a remote poll too, even one that finds nothing new --
runs in a short-lived fork (:mod:`pvinit.forked`): the update engine's
modules (``cryptography``, ``zstandard``, ``msgpack``, the transports,
~8.5 MiB) are imported there and leave with it, so a device that polled or
applied an update live idles as lean as one that just booted.  The fork
answers with the revision it installed; this thread reads its state from
the new trail.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pvinit import durable
from pvinit.errors import BadInputError, PvError, TransportError
from pvinit.forked import run_forked
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
from pvinit.typecheck import TYPE_CHECKING
from pvinit.update.journal import read_journal
from pvinit.update.settings import DeviceSettings, RemoteSettings
from pvinit.update.trying import Prepared, refusal_of

if TYPE_CHECKING:  # the engine pulls in cryptography, zstandard, http: only in the fork
    from pvinit.boot.env import BootEnv
    from pvinit.transport.sources import UpdateSource

Log = Callable[[str], None]
INBOX_POLL = 1.0


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

    def __init__(self, layout: StorageLayout, bootenv: BootEnv,
                 settings: DeviceSettings, *, log: Log,
                 deliver: Callable[[Prepared], None]) -> None:
        super().__init__(name="pvinit-update", daemon=True)
        self.layout = layout
        self.bootenv = bootenv
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
        self._said_no: set[int] = set()  # replays already logged, carried from fork to fork
        self._handed: dict[Path, tuple[FileId, int]] = {}  # bundle -> (its id, its revision)
        self._child_lock = threading.Lock()
        self._child: int | None = None  # a pidfd of the preparing fork, to end it on stop

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
        with self._child_lock:
            if self._child is not None:  # its journal lets the next boot resume it
                try:  # noqa: SIM105 - contextlib is not worth importing for this
                    signal.pidfd_send_signal(self._child, signal.SIGTERM)
                except ProcessLookupError:
                    pass
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

    def _prepare(self, make_source: Callable[[], UpdateSource], *, where: str,
                 explain: bool) -> tuple[Prepared | None, str]:
        """Run the engine's ``prepare`` in a fork; the installed revision, or why there is none.

        ``explain``: say why nothing was taken (for a bundle's ``.reason``).
        A prepared update is delivered to the loop here.
        """
        layout, bootenv, said_no = self.layout, self.bootenv, set(self._said_no)

        def work(log: Log) -> object:  # in the fork: what it imports stays there
            from pvinit.update.engine import UpdateEngine, prepare_answer

            engine = UpdateEngine(layout, bootenv=bootenv, log=log, said_no=said_no)
            return prepare_answer(engine, make_source(), explain=explain)

        try:
            answer = run_forked(work, what="the update preparer", where=where, log=self.log,
                                started=self._remember_child)
        finally:
            with self._child_lock:
                if self._child is not None:
                    os.close(self._child)
                    self._child = None
        if not isinstance(answer, dict):
            raise BadInputError("the update preparer answered no object", where=where)
        said = answer.get("said_no")
        if isinstance(said, list):
            self._said_no.update(n for n in said if isinstance(n, int))
        found = answer.get("prepared")
        if found is None:
            return None, str(answer.get("refusal") or "")
        prepared = self._prepared_from(found, where=where)
        self.idle.clear()  # one update at a time: wait until the loop is done with it
        self.deliver(prepared)
        return prepared, ""

    def _settled(self, bundle: Path) -> str | None:
        """The outcome of a bundle this worker handed to the loop, once its update ended.

        Judged from the journal, without a fork: the loop has tested the
        revision by now, so reading the bundle again would only confirm it.
        """
        handed = self._handed.pop(bundle, None)
        if handed is None:
            return None
        ident, revision = handed
        if self._seen.get(bundle) != ident:
            return None  # replaced since: judge the new file
        return refusal_of(read_journal(self.layout, revision))

    def _remember_child(self, pid: int) -> None:
        with self._child_lock:
            self._child = os.pidfd_open(pid)

    def _prepared_from(self, found: object, *, where: str) -> Prepared:
        """The fork's answer as a :class:`Prepared`: the state from the trail it installed."""
        from pvinit.state.plan import UpdatePlan
        from pvinit.trails.install import load_trail

        if not isinstance(found, dict) or not isinstance(found.get("revision"), int) \
                or not isinstance(found.get("bytes_fetched"), int):
            raise BadInputError("the update preparer's answer has the wrong shape", where=where)
        revision: int = found["revision"]
        return Prepared(revision=revision, state=load_trail(self.layout, revision).state,
                        plan=UpdatePlan.from_dict(found.get("plan"), where=where),
                        bytes_fetched=found["bytes_fetched"])

    def _from_bundle(self, bundle: Path) -> None:
        """Judge one bundle; move it to ``done/`` or ``failed/`` beside it, with the reason."""
        def source() -> UpdateSource:
            from pvinit.transport.sources import BundleSource

            return BundleSource(bundle)

        outcome, reason = "done", ""
        try:
            settled = self._settled(bundle)
            if settled is None:
                prepared, reason = self._prepare(source, where=str(bundle), explain=True)
                if prepared is not None:
                    # Handed to the loop: the bundle stays until the update is journalled
                    # TESTING or final, so a power cut before that finds it again.
                    ident = self._seen.get(bundle)
                    if ident is not None:
                        self._handed[bundle] = (ident, prepared.revision)
                    return
            else:
                reason = settled
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
        def source() -> UpdateSource:
            from pvinit.transport.oci import open_remote
            from pvinit.transport.sources import RemoteSource

            repo = open_remote(remote.url, auth=remote.auth)  # http(s)://, file://, oci://
            return RemoteSource(repo, remote.channel)

        url, interval = remote.url, remote.poll_interval
        try:
            self._prepare(source, where=url, explain=False)
        except TransportError as error:
            self.log(f"remote {url}: {error}; retrying in {self._backoff:.0f}s")
            self._next_remote = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, max(interval, 5.0))
            return
        self._backoff = 5.0
        self._next_remote = time.monotonic() + interval

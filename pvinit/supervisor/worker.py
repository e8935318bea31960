"""The update worker thread: watches the inboxes, polls the remote, prepares one update at a time.

Started by :meth:`pvinit.supervisor.updates.UpdateCoordinator.start_worker`
once every group started, and imported only then: ``threading`` and the
inbox watcher are not on the boot's path.  The worker only ever touches
storage (journal, objects, trails) and hands a prepared update to the main
loop through ``deliver``; the loop does the rest.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pvinit import durable
from pvinit.errors import PvError, TransportError
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
from pvinit.update.machine import UpdateState
from pvinit.update.settings import DeviceSettings, RemoteSettings

if TYPE_CHECKING:  # the engine pulls in cryptography, zstandard, http: only when updating
    from pvinit.transport.sources import UpdateSource
    from pvinit.update.engine import Prepared, UpdateEngine

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

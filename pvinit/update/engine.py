"""The update engine: a revision from its source to an installed trail, then commit or rollback.

Split in two halves because they run in different places:

- :meth:`UpdateEngine.prepare` (the update worker): QUEUED -> trust checks ->
  state -> plan -> space -> DOWNLOADING -> INSTALLING (trail).  Pure storage
  work; no container is touched, so it can run beside the running revision.
- :meth:`UpdateEngine.begin_try`, :meth:`commit` and :meth:`fail` (the
  supervisor's main loop): the boot environment and the refs.

A revision may rotate the device's keys by carrying a new trust file as the
inline document ``trust.json`` at the top of its state
(``docs/formats/trust.md``).  It is checked when the revision is prepared
(so a bad one is WONTGO, not a surprise at commit) and installed over
``config/trust.json`` only when the revision commits: its authority is the
current keys' signature on the envelope, and a revision that is rolled back
must not leave its keys behind.

Every transition is journalled (:mod:`pvinit.update.journal`) before it
takes effect.  The commit point is the one atomic write of the boot
environment that sets ``pv_rev`` and clears ``pv_try``; the refs follow and
are reconciled from the environment at the next boot if power fails between.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from pvinit import durable
from pvinit.boot.env import BootEnv
from pvinit.boot.rule import abandon_try, begin_try, commit
from pvinit.errors import (
    BadInputError,
    ConflictError,
    IntegrityError,
    NoSpaceError,
    NotFoundError,
    PvError,
    TrustError,
    TrustRejectedError,
)
from pvinit.objects.disk import DiskObjectStore
from pvinit.record import record
from pvinit.signing.envelope import Envelope
from pvinit.signing.trust import TrustPolicy, check_envelope, load_trust
from pvinit.state.model import State
from pvinit.state.plan import UpdatePlan, plan_update
from pvinit.trails.install import install_revision, load_trail
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import move_ref, read_ref
from pvinit.transport.remote import ObjectWant
from pvinit.transport.sources import UpdateSource
from pvinit.update.gc import collect_garbage
from pvinit.update.journal import Journal, read_journal, write_journal
from pvinit.update.machine import TERMINAL, UpdateState
from pvinit.update.recovery import sweep_store_temps
from pvinit.update.settings import trust_path

Log = Callable[[str], None]
#: The state key of a trust rotation: an inline trust file (``pvinit-trust@1``).
TRUST_KEY = "trust.json"
#: Room kept free beyond what an update needs (journals, logs, metadata).
SPACE_MARGIN = 4 << 20


@record(frozen=True)
class Prepared:
    """A revision downloaded and installed as a trail, ready to try."""

    revision: int
    state: State
    plan: UpdatePlan
    bytes_fetched: int

    @property
    def reboot(self) -> bool:
        return self.plan.reboot


def rotated_trust(state: State, current: TrustPolicy, *, where: str) -> TrustPolicy | None:
    """The trust file ``state`` installs on commit, or None if it carries none or the current one.

    A revision keeps carrying its trust file after the rotation (it stays in the
    release engineer's checkout), so the current file again is no rotation; an
    older or equal version with other keys is refused, as a rotation replayed.
    """
    document = state.documents.get(TRUST_KEY)
    if document is None:
        return None
    source = f"{where}:{TRUST_KEY}"
    new = TrustPolicy.from_dict(document, source=source)
    if new.to_json() == current.to_json():
        return None
    if new.version <= current.version:
        raise TrustRejectedError(
            f"trust file version {new.version} is not newer than the device's {current.version}",
            reason="replay", where=source, hint="a key rotation must raise the trust version",
        )
    return new


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class UpdateEngine:
    def __init__(
        self,
        layout: StorageLayout,
        *,
        bootenv: BootEnv,
        log: Log,
        trust: TrustPolicy | None = None,
        now: Callable[[], dt.datetime] | None = None,
        free: Callable[[Path], int] = free_bytes,
    ) -> None:
        self.layout = layout
        self.store = DiskObjectStore(layout.objects)
        self.bootenv = bootenv
        self.log = log
        self._trust = trust
        self.now = now or (lambda: dt.datetime.now(tz=dt.UTC))
        self.free = free
        self._said_no: set[int] = set()

    # -- facts ----------------------------------------------------------------------
    def trust(self) -> TrustPolicy:
        if self._trust is None:
            path = trust_path(self.layout)
            if not path.is_file():
                raise TrustError(
                    "this device has no trust file, so it trusts no update",
                    where=str(path), hint="install one with the device's release keys",
                )
            self._trust = load_trust(path)
        return self._trust

    def last_committed(self) -> int | None:
        done = read_ref(self.layout, "done")
        return done if done is not None else read_ref(self.layout, "current")

    def _journal(self, journal: Journal, state: UpdateState, note: str = "",
                 **changes: object) -> Journal:
        updated = journal.advance(state, note, **changes)
        write_journal(self.layout, updated)
        self.log(f"update {journal.revision}: {state.value}" + (f": {note}" if note else ""))
        return updated

    # -- the worker half --------------------------------------------------------
    def prepare(self, source: UpdateSource) -> Prepared | None:
        """Take the source's revision as far as an installed trail; None if nothing to do.

        Refusals end in WONTGO with the reason journalled; a transport error is
        raised with the journal left in QUEUED/DOWNLOADING so a later poll resumes.
        """
        raw = source.envelope_bytes()
        envelope = Envelope.from_json(raw, source=source.describe())
        revision = envelope.revision
        sweep_store_temps(self.store, log=self.log)  # what a power cut left mid-object
        journal = read_journal(self.layout, revision)
        if journal is not None and (journal.state in TERMINAL or
                                    journal.state is UpdateState.TESTING):
            return None
        committed = self.last_committed()
        if journal is None:
            if committed is not None and revision <= committed:
                # Never overwrite the journal of a revision we hold; just say no (once:
                # a channel pointing at what the device runs is the quiet steady state).
                if revision < committed and revision not in self._said_no:
                    self._said_no.add(revision)
                    self.log(f"update {revision}: refused: not newer than committed "
                             f"{committed} (a replay or downgrade)")
                return None
            journal = Journal.start(revision, source=source.describe())
            write_journal(self.layout, journal)
        try:
            check_envelope(envelope, self.trust(), now=self.now(), last_committed=committed)
            state_bytes = source.state_bytes(envelope)
            state = State.from_bytes(state_bytes, where=f"revision {revision} state")
            rotated_trust(state, self.trust(), where=f"revision {revision} state")
            current = self._current_state()
            plan = plan_update(current, state, self.store.contains)
            wants = self._wants(envelope, current, state, plan)
            self._ensure_space(sum(w.size for w in wants) + len(state_bytes))
        except (TrustError, BadInputError, IntegrityError, NoSpaceError) as error:
            self._journal(journal, UpdateState.WONTGO, str(error))
            return None
        if journal.state is UpdateState.QUEUED:
            journal = self._journal(journal, UpdateState.DOWNLOADING,
                                    f"{len(wants)} object(s) to fetch")
        try:
            report = source.fetch(wants, self.store, workdir=self.downloads)
        except IntegrityError as error:
            self._journal(journal, UpdateState.WONTGO, str(error))
            self._clear_downloads()
            return None
        self._clear_downloads()  # partial files are kept only to resume an interrupted fetch
        journal = self._journal(journal, UpdateState.INSTALLING,
                                f"fetched {report.bytes_on_wire} bytes",
                                bytes_fetched=report.bytes_on_wire, reboot=plan.reboot)
        try:
            install_revision(self.layout, state_bytes=state_bytes, envelope=envelope)
        except (IntegrityError, BadInputError, NotFoundError, ConflictError) as error:
            self._journal(journal, UpdateState.WONTGO, f"install failed: {error}")
            return None
        return Prepared(revision=revision, state=state, plan=plan,
                        bytes_fetched=report.bytes_on_wire)

    @property
    def downloads(self) -> Path:
        return self.layout.root / "downloads"

    def _clear_downloads(self) -> None:
        shutil.rmtree(self.downloads, ignore_errors=True)

    def _current_state(self) -> State | None:
        current = read_ref(self.layout, "current")
        if current is None:
            return None
        return load_trail(self.layout, current).state

    @staticmethod
    def _wants(envelope: Envelope, current: State | None, new: State,
               plan: UpdatePlan) -> list[ObjectWant]:
        """What to download; the base of a delta is the object the device has at the same key."""
        fetch = set(plan.objects_to_fetch)
        wants: list[ObjectWant] = []
        seen: set[str] = set()
        for key, object_id in sorted(new.objects.items()):
            if object_id not in fetch or object_id in seen:
                continue
            seen.add(object_id)
            if object_id not in envelope.sizes:
                raise IntegrityError("the envelope declares no size for this object",
                                     where=f"{key} ({object_id})")
            base = current.objects.get(key) if current is not None else None
            wants.append(ObjectWant(id=object_id, size=envelope.sizes[object_id], base_id=base))
        return wants

    def _ensure_space(self, needed: int) -> None:
        needed += SPACE_MARGIN
        if self.free(self.layout.root) >= needed:
            return
        report = collect_garbage(self.layout, self.store, log=self.log)
        self.log(f"gc before download reclaimed {report.reclaimed_bytes} bytes")
        free = self.free(self.layout.root)
        if free < needed:
            raise NoSpaceError(f"need {needed} bytes, {free} free after garbage collection",
                               where=str(self.layout.root))

    # -- the supervisor half -------------------------------------------------------
    def begin_try(self, prepared: Prepared) -> None:
        """Journal TESTING, then arm the bootloader to try the revision once (reboot updates)."""
        journal = self._require(prepared.revision)
        self._journal(journal, UpdateState.TESTING, "rebooting into the try revision")
        self.bootenv.update(begin_try(prepared.revision))
        move_ref(self.layout, "try", prepared.revision, expect=read_ref(self.layout, "try"))

    def begin_live(self, prepared: Prepared) -> None:
        """Journal TESTING for an update applied without a reboot."""
        journal = self._require(prepared.revision)
        self._journal(journal, UpdateState.TESTING, "applied without reboot")

    def commit(self, revision: int) -> None:
        """The revision passed testing: the boot environment, then the journal, then the refs.

        The boot environment goes first because it is the commit point: a
        journal saying DONE before it could outlive a power cut that sends the
        bootloader back to the old revision (a terminal lie).  The other way
        round, the cut leaves the new revision booting with its journal in
        TESTING, which boot finishes (:func:`pvinit.update.recovery.settle_committed`).
        """
        journal = self._require(revision)
        final = UpdateState.DONE if journal.reboot else UpdateState.UPDATED
        self.bootenv.update(commit(revision))
        self.install_trust(revision)  # before the journal: a final state means keys rotated too
        self._journal(journal, final, "committed")
        self.adopt(revision)

    def install_trust(self, revision: int) -> None:
        """Install the trust file a committed revision carries; idempotent (safe to repeat at boot).

        Runs after the commit point: a power cut in between leaves the old keys,
        and calling this again for the committed revision finishes the job.
        """
        where = f"revision {revision} state"
        try:
            new = rotated_trust(load_trail(self.layout, revision).state, self.trust(), where=where)
        except PvError as error:  # checked at prepare; only a trust file changed since lands here
            self.log(f"update {revision}: trust file not rotated: {error}")
            return
        if new is None:
            return
        path = trust_path(self.layout)
        durable.makedirs(path.parent)
        durable.write_file(path, new.to_json(), mode=0o644, name="trust")
        self._trust = new
        self.log(f"update {revision}: trust rotated to version {new.version} "
                 f"({len(new.keys)} key(s), threshold {new.threshold})")

    def adopt(self, revision: int) -> None:
        """Point current and done at ``revision`` and clear try (CAS on what we read)."""
        for name in ("current", "done"):
            old = read_ref(self.layout, name)
            if old != revision:
                move_ref(self.layout, name, revision, expect=old)
        old_try = read_ref(self.layout, "try")
        if old_try is not None:
            move_ref(self.layout, "try", None, expect=old_try)

    def fail(self, revision: int, cause: str) -> None:
        """The revision failed after install: journal ERROR, disarm the try."""
        journal = read_journal(self.layout, revision)
        if journal is not None and journal.state not in TERMINAL:
            self._journal(journal, UpdateState.ERROR, cause)
        self.bootenv.update(abandon_try())
        old_try = read_ref(self.layout, "try")
        if old_try is not None:
            move_ref(self.layout, "try", None, expect=old_try)

    def _require(self, revision: int) -> Journal:
        journal = read_journal(self.layout, revision)
        if journal is None:
            raise PvError(f"no journal for revision {revision}", where=f"revision {revision}")
        return journal

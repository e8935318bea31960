"""The update engine: a revision from its source to an installed trail, then commit or rollback.

Split in two halves because they run in different places:

- :meth:`UpdateEngine.prepare` (the update worker, in a short-lived fork of
  the supervisor: :func:`prepare_forked`): QUEUED -> trust checks -> state ->
  plan -> space -> DOWNLOADING -> INSTALLING (trail).  Pure storage work; no
  container is touched, so it can run beside the running revision.  Its
  modules (``cryptography``, ``zstandard``, the transports) leave with the fork.
- :class:`pvinit.update.trying.TryController` (``begin_try``, ``commit``,
  ``fail``; the supervisor's main loop): the boot environment and the refs.
  :class:`UpdateEngine` extends it, so tests can drive one object end to end.

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

from pvinit.boot.env import BootEnv
from pvinit.errors import (
    BadInputError,
    ConflictError,
    IntegrityError,
    NoSpaceError,
    NotFoundError,
    TrustError,
    TrustRejectedError,
)
from pvinit.objects.disk import DiskObjectStore
from pvinit.signing.envelope import Envelope
from pvinit.signing.trust import TrustPolicy, check_envelope
from pvinit.state.model import State
from pvinit.state.plan import UpdatePlan, plan_update
from pvinit.trails.install import install_revision, load_trail
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import read_ref
from pvinit.transport.wants import ObjectWant
from pvinit.typecheck import TYPE_CHECKING
from pvinit.update.gc import collect_garbage
from pvinit.update.journal import Journal, read_journal, write_journal
from pvinit.update.machine import TERMINAL, UpdateState
from pvinit.update.recovery import sweep_store_temps
from pvinit.update.trying import TRUST_KEY, Prepared, TryController, refusal_of

if TYPE_CHECKING:
    from pvinit.transport.sources import UpdateSource

Log = Callable[[str], None]
#: Room kept free beyond what an update needs (journals, logs, metadata).
SPACE_MARGIN = 4 << 20


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


class UpdateEngine(TryController):
    """Both halves of an update; :meth:`prepare` is the one that needs the heavy modules."""

    def __init__(
        self,
        layout: StorageLayout,
        *,
        bootenv: BootEnv,
        log: Log,
        trust: TrustPolicy | None = None,
        now: Callable[[], dt.datetime] | None = None,
        free: Callable[[Path], int] = free_bytes,
        said_no: set[int] | None = None,
    ) -> None:
        super().__init__(layout, bootenv=bootenv, log=log, trust=trust)
        self.store = DiskObjectStore(layout.objects)
        self.now = now or (lambda: dt.datetime.now(tz=dt.UTC))
        self.free = free
        self.said_no = set() if said_no is None else said_no
        """Revisions already refused as replays (logged once, not at every poll)."""

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
                if revision < committed and revision not in self.said_no:
                    self.said_no.add(revision)
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

    def refusal(self, source: UpdateSource) -> str:
        """Why :meth:`prepare` took nothing from ``source`` ("" when it was simply not new)."""
        envelope = Envelope.from_json(source.envelope_bytes(), source=source.describe())
        journal = read_journal(self.layout, envelope.revision)
        settled = refusal_of(journal)
        if settled:
            return settled
        committed = self.last_committed()
        if journal is None and committed is not None and envelope.revision <= committed:
            return (f"revision {envelope.revision} is not newer than the committed revision "
                    f"{committed} (a replay or downgrade)")
        return ""


def prepare_answer(engine: UpdateEngine, source: UpdateSource, *,
                   explain: bool) -> dict[str, object]:
    """What the update worker's fork answers (:mod:`pvinit.forked`): plain JSON values.

    ``{"prepared": {"revision", "bytes_fetched", "plan"}}`` for a revision
    installed as a trail (the caller reads its state from the trail), else
    ``{"refusal": why}`` (with ``explain``; "" when it was simply not new).
    ``said_no`` carries the engine's refused replays back to the next fork.
    """
    prepared = engine.prepare(source)
    answer: dict[str, object] = {"said_no": sorted(engine.said_no)}
    if prepared is not None:
        answer["prepared"] = {"revision": prepared.revision,
                              "bytes_fetched": prepared.bytes_fetched,
                              "plan": prepared.plan.to_dict()}
    elif explain:
        answer["refusal"] = engine.refusal(source)
    return answer

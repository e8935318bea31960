"""The update's second half, run by the supervisor's main loop: try, commit or fail.

:meth:`pvinit.update.engine.UpdateEngine.prepare` takes a revision as far as
an installed trail, in a short-lived fork of the supervisor
(:func:`pvinit.update.engine.prepare_forked`): it needs ``cryptography``,
``zstandard`` and the transports, ~8.5 MiB that would otherwise stay in the
supervisor until the next boot.  What is left for the main loop lives here
and imports nothing heavy: journal, boot environment and refs.

:meth:`TryController.begin_try` arms the bootloader for a reboot update,
:meth:`TryController.begin_live` journals an update applied without one;
:meth:`TryController.commit` and :meth:`TryController.fail` end the test.
Every transition is journalled before it takes effect; the commit point is
the one atomic boot environment write that sets ``pv_rev`` and clears
``pv_try`` (see :mod:`pvinit.update.engine` for the whole story).
"""

from __future__ import annotations

from pvinit import durable
from pvinit.boot.rule import abandon_try, begin_try, commit
from pvinit.errors import PvError, TrustError
from pvinit.record import record
from pvinit.trails.refs import move_ref, read_ref
from pvinit.typecheck import TYPE_CHECKING
from pvinit.update.journal import Journal, read_journal, write_journal
from pvinit.update.machine import TERMINAL, UpdateState
from pvinit.update.settings import trust_path

if TYPE_CHECKING:
    from collections.abc import Callable

    from pvinit.boot.env import BootEnv
    from pvinit.signing.trust import TrustPolicy
    from pvinit.state.model import State
    from pvinit.state.plan import UpdatePlan
    from pvinit.trails.layout import StorageLayout

    Log = Callable[[str], None]

TRUST_KEY = "trust.json"
"""The state key of a trust rotation: an inline trust file (``pvinit-trust@1``)."""


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


def refusal_of(journal: Journal | None) -> str | None:
    """Why a source of this journal's revision is not taken again, once its update has ended.

    The reason text for WONTGO and ERROR, "" for a revision that was
    installed (DONE, UPDATED) or is being tested, None while nothing
    settled it (the source must be judged by :meth:`UpdateEngine.prepare`).
    """
    if journal is None:
        return None
    if journal.state in (UpdateState.WONTGO, UpdateState.ERROR):
        return f"revision {journal.revision} {journal.state.value}: {journal.reason}"
    if journal.state in TERMINAL or journal.state is UpdateState.TESTING:
        return ""
    return None


class TryController:
    """Journal, boot environment and refs of one device's updates, from the main loop."""

    def __init__(
        self,
        layout: StorageLayout,
        *,
        bootenv: BootEnv,
        log: Log,
        trust: TrustPolicy | None = None,
    ) -> None:
        self.layout = layout
        self.bootenv = bootenv
        self.log = log
        self._trust = trust

    def trust(self) -> TrustPolicy:
        """The device's trust file (loading it imports ``cryptography``: updates only)."""
        if self._trust is None:
            from pvinit.signing.trust import load_trust

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
        and calling this again for the committed revision finishes the job.  A
        revision without a trust file costs one ``stat``: only a key rotation
        loads the signing code into the supervisor.
        """
        if not (self.layout.trail(revision) / TRUST_KEY).is_file():
            return
        from pvinit.trails.install import load_trail
        from pvinit.update.engine import rotated_trust

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

"""The progress journal of one revision: ``<storage>/progress/<rev>.json``.

Every transition is written here (durably) *before* it takes effect, so
after a crash or power cut the engine knows where each update stood and
resumes or rolls back.  The journal lives beside the trails rather than
inside ``trails/<rev>/.pv/`` because a revision refused before install
(WONTGO) never gets a trail, yet its reason must be kept.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pvinit import durable
from pvinit.errors import BadInputError
from pvinit.record import field, record, replace
from pvinit.trails.layout import StorageLayout, check_revision
from pvinit.update.machine import UpdateState, check_transition


def utc_now() -> str:
    """Now as journals and the rollback log write it: ``YYYY-MM-DDTHH:MM:SSZ``."""
    # time, not datetime: datetime would stay in the supervisor's heap for a timestamp.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@record(frozen=True)
class Step:
    state: UpdateState
    time: str
    note: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"state": self.state.value, "time": self.time, "note": self.note}

    @classmethod
    def from_dict(cls, data: object, *, where: str) -> Step:
        if not isinstance(data, dict):
            raise BadInputError("a journal step must be an object", where=where)
        try:
            return cls(
                state=UpdateState(data["state"]),
                time=str(data.get("time", "")),
                note=str(data.get("note", "")),
            )
        except (KeyError, ValueError):
            raise BadInputError("bad journal step", where=where) from None


@record(frozen=True)
class Journal:
    """Where the update to ``revision`` stands, and how it got there."""

    revision: int
    state: UpdateState
    source: str = ""
    reason: str = ""
    reboot: bool | None = None
    bytes_fetched: int = 0
    history: tuple[Step, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        return {
            "revision": self.revision,
            "state": self.state.value,
            "source": self.source,
            "reason": self.reason,
            "reboot": self.reboot,
            "bytes_fetched": self.bytes_fetched,
            "history": [s.to_dict() for s in self.history],
        }

    @classmethod
    def from_dict(cls, data: object, *, where: str) -> Journal:
        if not isinstance(data, dict):
            raise BadInputError("a journal must be a JSON object", where=where)
        try:
            revision = check_revision(data["revision"], where=where)
            state = UpdateState(data["state"])
        except (KeyError, ValueError):
            raise BadInputError("journal lacks a valid revision or state", where=where) from None
        history = data.get("history", [])
        if not isinstance(history, list):
            raise BadInputError("journal history must be a list", where=where)
        reboot = data.get("reboot")
        fetched = data.get("bytes_fetched", 0)
        return cls(
            revision=revision,
            state=state,
            source=str(data.get("source", "")),
            reason=str(data.get("reason", "")),
            reboot=reboot if isinstance(reboot, bool) else None,
            bytes_fetched=fetched if isinstance(fetched, int) else 0,
            history=tuple(Step.from_dict(s, where=where) for s in history),
        )

    def advance(self, state: UpdateState, note: str = "", **changes: object) -> Journal:
        """The journal after a legal transition to ``state`` (pure)."""
        check_transition(self.state, state, revision=self.revision)
        step = Step(state=state, time=utc_now(), note=note)
        updated = replace(self, state=state, history=(*self.history, step))
        if note and state in (UpdateState.WONTGO, UpdateState.ERROR):
            updated = replace(updated, reason=note)
        return replace(updated, **changes)

    @classmethod
    def start(cls, revision: int, *, source: str) -> Journal:
        check_transition(None, UpdateState.QUEUED, revision=revision)
        return cls(
            revision=revision,
            state=UpdateState.QUEUED,
            source=source,
            history=(Step(UpdateState.QUEUED, utc_now(), f"from {source}"),),
        )


def journal_path(layout: StorageLayout, revision: int) -> Path:
    return layout.root / "progress" / f"{check_revision(revision)}.json"


def read_journal(layout: StorageLayout, revision: int) -> Journal | None:
    path = journal_path(layout, revision)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        raise BadInputError("journal is not JSON", where=str(path)) from None
    return Journal.from_dict(data, where=str(path))


def write_journal(layout: StorageLayout, journal: Journal) -> None:
    path = journal_path(layout, journal.revision)
    durable.makedirs(path.parent)
    data = (json.dumps(journal.to_dict(), indent=1, sort_keys=True) + "\n").encode()
    durable.write_file(path, data, name="journal")


def list_journals(layout: StorageLayout) -> list[Journal]:
    directory = layout.root / "progress"
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.json")):
        if path.stem.isdigit():
            journal = read_journal(layout, int(path.stem))
            if journal is not None:
                found.append(journal)
    return sorted(found, key=lambda j: j.revision)

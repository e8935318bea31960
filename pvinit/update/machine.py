"""The update state machine: a pure table of legal transitions.

``QUEUED -> DOWNLOADING -> INSTALLING -> TESTING -> DONE`` (an update that
needed a reboot) or ``-> UPDATED`` (applied without one). ``WONTGO`` is a
revision refused before install (bad signature, replay, no space, invalid
state, corrupt object); ``ERROR`` one that failed after install and was
rolled back.  Terminal states are final: a revision that reached one is
never tried again.
"""

from __future__ import annotations

import enum

from pvinit.errors import ConflictError


class UpdateState(enum.StrEnum):
    QUEUED = "QUEUED"
    DOWNLOADING = "DOWNLOADING"
    INSTALLING = "INSTALLING"
    TESTING = "TESTING"
    DONE = "DONE"
    UPDATED = "UPDATED"
    WONTGO = "WONTGO"
    ERROR = "ERROR"


S = UpdateState

TRANSITIONS: dict[UpdateState, frozenset[UpdateState]] = {
    S.QUEUED: frozenset({S.DOWNLOADING, S.WONTGO}),
    # a download interrupted by a power cut resumes in DOWNLOADING
    S.DOWNLOADING: frozenset({S.DOWNLOADING, S.INSTALLING, S.WONTGO}),
    S.INSTALLING: frozenset({S.INSTALLING, S.TESTING, S.WONTGO, S.ERROR}),
    S.TESTING: frozenset({S.DONE, S.UPDATED, S.ERROR}),
    S.DONE: frozenset(),
    S.UPDATED: frozenset(),
    S.WONTGO: frozenset(),
    S.ERROR: frozenset(),
}

TERMINAL = frozenset(state for state, nexts in TRANSITIONS.items() if not nexts)
COMMITTED = frozenset({S.DONE, S.UPDATED})


def check_transition(current: UpdateState | None, new: UpdateState, *, revision: int) -> None:
    """Raise ConflictError unless ``current -> new`` is a legal step (None: no journal yet)."""
    if current is None:
        if new in (S.QUEUED, S.WONTGO):
            return
    elif new in TRANSITIONS[current]:
        return
    raise ConflictError(
        f"update of revision {revision} cannot go from {current} to {new}",
        where=f"revision {revision}",
    )

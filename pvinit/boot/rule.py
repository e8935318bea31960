"""The bootloader contract: which revision boots, decided from the boot environment.

Pure rules, no I/O, shared by every place that plays the bootloader (the
dev launcher, the VM test) and by pvinit itself.  Three keys:

``pv_rev``
    the last committed revision (written by pvinit on commit);
``pv_try``
    a revision to try once (written by pvinit before the reboot into it);
``pv_trying``
    the bootloader's marker that it already started ``pv_try`` once.

The rule: with ``pv_try`` set and ``pv_trying != pv_try``, the bootloader
sets ``pv_trying = pv_try`` (one write) and boots ``pv_try``; with
``pv_trying == pv_try`` the try already had its one chance and did not
commit, so it boots ``pv_rev`` (a rollback); without ``pv_try`` it boots
``pv_rev``.  A rollback leaves ``pv_try`` in place so pvinit, once up, can
see which revision failed; pvinit then clears it (:func:`abandon_try`).

A value that is not a revision number counts as absent, never as an
error: a bootloader must always boot something.
"""

from __future__ import annotations

from pvinit.errors import BadInputError
from pvinit.record import field, record
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

PV_REV = "pv_rev"
PV_TRY = "pv_try"
PV_TRYING = "pv_trying"

_MAX_DIGITS = 18


def parse_revision(value: str | None) -> int | None:
    """A revision number from an environment value, or None for absent or garbage."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > _MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


@record(frozen=True)
class BootChoice:
    """What to boot and the environment changes to write before booting it.

    ``revision`` None means no usable revision is named (boot the factory
    revision).  ``trying`` is set when this boot is the one chance of
    ``pv_try``; ``rollback`` when a try failed and ``revision`` is the last
    committed one.
    """

    revision: int | None
    trying: bool = False
    rollback: bool = False
    changes: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "revision": self.revision,
            "trying": self.trying,
            "rollback": self.rollback,
            "changes": dict(self.changes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BootChoice:
        revision = data.get("revision")
        changes = data.get("changes", {})
        if (
            revision is not None and (isinstance(revision, bool) or not isinstance(revision, int))
        ) or not isinstance(changes, dict):
            raise BadInputError("boot choice has the wrong shape", where="revision")
        return cls(
            revision,
            trying=bool(data.get("trying", False)),
            rollback=bool(data.get("rollback", False)),
            changes={str(k): None if v is None else str(v) for k, v in changes.items()},
        )

    def as_environ(self) -> dict[str, str]:
        """The choice as kernel command line words would pass it to PID 1."""
        env = {"pv_boot_trying": "1" if self.trying else "0"}
        if self.revision is not None:
            env["pv_boot_rev"] = str(self.revision)
        if self.rollback:
            env["pv_boot_rollback"] = "1"
        return env


def choose_boot(env: Mapping[str, str]) -> BootChoice:
    """Apply the bootloader rule to an environment (see the module docstring)."""
    committed = parse_revision(env.get(PV_REV))
    trial = parse_revision(env.get(PV_TRY))
    marker = parse_revision(env.get(PV_TRYING))
    if trial is None:
        return BootChoice(committed)
    if marker != trial:
        return BootChoice(trial, trying=True, changes={PV_TRYING: str(trial)})
    return BootChoice(committed, rollback=True)


def _revision_text(rev: int) -> str:
    if isinstance(rev, bool) or not isinstance(rev, int) or rev < 0:
        raise BadInputError("a revision is a non-negative integer", where=repr(rev))
    return str(rev)


def begin_try(rev: int) -> dict[str, str | None]:
    """Changes that make the next boot try ``rev`` once."""
    return {PV_TRY: _revision_text(rev), PV_TRYING: None}


def commit(rev: int) -> dict[str, str | None]:
    """Changes that make ``rev`` the committed revision and end any try."""
    return {PV_REV: _revision_text(rev), PV_TRY: None, PV_TRYING: None}


def abandon_try() -> dict[str, str | None]:
    """Changes that end a try (failed or cancelled) without committing it."""
    return {PV_TRY: None, PV_TRYING: None}

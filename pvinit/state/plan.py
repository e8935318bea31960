"""The update plan: what a device must fetch, stop and start to move between revisions.

Pure: two States and a ``have(object_id) -> bool`` question in, an
:class:`UpdatePlan` out.  The rule (DESIGN.md, "Update lifecycle"): a change
that touches ``#spec``, the BSP, ``device.json``, or a container whose
restart policy is ``system`` (in the old or the new revision, its own or its
group's) needs a reboot into the new revision; any other change stops the
removed and changed containers and starts the added and changed ones, and
leaves the rest running.

On a reboot every old container stops and every new one starts, and the
plan says so, so ``containers_to_stop``/``containers_to_start`` always say
what really happens.  ``containers_unchanged`` lists containers whose keys
are identical in both revisions, whatever the plan does with them.
"""

from __future__ import annotations

from collections.abc import Callable

from pvinit.errors import BadInputError
from pvinit.record import record
from pvinit.state.diff import PartDiff, StateDiff, diff_states
from pvinit.state.model import BSP_DIR, DEVICE_KEY, SPEC_KEY, State
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


@record(frozen=True, kw_only=True)
class UpdatePlan:
    """What to do to move a device from one revision to another, and why."""

    objects_to_fetch: tuple[str, ...]
    containers_to_stop: tuple[str, ...]
    containers_to_start: tuple[str, ...]
    containers_unchanged: tuple[str, ...]
    reboot: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects_to_fetch": list(self.objects_to_fetch),
            "containers_to_stop": list(self.containers_to_stop),
            "containers_to_start": list(self.containers_to_start),
            "containers_unchanged": list(self.containers_unchanged),
            "reboot": self.reboot,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, data: object, *, where: str = "update plan") -> UpdatePlan:
        """The plan :meth:`to_dict` wrote (the update worker's fork sends it back so)."""
        if not isinstance(data, dict):
            raise BadInputError("an update plan must be an object", where=where)

        def names(key: str) -> tuple[str, ...]:
            value = data.get(key)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BadInputError(f"{key!r} must be a list of text", where=where)
            return tuple(value)

        reboot = data.get("reboot")
        if not isinstance(reboot, bool):
            raise BadInputError("'reboot' must be true or false", where=where)
        return cls(objects_to_fetch=names("objects_to_fetch"),
                   containers_to_stop=names("containers_to_stop"),
                   containers_to_start=names("containers_to_start"),
                   containers_unchanged=names("containers_unchanged"),
                   reboot=reboot, reasons=names("reasons"))


def _verb(part: PartDiff, key: str) -> str:
    if key in part.added:
        return "added"
    if key in part.removed:
        return "removed"
    return "changed"


def _container_change(name: str, old: State | None, new: State) -> str:
    if old is None or name not in old.containers:
        return "added"
    if name not in new.containers:
        return "removed"
    return "changed"


def _restart_policies(name: str, old: State | None, new: State) -> set[str]:
    policies: set[str] = set()
    for state in (old, new):
        if state is not None and name in state.containers:
            policies.add(state.restart_policy_of(name))
    return policies


def plan_update(
    old: State | None,
    new: State,
    have: Callable[[str], bool],
    *,
    diff: StateDiff | None = None,
) -> UpdatePlan:
    """Plan the move from ``old`` (None: nothing installed) to ``new``.

    ``have(object_id)`` says whether the store already holds an object; it is
    asked once per distinct id.  Pass ``diff`` when it is already computed.
    """
    if diff is None:
        diff = diff_states(old, new)
    fetch = tuple(sorted(oid for oid in new.object_ids() if not have(oid)))
    old_names = set(old.containers) if old is not None else set()
    new_names = set(new.containers)
    touched = sorted(name for name, part in diff.parts.items() if part.kind == "container")
    unchanged = tuple(sorted((old_names & new_names) - set(touched)))

    reboot_reasons: list[str] = []
    other_reasons: list[str] = []
    if old is None:
        reboot_reasons.append("no revision is installed: the first one is booted")
    for part_name in (SPEC_KEY, DEVICE_KEY, BSP_DIR):
        part = diff.parts.get(part_name)
        if part is None or old is None:
            continue
        for key in part.keys:
            verb = _verb(part, key)
            if part_name == SPEC_KEY:
                reboot_reasons.append(
                    f"#spec changed to {new.spec!r}: a new revision format needs a reboot"
                )
            elif part_name == DEVICE_KEY:
                reboot_reasons.append(
                    f"device.json {verb}: boot groups and device settings need a reboot"
                )
            else:
                reboot_reasons.append(f"{key} {verb}: the BSP needs a reboot")
    for name in touched:
        change = _container_change(name, old, new)
        if old is not None and "system" in _restart_policies(name, old, new):
            reboot_reasons.append(
                f"container {name} {change} and its restart policy is system: it needs a reboot"
            )
        elif change == "added":
            other_reasons.append(f"container {name} added: start it")
        elif change == "removed":
            other_reasons.append(f"container {name} removed: stop it")
        else:
            other_reasons.append(f"container {name} changed: restart it")
    other = diff.parts.get("other")
    if other is not None:
        for key in other.keys:
            other_reasons.append(
                f"{key} {_verb(other, key)}: it belongs to no container, nothing restarts"
            )

    reboot = bool(reboot_reasons)
    if reboot:
        stop = tuple(sorted(old_names))
        start = tuple(sorted(new_names))
    else:
        touched_set = set(touched)
        stop = tuple(sorted(old_names & touched_set))
        start = tuple(sorted(new_names & touched_set))
    reasons = tuple(reboot_reasons + other_reasons) or ("nothing changed",)
    return UpdatePlan(
        objects_to_fetch=fetch,
        containers_to_stop=stop,
        containers_to_start=start,
        containers_unchanged=unchanged,
        reboot=reboot,
        reasons=reasons,
    )

"""What to run at boot, given what the bootloader did (pure).

The bootloader (U-Boot, GRUB, the dev launcher, the VM launcher) applies the
``pv_try``/``pv_trying``/``pv_rev`` rule and passes the revision it booted
in ``pv_boot_rev``.  From that, the boot environment, ``refs/current``
and the progress journals, :func:`plan_boot` decides:

- which revision the supervisor runs;
- whether this boot is a *try* (its revision must pass testing to commit);
- which revisions failed: a ``pv_try`` that is set while another revision
  booted means the try boot never committed (a container failed, a goal
  timed out, the supervisor crashed, the watchdog fired or the power went),
  and any revision whose journal still says TESTING but is not running
  failed the same way (a no-reboot update interrupted by a reboot);
- the boot-environment changes that follow (clear a failed try; adopt the
  running revision as ``pv_rev`` on a device whose environment is blank);
- whether the running revision is the committed one (``pv_rev``): then its
  journal and the ``done``/``current`` refs must say so, and a commit the
  power cut after its commit point (the boot-environment write) is finished
  (:func:`pvinit.update.recovery.settle_committed`).
"""

from __future__ import annotations

from collections.abc import Mapping

from pvinit.record import field, record
from pvinit.update.machine import UpdateState


def env_revision(env: Mapping[str, str], key: str) -> int | None:
    """A revision number from the boot environment; garbage reads as absent."""
    value = env.get(key, "").strip()
    return int(value) if value.isdigit() else None


@record(frozen=True)
class BootFacts:
    booted: int | None
    """What the bootloader says it booted (None: it did not say)."""
    env: Mapping[str, str]
    current: int | None
    journals: Mapping[int, UpdateState] = field(default_factory=dict)


@record(frozen=True)
class BootPlan:
    run: int | None
    testing: bool
    failed: tuple[tuple[int, str], ...] = ()
    env_changes: Mapping[str, str | None] = field(default_factory=dict)
    committed: int | None = None
    """The running revision when the boot environment names it committed (``pv_rev``)."""


def plan_boot(facts: BootFacts) -> BootPlan:
    pv_rev = env_revision(facts.env, "pv_rev")
    pv_try = env_revision(facts.env, "pv_try")
    run = facts.booted
    if run is None:
        run = pv_rev if pv_rev is not None else facts.current
    testing = pv_try is not None and run == pv_try
    failed: list[tuple[int, str]] = []
    changes: dict[str, str | None] = {}
    if pv_try is not None and run != pv_try:
        failed.append(
            (
                pv_try,
                f"the try boot of revision {pv_try} did not commit (a container failed, a goal "
                f"timed out, the supervisor or device crashed, or power was lost); "
                f"the bootloader went back to revision {run}",
            )
        )
        changes.update({"pv_try": None, "pv_trying": None})
    for revision, state in sorted(facts.journals.items()):
        if state is not UpdateState.TESTING or revision == run:
            continue
        if any(revision == f for f, _ in failed):
            continue
        failed.append(
            (revision, f"revision {revision} was still testing when the device restarted; "
                       f"running revision {run} instead")
        )
    if run is not None and pv_rev is None and not testing:
        changes["pv_rev"] = str(run)
        pv_rev = run
    committed = run if run is not None and run == pv_rev and not testing else None
    return BootPlan(run=run, testing=testing, failed=tuple(failed), env_changes=changes,
                    committed=committed)

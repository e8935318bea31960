"""What to do when a container's init ends: restart it later, leave it, or reboot (pure).

The rules (DESIGN.md, issue 3):

- restart policy ``system``: any exit of the container reboots the device;
- restart policy ``container``: ``auto_recovery`` decides.  ``policy`` ``no``
  never restarts, ``on-failure`` restarts after a non-zero exit, ``always``
  after any exit.  The n-th restart in a row waits
  ``retry_delay * backoff_factor ** n`` seconds; after ``max_retries``
  restarts in a row the next exit reboots the device.  A run that lasted
  ``stable_timeout`` seconds or more resets the count: the container had
  recovered.
- no ``auto_recovery`` at all means ``policy: no``: a container that
  should come back says so in its run.json.  It then stays EXITED/FAILED.
"""

from __future__ import annotations

import enum

from pvinit.record import record
from pvinit.state.documents import AutoRecovery


class Verdict(enum.Enum):
    RESTART = "restart"
    LEAVE = "leave"
    REBOOT = "reboot"


@record(frozen=True)
class ExitDecision:
    """The verdict, the delay before a restart, the new count of restarts in a row, and why."""

    verdict: Verdict
    delay: float = 0.0
    retries: int = 0
    reason: str = ""


def backoff_delay(recovery: AutoRecovery, retries: int) -> float:
    """Seconds before restart number ``retries + 1`` in a row."""
    return float(recovery.retry_delay) * float(recovery.backoff_factor) ** retries


def decide_exit(
    *,
    restart_policy: str,
    recovery: AutoRecovery | None,
    exit_status: int,
    retries: int,
    ran_for: float,
) -> ExitDecision:
    """Decide the fate of a container whose init ended with ``exit_status`` after ``ran_for`` s.

    ``retries`` is the number of restarts in a row before this exit.
    """
    how = f"exited with status {exit_status}"
    if restart_policy == "system":
        return ExitDecision(Verdict.REBOOT, retries=retries, reason=f"{how}; restart policy system")
    if recovery is None or recovery.policy == "no":
        return ExitDecision(Verdict.LEAVE, retries=retries, reason=f"{how}; no auto_recovery")
    if recovery.policy == "on-failure" and exit_status == 0:
        return ExitDecision(Verdict.LEAVE, retries=retries, reason=f"{how}; policy on-failure")
    if ran_for >= float(recovery.stable_timeout):
        retries = 0
    if retries >= recovery.max_retries:
        return ExitDecision(
            Verdict.REBOOT,
            retries=retries,
            reason=f"{how}; {retries} restarts in a row exhausted max_retries",
        )
    delay = backoff_delay(recovery, retries)
    return ExitDecision(
        Verdict.RESTART,
        delay=delay,
        retries=retries + 1,
        reason=f"{how}; restart {retries + 1}/{recovery.max_retries} in {delay:g}s",
    )

"""Restart decisions of the supervisor (pure)."""

from __future__ import annotations

import pytest

from pvinit.state.documents import AutoRecovery
from pvinit.supervisor.recovery import Verdict, backoff_delay, decide_exit

RECOVERY = AutoRecovery(
    policy="on-failure", max_retries=3, retry_delay=1, backoff_factor=2.0, stable_timeout=30
)


def decide(status: int = 1, retries: int = 0, ran_for: float = 0.0, **kw: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {"restart_policy": "container", "recovery": RECOVERY}
    values.update(kw)
    return decide_exit(exit_status=status, retries=retries, ran_for=ran_for, **values)  # type: ignore[arg-type]


def test_backoff_grows_by_the_factor_per_restart_in_a_row() -> None:
    assert [backoff_delay(RECOVERY, n) for n in range(4)] == [1.0, 2.0, 4.0, 8.0]


def test_a_failing_container_is_restarted_with_the_next_delay() -> None:
    decision = decide(retries=1)
    assert decision.verdict is Verdict.RESTART
    assert decision.delay == 2.0
    assert decision.retries == 2
    assert "restart 2/3 in 2s" in decision.reason


def test_exhausted_retries_reboot() -> None:
    decision = decide(retries=3)
    assert decision.verdict is Verdict.REBOOT
    assert "exhausted" in decision.reason


def test_a_run_longer_than_stable_timeout_resets_the_count() -> None:
    decision = decide(retries=3, ran_for=30)
    assert decision.verdict is Verdict.RESTART
    assert decision.retries == 1
    assert decision.delay == 1.0


def test_system_policy_reboots_on_any_exit() -> None:
    assert decide(status=0, restart_policy="system").verdict is Verdict.REBOOT


@pytest.mark.parametrize(
    ("policy", "status", "verdict"),
    [("on-failure", 0, Verdict.LEAVE), ("always", 0, Verdict.RESTART),
     ("no", 1, Verdict.LEAVE), ("on-failure", 137, Verdict.RESTART)],
)  # fmt: skip
def test_recovery_policy_decides_which_exits_restart(
    policy: str, status: int, verdict: Verdict
) -> None:
    recovery = AutoRecovery(policy=policy)
    assert decide(status=status, recovery=recovery).verdict is verdict


def test_no_auto_recovery_means_the_container_is_left_stopped() -> None:
    decision = decide(recovery=None)
    assert decision.verdict is Verdict.LEAVE
    assert "no auto_recovery" in decision.reason

"""The status document: round trip, goals, the table the launcher prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvinit.errors import InvalidJSONError
from pvinit.supervisor.status import (
    ContainerReport,
    ContainerStatus,
    GroupReport,
    GroupStatus,
    StatusDocument,
    SupervisorPhase,
    format_table,
    goal_reached,
    read_status,
    write_status,
)

DOC = StatusDocument(
    revision=3,
    phase=SupervisorPhase.RUNNING,
    pid=42,
    updated=1000.0,
    groups=(GroupReport("app", "STARTED", GroupStatus.REACHED),),
    containers=(
        ContainerReport("sensor", "app", ContainerStatus.READY, "READY", pid=7, started_at=900.0),
        ContainerReport("broken", "app", ContainerStatus.FAILED, "STARTED", reason="no init"),
    ),
)


def test_status_round_trips_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pvinit" / "status.json"
    write_status(path, DOC)
    assert read_status(path) == DOC
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]


def test_a_missing_status_file_reads_as_none(tmp_path: Path) -> None:
    assert read_status(tmp_path / "nothing.json") is None


def test_a_broken_status_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text('{"phase": "DANCING", "pid": 1, "updated": 0}')
    with pytest.raises(InvalidJSONError) as caught:
        read_status(path)
    assert caught.value.where == str(path)


@pytest.mark.parametrize(
    ("status", "goal", "reached"),
    [(ContainerStatus.MOUNTED, "MOUNTED", True), (ContainerStatus.MOUNTED, "STARTED", False),
     (ContainerStatus.READY, "STARTED", True), (ContainerStatus.STARTED, "READY", False),
     (ContainerStatus.FAILED, "MOUNTED", False)],
)  # fmt: skip
def test_goal_reached_follows_the_goal_order(
    status: ContainerStatus, goal: str, reached: bool
) -> None:
    assert goal_reached(status, goal) is reached


def test_same_content_ignores_only_the_update_stamp() -> None:
    later = StatusDocument.from_dict({**DOC.to_dict(), "updated": 2000.0})
    assert later.same_content(DOC)
    assert not StatusDocument.from_dict({**DOC.to_dict(), "revision": 4}).same_content(DOC)


def test_table_shows_name_group_status_pid_uptime_and_reason() -> None:
    lines = format_table(DOC, now=1000.0).splitlines()
    assert lines[0] == "revision 3  RUNNING"
    assert lines[1].split() == ["NAME", "GROUP", "STATUS", "GOAL", "PID", "UPTIME", "RESTARTS",
                                "REASON"]  # fmt: skip
    assert lines[2].split() == ["sensor", "app", "READY", "READY", "7", "1:40", "0"]
    assert lines[3].split()[:5] == ["broken", "app", "FAILED", "STARTED", "-"]
    assert lines[3].endswith("no init")

"""The supervisor's status document: what runs, how far each container got, and why not.

Written to ``<run-dir>/pvinit/status.json`` on every change, by atomic
rename but without fsync: it is runtime state on a tmpfs, rebuilt at every
boot.  ``pvinit --storage`` (the dev launcher), ``pvctl`` and the tests read
it; :meth:`StatusDocument.from_dict` is the one parser.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

from pvinit.errors import InvalidJSONError
from pvinit.record import field, record
from pvinit.state.canonical import parse_json
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

STATUS_FILE = Path("pvinit") / "status.json"


class ContainerStatus(enum.StrEnum):
    """Where one container is, as the supervisor sees it.

    WAITING: its group has not started; MOUNTED: volumes mounted, LXC config
    written; STARTED: LXC RUNNING; READY: sent READY=1; STOPPING / STOPPED:
    during an orderly stop; EXITED: its init ended with 0; FAILED: it ended
    with an error or could not start (``reason`` says which).
    """

    WAITING = "WAITING"
    MOUNTED = "MOUNTED"
    STARTED = "STARTED"
    READY = "READY"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    EXITED = "EXITED"
    FAILED = "FAILED"


class SupervisorPhase(enum.StrEnum):
    """The supervisor's own life: booting groups, all goals reached, going down."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    REBOOTING = "REBOOTING"
    ERROR = "ERROR"


class GroupStatus(enum.StrEnum):
    WAITING = "WAITING"
    STARTING = "STARTING"
    REACHED = "REACHED"
    TIMED_OUT = "TIMED_OUT"


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


@record(frozen=True)
class ContainerReport:
    """One container's line in the status document."""

    name: str
    group: str
    status: ContainerStatus
    goal: str
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "status": self.status.value,
            "goal": self.goal,
            "pid": self.pid,
            "started_at": self.started_at,
            "restarts": self.restarts,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str) -> ContainerReport:
        try:
            return cls(
                name=str(data["name"]),
                group=str(data["group"]),
                status=ContainerStatus(data["status"]),
                goal=str(data["goal"]),
                pid=_opt_int(data.get("pid")),
                started_at=_opt_float(data.get("started_at")),
                restarts=_opt_int(data.get("restarts")) or 0,
                reason=_opt_str(data.get("reason")),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise InvalidJSONError(f"bad container entry: {error!r}", where=where) from None

    @property
    def goal_reached(self) -> bool:
        return goal_reached(self.status, self.goal)


@record(frozen=True)
class GroupReport:
    name: str
    goal: str
    status: GroupStatus

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "goal": self.goal, "status": self.status.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str) -> GroupReport:
        try:
            return cls(
                name=str(data["name"]), goal=str(data["goal"]), status=GroupStatus(data["status"])
            )
        except (KeyError, ValueError, TypeError) as error:
            raise InvalidJSONError(f"bad group entry: {error!r}", where=where) from None


@record(frozen=True)
class StatusDocument:
    """The whole status: revision, phase, groups in boot order, containers in boot order."""

    revision: int | None
    phase: SupervisorPhase
    pid: int
    updated: float
    reason: str | None = None
    groups: tuple[GroupReport, ...] = ()
    containers: tuple[ContainerReport, ...] = field(default_factory=tuple)

    def container(self, name: str) -> ContainerReport | None:
        for report in self.containers:
            if report.name == name:
                return report
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "phase": self.phase.value,
            "pid": self.pid,
            "updated": self.updated,
            "reason": self.reason,
            "groups": [g.to_dict() for g in self.groups],
            "containers": [c.to_dict() for c in self.containers],
        }

    @classmethod
    def from_dict(cls, data: object, *, where: str = "status.json") -> StatusDocument:
        if not isinstance(data, dict):
            raise InvalidJSONError("status is not a JSON object", where=where)
        try:
            groups = tuple(
                GroupReport.from_dict(g, where=f"{where}#groups[{i}]")
                for i, g in enumerate(data.get("groups", []))
            )
            containers = tuple(
                ContainerReport.from_dict(c, where=f"{where}#containers[{i}]")
                for i, c in enumerate(data.get("containers", []))
            )
            return cls(
                revision=_opt_int(data.get("revision")),
                phase=SupervisorPhase(data["phase"]),
                pid=int(data["pid"]),
                updated=float(data["updated"]),
                reason=_opt_str(data.get("reason")),
                groups=groups,
                containers=containers,
            )
        except (KeyError, ValueError, TypeError) as error:
            raise InvalidJSONError(f"bad status document: {error!r}", where=where) from None

    def same_content(self, other: StatusDocument | None) -> bool:
        """Equal but for the ``updated`` stamp (what a status printer compares)."""
        if other is None:
            return False
        mine, theirs = self.to_dict(), other.to_dict()
        mine.pop("updated")
        theirs.pop("updated")
        return mine == theirs


_REACHES = {
    "MOUNTED": frozenset({ContainerStatus.MOUNTED, ContainerStatus.STARTED, ContainerStatus.READY}),
    "STARTED": frozenset({ContainerStatus.STARTED, ContainerStatus.READY}),
    "READY": frozenset({ContainerStatus.READY}),
}


def goal_reached(status: ContainerStatus, goal: str) -> bool:
    """True when a container in ``status`` has reached status goal ``goal`` (pure)."""
    return status in _REACHES.get(goal, frozenset())


def write_status(path: Path, document: StatusDocument) -> None:
    """Replace the status file atomically (temp + rename; no fsync: it is runtime state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(document.to_dict(), sort_keys=True, indent=1).encode() + b"\n"
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_status(path: Path) -> StatusDocument | None:
    """The status document, or None when there is none (yet)."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return StatusDocument.from_dict(parse_json(data, where=str(path)), where=str(path))


def format_uptime(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_table(document: StatusDocument, now: float | None = None) -> str:
    """The status as a text table: name, group, status, pid, uptime, reason (pure but for now)."""
    moment = time.time() if now is None else now
    head = (
        f"revision {document.revision if document.revision is not None else '-'}"
        f"  {document.phase.value}" + (f"  ({document.reason})" if document.reason else "")
    )
    rows = [("NAME", "GROUP", "STATUS", "GOAL", "PID", "UPTIME", "RESTARTS", "REASON")]
    for c in document.containers:
        running = c.status in (ContainerStatus.STARTED, ContainerStatus.READY)
        uptime = format_uptime(moment - c.started_at) if running and c.started_at else "-"
        rows.append(
            (
                c.name,
                c.group,
                c.status.value,
                c.goal,
                str(c.pid) if c.pid else "-",
                uptime,
                str(c.restarts),
                c.reason or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [head]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)

"""End to end: ``pvinit --storage DIR --factory BUNDLE``: launcher, PID 1, supervisor (root)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pvinit.pid1.locate import find_dev_pid1, status_path
from pvinit.pid1.record import read_record
from pvinit.supervisor.status import StatusDocument, read_status
from tests.integration.test_containers_support import pvnotify_binary
from tests.integration.test_supervisor_support import (
    REPO,
    Device,
    container,
    device,
    group,
    supervisor_image,
)

__all__ = ["device", "pvnotify_binary", "supervisor_image"]  # fixtures used by name

pytest.importorskip("pvinit.containers.lxc_driver", reason="needs python-lxc")
pytestmark = pytest.mark.root


def supervisor_of(pid1: int) -> int:
    """The one child of PID 1 that calls itself ``pvinit.supervisor``."""
    children = [int(p) for p in Path(f"/proc/{pid1}/task/{pid1}/children").read_text().split()]
    named = [pid for pid in children
             if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"pvinit.supervisor\0")]
    assert len(named) == 1, children
    return named[0]


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):  # a container's short-lived child may be gone
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(w) for w in (task / "children").read_text().split())
    return found


def thp_enabled(pid: int) -> str:
    """``THP_enabled`` of ``/proc/<pid>/status``: "0" once PR_SET_THP_DISABLE is set."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("THP_enabled:"):
                return line.split()[1]
    return "gone"


def check_supervisor_is_a_clean_fork(pid1: int) -> None:
    """The supervisor PID 1 forked (no exec) starts as cleanly as an exec'd one would.

    Own session, no blocked signal, only the ignored signals a new
    interpreter sets (SIGPIPE, SIGXFSZ), none of PID 1's descriptors beyond
    0-2, and its own name in ``ps``.
    """
    supervisor = supervisor_of(pid1)
    status = dict(line.split(":\t", 1)
                  for line in Path(f"/proc/{supervisor}/status").read_text().splitlines())
    assert int(status["SigBlk"], 16) == 0
    python_ignores = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))
    assert int(status["SigIgn"], 16) == python_ignores
    stat = Path(f"/proc/{supervisor}/stat").read_text()
    assert int(stat.rsplit(")", 1)[1].split()[3]) == supervisor  # session leader
    def targets(pid: int, low: int) -> set[str]:
        fds = Path(f"/proc/{pid}/fd")
        return {str(fd.readlink()) for fd in fds.iterdir() if int(fd.name) >= low}
    assert not targets(pid1, 3) & targets(supervisor, 3), "a PID 1 descriptor leaked"


def test_pvinit_boots_every_container_to_its_goal_and_powers_off_in_order(
    device: Device,
) -> None:
    bundle = device.bundle(
        [group("data", "MOUNTED"), group("platform", "READY", policy="system"), group("app")],
        [container("platform", "platform", "/bin/notify.sh"),
         container("sensor", "app", "/bin/notify.sh", goal="READY"),
         container("dashboard", "app", "/bin/run.sh")],
    )  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pvinit.cli.pvinit", "--storage", str(device.storage),
         "--factory", str(bundle), "--status-interval", "0.2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        doc: StatusDocument | None = None
        while time.monotonic() < deadline and proc.poll() is None:
            pid = find_dev_pid1(device.storage)
            if pid is not None:
                try:
                    doc = read_status(status_path(pid, device.storage))
                except OSError:
                    doc = None
                if doc is not None and doc.phase.value == "RUNNING":
                    break
            time.sleep(0.1)
        assert doc is not None and doc.phase.value == "RUNNING", doc
        assert {c.name: c.status.value for c in doc.containers} == {
            "platform": "READY", "sensor": "READY", "dashboard": "STARTED",
        }  # fmt: skip
        assert pid is not None
        check_supervisor_is_a_clean_fork(pid)
        # Its containers were defined, started and are watched without liblxc in its memory.
        maps = Path(f"/proc/{supervisor_of(pid)}/maps").read_text()
        assert "liblxc" not in maps and "_lxc." not in maps
        # pvinit's own processes opt out of transparent huge pages, its containers do not.
        assert thp_enabled(pid) == thp_enabled(supervisor_of(pid)) == "0"
        others = set(descendants(pid)) - {pid, supervisor_of(pid)}  # monitors, containers
        assert others
        assert {thp_enabled(p) for p in others} - {"gone"} == {"1"}
        # The launcher prints the table it read through the same path.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("RUNNING" in line for line in out):
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: orderly power-off
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    table = "".join(out)
    assert "RUNNING" in table
    assert "sensor" in table and "READY" in table and "dashboard" in table
    record = read_record(device.storage)
    assert record is not None and record.action.value == "poweroff"
    log = (device.layout.logs / "1" / "pvinit" / "pvinit.log").read_text()
    stops = [line for line in log.splitlines() if line.endswith(": STOPPED")]
    # Reverse group order (app before platform), reverse order inside a group.
    assert [line.split()[-2].rstrip(":") for line in stops] == ["sensor", "dashboard", "platform"]
    assert "stopped (SIGTERM); exiting" in log
    assert device.mounts_left() == []

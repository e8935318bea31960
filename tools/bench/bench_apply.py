#!/usr/bin/env python3
"""Benchmark (issue 4): how long a device takes to apply an update, and to roll a bad one back.

Each run boots a fresh dev device (``pvinit --storage``: launcher + PID 1 +
supervisor + real LXC) on revision 1 of a real ``pvstate`` checkout (a
busybox rootfs with ~2 MB of data, containers ``platform`` and ``app``),
with ``commit_delay`` 0 so the numbers are the machinery's, not a policy's:

- **apply**: revision 2 changes one file of the app's image (a one-object
  delta, no reboot).  Timed from dropping its bundle into the inbox to the
  new app running (status ``RUNNING`` on revision 2 with the app's new init
  pid STARTED: fetch, install, restart the app), and to the journal saying
  ``UPDATED`` (committed).  Both include
  the inbox poll (up to 1 s) a real device also waits; the commit also waits
  out the app's ``stable_timeout`` (30 s by default: a policy, not work).
- **rollback**: revision 3 changes the platform container (restart policy
  ``system``: a reboot update) to an init that exits at start.  Timed from
  the verdict on that exit (journal ``ERROR``, written as the supervisor
  reaps the exited container) to the device running revision 2 again
  (reboot, bootloader rule, every group started: status ``RUNNING``).

Medians of ``--runs`` (3).  The builders are the integration tests' own
(``tests/integration/test_update_remote.py``), so the bench measures what
the tests check.  Root, LXC, busybox-static, squashfs-tools and a C
compiler (for pvnotify) are needed::

    .venv/bin/python tools/bench/bench_apply.py [--runs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pvinit.cli.pvinit import status_path  # noqa: E402
from pvinit.supervisor.status import StatusDocument, read_status  # noqa: E402
from tests.integration.test_containers_support import compile_pvnotify  # noqa: E402
from tests.integration.test_supervisor_support import SHORT_TMP, Device  # noqa: E402
from tests.integration.test_update_device import Updater, _descendants  # noqa: E402
from tests.integration.test_update_remote import Release  # noqa: E402

POLL = 0.02


def status(u: Updater) -> StatusDocument | None:
    """The supervisor's status document, read through the namespace's PID 1 root."""
    for pid in _descendants(u.proc.pid) if u.proc is not None else []:
        document = read_status(status_path(pid, u.dev.storage))
        if document is not None:
            return document
    return None


def running_revision(u: Updater) -> int | None:
    """The revision the supervisor reports RUNNING (every group reached its goal)."""
    document = status(u)
    return document.revision if document is not None and document.phase.value == "RUNNING" \
        else None


def app_pid(u: Updater) -> int | None:
    """The app container's init pid while it is STARTED (a new pid: it was restarted)."""
    document = status(u)
    for c in document.containers if document is not None else ():
        if c.name == "app" and c.status.value in ("STARTED", "READY"):
            return c.pid
    return None


def wait(u: Updater, what: str, condition: Any, limit: float = 180) -> float:
    """Poll until ``condition()``; returns the monotonic time it first held."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        if u.proc is not None and u.proc.poll() is not None:
            break
        time.sleep(POLL)
    raise SystemExit(f"never saw {what}\n{''.join(u.err)[-3000:]}\n{u.dev.log_text()[-3000:]}")


def one_run(release: Release, image: Path) -> dict[str, float]:
    device = Device(image)
    u = Updater(device)
    try:
        key = release.policy(release.key)
        (device.storage / "config" / "trust.json").write_bytes(key.to_json())
        (device.storage / "config" / "pvinit.json").write_text(json.dumps({"commit_delay": 0}))
        u.boot(release.export(1, device.top / "factory.pvb"))
        wait(u, "revision 1 running", lambda: running_revision(u) == 1 and
             u.env().get("pv_rev") == "1")
        r2 = release.export(2, device.top / "r2.pvb")
        old_pid = app_pid(u)
        start = time.monotonic()
        u.drop(r2)
        live = wait(u, "revision 2 running, app restarted", lambda: running_revision(u) == 2
                    and app_pid(u) not in (None, old_pid))
        applied = wait(u, "revision 2 UPDATED", lambda: u.journal_state(2) == "UPDATED")
        r3 = release.export(3, device.top / "r3.pvb")
        u.drop(r3)
        verdict = wait(u, "revision 3 ERROR", lambda: u.journal_state(3) == "ERROR")
        back = wait(u, "revision 2 running again", lambda: running_revision(u) == 2 and
                    u.env().get("pv_rev") == "2" and "pv_try" not in u.env())
        return {"running_s": live - start, "apply_s": applied - start,
                "rollback_s": back - verdict}
    finally:
        u.poweroff()
        device.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (LXC, mounts, namespaces)")
    with tempfile.TemporaryDirectory(prefix="pvbench", dir=SHORT_TMP) as scratch:
        top = Path(scratch)
        (top / "pvnotify").mkdir()
        release = Release(top, compile_pvnotify(top / "pvnotify"))
        release.container("platform", "platform", "/bin/run.sh", release.platform_rootfs)
        release.app("1")
        release.commit("one")
        release.app("2")
        release.commit("two: one file of the app changes")
        release.container("platform", "platform", "/bin/crash.sh", release.platform_rootfs)
        release.commit("three: the platform exits at start")
        image = top / "unused.squashfs"  # Device needs an image path; the checkout has its own
        image.write_bytes(b"")
        runs = [one_run(release, image) for _ in range(args.runs)]
    result: dict[str, Any] = {
        "runs": runs,
        "running_median_s": round(statistics.median(r["running_s"] for r in runs), 2),
        "apply_median_s": round(statistics.median(r["apply_s"] for r in runs), 2),
        "rollback_median_s": round(statistics.median(r["rollback_s"] for r in runs), 2),
    }
    for run in runs:
        print(f"running {run['running_s']:6.2f} s   committed {run['apply_s']:6.2f} s   "
              f"rollback {run['rollback_s']:6.2f} s")
    print(f"median: running {result['running_median_s']} s, committed "
          f"{result['apply_median_s']} s, rollback {result['rollback_median_s']} s")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PID 1's mounts, for real, inside a private mount namespace of the test's own.

The device mounts (proc, sysfs, devtmpfs, devpts, tmpfs, cgroup2) are made
under a scratch root in ``unshare --mount --propagation private``, so the
host's mount table never changes.  Nothing here remounts a shared
superblock (devtmpfs, sysfs) read-only: that would reach the host.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

SCRIPT = """
import json, os, sys
from pvinit.pid1 import mounts
root = sys.argv[1]
first = mounts.mount_basics(root=root)
second = mounts.mount_basics(root=root)
table = [e.mount_point for e in mounts.read_mountinfo()]
left = mounts.unmount_all(root, keep_api=False, remount_ro=False)
after = [e.mount_point for e in mounts.read_mountinfo() if e.mount_point.startswith(root + "/")]
print(json.dumps({"first": [first.mounted, first.present, first.failed],
                  "second": [second.mounted, second.present, second.failed],
                  "table": table, "left": left, "after": after}))
"""

BUSY_SCRIPT = """
import json, os, sys
from pvinit.pid1 import mounts, syscalls
top = sys.argv[1]
os.makedirs(top + "/busy")
syscalls.libc.mount("tmpfs", top + "/busy", "tmpfs", 0, "size=1m")
held = open(top + "/busy/held", "w")  # keeps the tmpfs busy
left = mounts.unmount_all(top, keep_api=False, remount_ro=True)
entry = [line for line in open("/proc/self/mountinfo") if top + "/busy " in line]
print(json.dumps({"left": left, "entry": entry}))
"""


def run_in_private_mount_ns(script: str, arg: Path) -> dict[str, object]:
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--",
         sys.executable, "-c", script, str(arg)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_basic_mounts_are_made_once_and_unmounted_in_reverse(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = run_in_private_mount_ns(SCRIPT, root)
    expected = [
        f"{root}/proc", f"{root}/sys", f"{root}/dev", f"{root}/dev/pts",
        f"{root}/dev/shm", f"{root}/run", f"{root}/sys/fs/cgroup",
    ]  # fmt: skip
    assert result["first"] == [expected, [], []]
    assert result["second"] == [[], expected, []]  # nothing is mounted twice
    table = result["table"]
    assert isinstance(table, list)
    assert [p for p in table if p.startswith(f"{root}/")] == expected
    assert (result["left"], result["after"]) == ([], [])
    with open("/proc/self/mountinfo") as handle:
        assert str(root) not in handle.read()  # the host never saw any of it


def test_busy_mount_is_remounted_read_only_at_shutdown(tmp_path: Path) -> None:
    result = run_in_private_mount_ns(BUSY_SCRIPT, tmp_path)
    assert result["left"] == []
    entry = result["entry"]
    assert isinstance(entry, list) and len(entry) == 1
    assert entry[0].split()[5].startswith("ro")  # per-mount options: read-only now

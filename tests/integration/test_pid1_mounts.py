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
for name in ("reader", "writer"):
    os.makedirs(top + "/" + name)
    syscalls.libc.mount("tmpfs", top + "/" + name, "tmpfs", 0, "size=1m")
    open(top + "/" + name + "/file", "w").close()
reading = open(top + "/reader/file")  # busy: no unmount, but read-only is possible
writing = open(top + "/writer/file", "w")  # busy even for a read-only remount
left = mounts.unmount_all(top, keep_api=False, remount_ro=True)
entries = {e.mount_point: e for e in mounts.read_mountinfo()}
options = [line.split()[5] for line in open("/proc/self/mountinfo") if top + "/reader " in line]
print(json.dumps({"left": left, "reader": options, "writer": top + "/writer" in entries}))
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


def test_busy_mount_is_made_read_only_or_reported_at_shutdown(tmp_path: Path) -> None:
    result = run_in_private_mount_ns(BUSY_SCRIPT, tmp_path)
    reader = result["reader"]
    assert isinstance(reader, list) and len(reader) == 1
    assert reader[0].startswith("ro")  # still mounted, but safe for the power cut
    assert result["left"] == [f"{tmp_path}/writer"]  # not safe: reported...
    assert result["writer"] is False  # ...and detached out of the way

"""The ``mgmt`` role: the control socket's directory inside a container, and only there (root).

A dev device runs two containers from the same image: ``tech`` lists
``"roles": ["mgmt"]`` in its run.json, ``app`` does not.  From the host, the
test looks into each container's own mount namespace through
``/proc/<its init>/root`` (no ``lxc-attach``): ``tech`` has
``/run/pvinit/ctl/ctl.sock`` and ``curl --unix-socket`` answers through it
as root (no user namespace: root inside is root to SO_PEERCRED); ``app``
has only its notify socket.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest

from pvinit.control.client import ControlClient
from tests.conftest import need_tool
from tests.integration.test_containers_support import pvnotify_binary
from tests.integration.test_control_device import ctl_socket
from tests.integration.test_supervisor_support import container, device, supervisor_image
from tests.integration.test_update_device import GROUPS, RECOVERY, Updater, _descendants, updater

__all__ = ["device", "pvnotify_binary", "supervisor_image", "updater"]

pytest.importorskip("pvinit.containers.lxc_driver", reason="needs python-lxc")
pytestmark = [pytest.mark.root, pytest.mark.slow]


def containers() -> list[dict[str, object]]:
    platform = container("platform", "platform", "/bin/run.sh")
    tech = container("tech", "app", "/bin/run.sh", recovery=RECOVERY)
    tech["roles"] = ["mgmt"]
    app = container("app", "app", "/bin/run.sh", recovery=RECOVERY)
    return [platform, tech, app]


def host_pid(u: Updater, pid_in_device: int) -> int:
    """The host pid of a process the device's supervisor knows as ``pid_in_device``."""
    assert u.proc is not None
    for pid in _descendants(u.proc.pid):
        with contextlib.suppress(OSError, StopIteration):
            status = Path(f"/proc/{pid}/status").read_text()
            nspid = next(line for line in status.splitlines() if line.startswith("NSpid:"))
            levels = nspid.split()[1:]
            if len(levels) >= 2 and levels[1] == str(pid_in_device):
                return pid
    raise AssertionError(f"no host process for device pid {pid_in_device}")


def mount_points(pid: int) -> set[str]:
    lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    return {line.split(" ")[4] for line in lines}


def test_only_a_mgmt_container_sees_the_control_socket_and_it_answers_from_inside(
    updater: Updater,
) -> None:
    need_tool("curl")
    u = updater
    factory = u.bundle(GROUPS, containers(), name="factory.pvb")
    u.boot(factory)
    u.wait("revision 1 running", lambda: u.running(1))
    sock = ctl_socket(u)
    u.wait("control socket", sock.exists)
    assert sock.is_symlink()  # the well-known path points into ctl/
    rows = {c["name"]: c for c in ControlClient(sock).call("GET", "/v1/containers")["containers"]}
    tech, app = host_pid(u, rows["tech"]["pid"]), host_pid(u, rows["app"]["pid"])

    inside = Path(f"/proc/{tech}/root/run/pvinit/ctl/ctl.sock")
    assert inside.is_socket()
    assert "/run/pvinit/ctl" in mount_points(tech)
    curl = subprocess.run(["curl", "-sS", "--unix-socket", str(inside), "http://d/v1/status"],
                          capture_output=True, text=True, check=True, timeout=30)
    assert json.loads(curl.stdout)["revision"] == 1
    assert sorted(p.name for p in inside.parent.iterdir()) == ["ctl.sock"]  # nothing else

    assert Path(f"/proc/{app}/root/run/pvinit/notify").is_socket()
    assert not Path(f"/proc/{app}/root/run/pvinit/ctl").exists()
    assert "/run/pvinit/ctl" not in mount_points(app)
    assert Path(f"/proc/{tech}/root/run/pvinit/notify").is_socket()  # readiness too

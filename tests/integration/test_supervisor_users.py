"""run.json ``cwd`` and ``user`` applied by the supervisor to real LXC containers (as root).

The image has its own ``/etc/passwd`` and ``/etc/group`` (users the host
does not have); each container prints ``id`` and ``pwd`` from inside to its
console log, which the test reads.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_containers_support import build_rootfs, make_squashfs, pvnotify_binary
from tests.integration.test_supervisor_support import Device, container, group

__all__ = ["pvnotify_binary"]  # fixture used by name

pytest.importorskip("pvinit.containers.lxc_driver", reason="needs python-lxc")
pytestmark = pytest.mark.root

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
svc:x:1234:2345:a service:/home/svc:/bin/sh
broken line is skipped
app:x:1000:1000::/home/app:/bin/sh
"""
GROUP = """\
root:x:0:
svcgrp:x:2345:
extra:x:3000:svc
app:x:1000:
"""
#: Prints who and where it is, then waits for SIGTERM.
WHOAMI = """#!/bin/sh
trap 'exit 0' TERM
echo "WHO uid=$(id -u) gid=$(id -g) groups=$(id -G) pwd=$(pwd) home=${HOME:-unset}"
sleep 1000 &
wait $!
"""


@pytest.fixture(scope="session")
def users_image(tmp_path_factory: pytest.TempPathFactory, pvnotify_binary: Path) -> Path:
    base = tmp_path_factory.mktemp("usersimage")
    root = build_rootfs(base / "rootfs", pvnotify_binary)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    script = root / "bin" / "whoami.sh"
    script.write_text(WHOAMI)
    script.chmod(0o755)
    return make_squashfs(root, base / "root.squashfs")


@pytest.fixture
def device(users_image: Path) -> Iterator[Device]:
    world = Device(users_image)
    try:
        yield world
    finally:
        world.cleanup()


def who(device: Device, name: str, timeout: float = 20.0) -> dict[str, str]:
    """The ``WHO`` line the container printed to its console log, as a dict."""
    log = device.layout.log_dir(1, name) / "console.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.is_file() else ""
        match = re.search(r"WHO (uid=.*? home=\S*)", text)
        if match:
            return dict(item.split("=", 1) for item in re.split(r" (?=\w+=)", match.group(1)))
        time.sleep(0.05)
    raise AssertionError(f"{name} printed no WHO line; console: {text!r}\n{device.log_text()}")


def run_json(name: str, **fields: object) -> dict[str, object]:
    doc = container(name, "app", "/bin/whoami.sh")
    doc.update(fields)
    return doc


def test_cwd_and_user_apply_inside_the_container(device: Device) -> None:
    device.install(
        [group("app")],
        [run_json("numeric", cwd="/data", user="1000:1000"),
         run_json("named", cwd="/srv/work", user="svc"),
         run_json("uidonly", user="4242"),
         run_json("plain"),
         run_json("ownhome", user="svc", env={"HOME": "/opt/own"})],
    )  # fmt: skip
    device.start()
    doc = device.wait_for(lambda d: d.phase.value == "RUNNING")
    assert set(device.statuses(doc).values()) == {"STARTED"}
    # uid:gid as given; the missing /data is created (in the overlay) like Docker does.
    # HOME comes from the image's passwd entry, as runc sets it.
    assert who(device, "numeric") == {"uid": "1000", "gid": "1000", "groups": "1000",
                                      "pwd": "/data", "home": "/home/app"}  # fmt: skip
    # A name from the image's own passwd: its uid, primary gid and the groups listing it.
    assert who(device, "named") == {"uid": "1234", "gid": "2345", "groups": "2345 3000",
                                    "pwd": "/srv/work", "home": "/home/svc"}  # fmt: skip
    # A uid the image's passwd does not know: gid 0 and HOME /, as runc does.
    assert who(device, "uidonly") == {"uid": "4242", "gid": "0", "groups": "0", "pwd": "/",
                                      "home": "/"}  # fmt: skip
    # Neither field: root in /, with root's HOME; an env HOME wins over passwd.
    assert who(device, "plain") == {"uid": "0", "gid": "0", "groups": "0", "pwd": "/",
                                    "home": "/root"}  # fmt: skip
    assert who(device, "ownhome")["home"] == "/opt/own"
    config = (device.run_dir / "pvinit" / "lxc" / "named" / "config").read_text()
    assert "lxc.init.uid = 1234\n" in config and "lxc.init.cwd = /srv/work\n" in config
    assert device.stop() == 0
    assert device.mounts_left() == []
    # The created working directory lives in the container's overlay upper layer.
    assert (device.layout.disks / "boot" / "numeric" / "lxc-overlay" / "upper" / "data").is_dir()


def test_an_unknown_user_fails_that_container_with_the_reason(device: Device) -> None:
    device.install(
        [group("app", timeout=2)],
        [run_json("ghostly", user="ghost"),
         run_json("badgroup", user="app:ghosts"),
         run_json("good", user="app")],
    )  # fmt: skip
    device.start()
    doc = device.wait_for(lambda d: d.phase.value == "RUNNING")
    assert device.statuses(doc) == {"ghostly": "FAILED", "badgroup": "FAILED", "good": "STARTED"}
    reasons = {c.name: c.reason or "" for c in doc.containers}
    assert reasons["ghostly"] == (
        "cannot mount or define: ghostly: user 'ghost' is not in the container's /etc/passwd"
    )
    assert reasons["badgroup"] == (
        "cannot mount or define: badgroup: group 'ghosts' is not in the container's /etc/group"
    )
    assert who(device, "good")["uid"] == "1000"
    assert f"ghostly: FAILED: {reasons['ghostly']}" in device.log_text()
    assert device.stop() == 0
    assert device.mounts_left() == []
    assert device.containers_left() == []

"""Busy rules on a device: while a revision is under test, reboot/rollback/install are refused.

A dev device boots revision 1, then takes a revision 2 that needs a reboot
with a long commit delay, so revision 2 sits in TESTING.  ``pvctl reboot``,
``pvctl rollback`` and ``pvctl install`` (upload and on-device path) must each
exit 8 (busy) with a retry hint, and the boot environment, the refs, the
journals, the inbox and the boot count must be exactly as before.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from pvinit.control.client import ControlClient
from pvinit.errors import BusyError
from pvinit.trails.refs import REF_NAMES, read_ref
from tests.integration.test_containers_support import pvnotify_binary
from tests.integration.test_control_device import ctl_socket
from tests.integration.test_supervisor_support import device, group, supervisor_image
from tests.integration.test_update_device import Updater, base_containers, boot_factory, updater

__all__ = ["device", "pvnotify_binary", "supervisor_image", "updater"]

pytest.importorskip("pvinit.containers.lxc_driver", reason="needs python-lxc")
pytestmark = [pytest.mark.root, pytest.mark.slow]


def pvctl(sock: Path, *args: str) -> tuple[int, str]:
    from pvinit.cli import pvctl as cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["--socket", str(sock), *args])
    return code, err.getvalue()


def snapshot(u: Updater) -> dict[str, object]:
    layout = u.dev.layout
    inbox = u.dev.storage / "inbox"
    return {
        "env": u.env(),
        "refs": {name: read_ref(layout, name) for name in REF_NAMES},
        "journals": sorted((p.name, p.read_bytes()) for p in (u.dev.storage / "progress")
                           .glob("*.json")),
        "inbox": sorted(str(p.relative_to(inbox)) for p in inbox.rglob("*")),
        "boots": u.boots(),
        "trails": sorted(p.name for p in layout.trails.iterdir()),
    }


def test_reboot_rollback_and_install_are_refused_while_a_revision_is_tested(
    updater: Updater,
) -> None:
    u = updater
    (u.dev.storage / "config" / "pvinit.json").write_text(json.dumps({"commit_delay": 600}))
    boot_factory(u)
    groups = [group("platform", policy="system", timeout=12), group("app", timeout=10)]
    u.drop(u.bundle(groups, base_containers(), name="r2.pvb"))
    u.wait("revision 2 running as a try", lambda: u.running(2))
    u.wait("revision 2 TESTING", lambda: u.journal_state(2) == "TESTING")
    sock = ctl_socket(u)
    u.wait("control socket", sock.exists)
    status = ControlClient(sock).call("GET", "/v1/status")
    assert status["update"]["busy"] and "tested" in status["update"]["why"]
    r3 = u.bundle(groups, base_containers(app_env="3"), name="r3.pvb")
    before = snapshot(u)

    for args in (["reboot"], ["rollback"], ["rollback", "1"], ["install", str(r3)],
                 ["install", "--on-device", str(r3)]):
        code, err = pvctl(sock, *args)
        assert code == BusyError.exit_code == 8, (args, code, err)
        assert "revision 2 is being tested" in err and "retry in" in err, (args, err)

    after = snapshot(u)
    assert after == before
    assert u.journal_state(2) == "TESTING" and u.running(2)
    assert ControlClient(sock).call("GET", "/v1/status")["revision"] == 2

"""The control API on a dev device: launcher + PID 1 + supervisor + real LXC, real clients (root).

Talks to the device's ``ctl.sock`` through ``/proc/<its PID 1>/root``, with
``curl --unix-socket``, ``pvctl`` in-process and as a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pvinit.cli import pvctl
from pvinit.control.client import ControlClient
from pvinit.pid1.locate import find_dev_pid1
from tests.conftest import need_tool
from tests.integration.test_containers_support import pvnotify_binary
from tests.integration.test_supervisor_pvinit import supervisor_of
from tests.integration.test_supervisor_support import REPO, device, supervisor_image
from tests.integration.test_update_device import (
    GROUPS,
    Updater,
    _descendants,
    base_containers,
    boot_factory,
    updater,
)
from tests.unit.test_control_server import MALFORMED, body_of, raw, status_of

__all__ = ["device", "pvnotify_binary", "supervisor_image", "updater"]

pytest.importorskip("pvinit.containers.lxc_driver", reason="needs python-lxc")
pytestmark = [pytest.mark.root, pytest.mark.slow]


def ctl_socket(u: Updater) -> Path:
    assert u.proc is not None
    for pid in _descendants(u.proc.pid):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            nspid = next(line for line in status.splitlines() if line.startswith("NSpid:"))
            if nspid.split()[-1] == "1":
                relative = (u.dev.storage / "run" / "pvinit" / "ctl.sock").relative_to("/")
                return Path(f"/proc/{pid}/root") / relative
    raise AssertionError("no PID 1 found under the launcher")


def pvctl_in_process(sock: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = pvctl.main(["--socket", str(sock), *args])
    return code, out.getvalue()


def booted(u: Updater) -> Path:
    boot_factory(u)
    sock = ctl_socket(u)
    u.wait("control socket", sock.exists)
    return sock


def test_status_and_containers_answer_over_curl_pvctl_and_a_subprocess(updater: Updater) -> None:
    need_tool("curl")
    u = updater
    sock = booted(u)
    curl = subprocess.run(["curl", "-sS", "--unix-socket", str(sock), "http://d/v1/status"],
                          capture_output=True, text=True, check=True, timeout=30)
    status = json.loads(curl.stdout)
    assert status["revision"] == 1 and status["last_committed"] == 1
    assert status["storage"]["objects"]["count"] >= 1
    code, text = pvctl_in_process(sock, "--json", "ps")
    assert code == 0
    names = {c["name"]: c for c in json.loads(text)["containers"]}
    assert names["app"]["status"] == "STARTED" and names["app"]["pid"]
    proc = subprocess.run([sys.executable, "-m", "pvinit.cli.pvctl", "--socket", str(sock), "ps"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split()[:3] == ["NAME", "GROUP", "STATUS"]
    # a field technician on a dev machine names the storage, not the socket
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert pvctl.main(["--storage", str(u.dev.storage), "--json", "status"]) == 0
    assert json.loads(out.getvalue())["revision"] == 1
    # the system container is refused, the app one restarts
    assert pvctl_in_process(sock, "restart", "platform")[0] == 9
    assert pvctl_in_process(sock, "stop", "nobody")[0] == 4
    code, _ = pvctl_in_process(sock, "restart", "app")
    assert code == 0
    code, text = pvctl_in_process(sock, "logs", "pvinit", "-n", "5")
    assert code == 0 and "restart asked by uid 0" in u.dev.log_text()


def test_malformed_requests_leave_the_device_unchanged_and_answering(updater: Updater) -> None:
    u = updater
    sock = booted(u)
    client = ControlClient(sock)
    before = client.call("GET", "/v1/containers")["containers"]
    refs_before = client.call("GET", "/v1/status")["refs"]
    for request, expected in MALFORMED:
        answer = raw(sock, request, close_write=True)
        assert status_of(answer) == expected, (request[:60], answer[:200])
        assert body_of(answer)["message"]
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.connect(str(sock))
    slow.sendall(b"POST /v1/reboot HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    slow.settimeout(30)
    assert status_of(slow.recv(4096)) == 408
    slow.close()
    after = client.call("GET", "/v1/containers")["containers"]
    assert [(c["name"], c["pid"], c["restarts"]) for c in after] == \
        [(c["name"], c["pid"], c["restarts"]) for c in before]
    assert client.call("GET", "/v1/status")["refs"] == refs_before
    assert u.boots() == 0
    assert not list((u.dev.storage / "inbox").glob("*")) if (u.dev.storage / "inbox").exists() \
        else True


def test_a_bundle_installed_through_the_api_is_applied_and_rollback_goes_back_and_forth(
    updater: Updater,
) -> None:
    u = updater
    sock = booted(u)
    bundle = u.bundle(GROUPS, base_containers(app_env="2"), name="r2.pvb")
    code, text = pvctl_in_process(sock, "--json", "install", str(bundle), "--wait", "120")
    assert code == 0, text
    assert u.journal_state(2) == "UPDATED"
    # The upload's header was read, and the update prepared, in short-lived forks.
    pid1 = find_dev_pid1(u.dev.storage)
    assert pid1 is not None
    maps = Path(f"/proc/{supervisor_of(pid1)}/maps").read_text()
    assert "msgpack" not in maps and "cryptography" not in maps
    code, text = pvctl_in_process(sock, "--json", "diff", "1", "2")
    assert code == 0 and "app/run.json" in text
    # roll back to 1 (an older stored revision): a reboot, then 1 runs and is committed
    code, text = pvctl_in_process(sock, "--json", "rollback", "1")
    assert code == 0, text
    u.wait("revision 1 running again", lambda: u.boots() >= 1 and u.env().get("pv_rev") == "1")
    sock = ctl_socket(u)
    u.wait("control socket after reboot", sock.exists)
    u.wait("status says 1", lambda: _revision(sock) == 1)
    journal = json.loads((u.dev.storage / "progress" / "local-rollbacks.json").read_text())
    assert journal[-1]["to"] == 1 and journal[-1]["from"] == 2
    # and forward again to 2
    assert pvctl_in_process(sock, "rollback", "2")[0] == 0
    u.wait("revision 2 again", lambda: u.boots() >= 2 and u.env().get("pv_rev") == "2")
    sock = ctl_socket(u)
    u.wait("status says 2", lambda: _revision(sock) == 2)


def _revision(sock: Path) -> int | None:
    try:
        value = ControlClient(sock, timeout=5).call("GET", "/v1/status")["revision"]
    except Exception:  # noqa: BLE001 - the device may be rebooting
        return None
    return int(value) if value is not None else None


def test_an_on_device_bundle_is_linked_or_copied_into_the_inbox_off_the_loop(
    updater: Updater,
) -> None:
    u = updater
    stick = u.dev.top / "usb"  # another filesystem, like a USB stick
    stick.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "usb", str(stick)], check=True)
    sock = booted(u)
    same_fs = u.bundle(GROUPS, base_containers(app_env="2"), name="r2.pvb")
    code, text = pvctl_in_process(sock, "--json", "install", "--on-device", str(same_fs),
                                  "--wait", "120")
    assert code == 0, text
    assert u.journal_state(2) == "UPDATED"
    done = u.dev.storage / "inbox" / "done"
    u.wait("api-2-0.pvb moved to inbox/done", (done / "api-2-0.pvb").is_file, timeout=30)
    assert same_fs.is_file() and (done / "api-2-0.pvb").samefile(same_fs)  # a hard link
    other = u.bundle(GROUPS, base_containers(app_env="3"), name="r3.pvb")
    on_stick = stick / "r3.pvb"
    on_stick.write_bytes(other.read_bytes())
    code, text = pvctl_in_process(sock, "--json", "install", "--on-device", str(on_stick),
                                  "--wait", "120")
    assert code == 0, text
    assert u.journal_state(3) == "UPDATED"
    u.wait("api-3-0.pvb moved to inbox/done", (done / "api-3-0.pvb").is_file, timeout=30)
    assert (done / "api-3-0.pvb").read_bytes() == on_stick.read_bytes()
    assert not (done / "api-3-0.pvb").samefile(on_stick)
    assert "copied into the inbox as api-3-0.pvb" in u.dev.log_text()
    assert sorted(p.name for p in stick.iterdir()) == ["r3.pvb"]  # the stick is left alone


def test_a_device_that_cannot_boot_still_answers_pvctl_and_reboots_when_asked(
    updater: Updater,
) -> None:
    u = updater
    u.boot()  # a blank storage and no factory bundle: nothing to boot
    u.wait("PID 1", lambda: find_dev_pid1(u.dev.storage) is not None)
    sock = ctl_socket(u)
    u.wait("control socket", sock.exists)
    code, text = pvctl_in_process(sock, "--json", "status")
    assert code == 0
    status = json.loads(text)
    assert status["phase"] == "ERROR" and status["revision"] is None
    assert "factory" in status["reason"]
    assert pvctl_in_process(sock, "reboot")[0] == 0
    u.wait("the device booted again", lambda: u.boots() >= 1)
    assert any("boot 1 ended: reboot" in line for line in u.err)

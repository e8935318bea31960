"""The sd_notify receiver with real AF_UNIX sockets, and the pvnotify sender."""

from __future__ import annotations

import os
import select
import socket
import subprocess
from pathlib import Path

import pytest

from pvinit.containers.notify import MAX_DATAGRAM, NotifyMessage, NotifyReceiver
from tests.integration.test_containers_support import pvnotify_binary

__all__ = ["pvnotify_binary"]  # fixture used by name


def send(path: Path, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.sendto(data, str(path))


def test_ready_and_status_are_parsed() -> None:
    message = NotifyMessage.parse(b"READY=1\nSTATUS=serving 5 clients")
    assert message is not None
    assert message.ready
    assert message.status == "serving 5 clients"
    assert not message.stopping
    assert not message.watchdog


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xfe", b"no assignment here", b"lower=1", b"READY=1\0", b"A" * (MAX_DATAGRAM + 1)],
)
def test_garbage_datagrams_are_not_messages(data: bytes) -> None:
    assert NotifyMessage.parse(data) is None


def test_bad_lines_are_skipped_but_good_ones_kept() -> None:
    message = NotifyMessage.parse(b"junk\n=x\nWATCHDOG=1\nSTOPPING=1")
    assert message is not None
    assert message.watchdog
    assert message.stopping
    assert message.to_dict() == {"WATCHDOG": "1", "STOPPING": "1"}


def test_receiver_returns_messages_and_drops_garbage(tmp_path: Path) -> None:
    with NotifyReceiver(tmp_path / "notify-dir") as receiver:
        assert receiver.poll() == []
        send(receiver.path, b"\xff garbage")
        send(receiver.path, b"X" * (MAX_DATAGRAM + 100))
        send(receiver.path, b"READY=1\nSTATUS=up")
        readable, _, _ = select.select([receiver], [], [], 5)
        assert readable
        messages = receiver.poll()
        assert [m.to_dict() for m in messages] == [{"READY": "1", "STATUS": "up"}]
        assert receiver.poll() == []


def test_receiver_replaces_a_stale_socket_file(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as crashed:
        crashed.bind(str(tmp_path / "notify"))  # a crashed supervisor leaves the file behind
    with NotifyReceiver(tmp_path) as second:
        send(second.path, b"READY=1")
        select.select([second], [], [], 5)
        assert [m.ready for m in second.poll()] == [True]


def test_closing_the_receiver_removes_its_socket(tmp_path: Path) -> None:
    receiver = NotifyReceiver(tmp_path)
    receiver.close()
    assert not receiver.path.exists()


def test_pvnotify_sends_its_arguments_as_one_datagram(
    pvnotify_binary: Path, tmp_path: Path
) -> None:
    with NotifyReceiver(tmp_path) as receiver:
        env = dict(os.environ, NOTIFY_SOCKET=str(receiver.path))
        done = subprocess.run(
            [str(pvnotify_binary), "READY=1", "STATUS=two words"], env=env, check=False
        )
        assert done.returncode == 0
        select.select([receiver], [], [], 5)
        assert [m.to_dict() for m in receiver.poll()] == [{"READY": "1", "STATUS": "two words"}]


def test_pvnotify_fails_without_notify_socket(pvnotify_binary: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    done = subprocess.run(
        [str(pvnotify_binary), "READY=1"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "NOTIFY_SOCKET" in done.stderr


def test_pvnotify_fails_when_nobody_listens(pvnotify_binary: Path, tmp_path: Path) -> None:
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "nobody"))
    done = subprocess.run(
        [str(pvnotify_binary), "READY=1"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "nobody" in done.stderr


def test_pvnotify_refuses_a_message_over_the_receivers_limit(
    pvnotify_binary: Path, tmp_path: Path
) -> None:
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "nobody"))
    done = subprocess.run(
        [str(pvnotify_binary), "STATUS=" + "x" * MAX_DATAGRAM],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "longer" in done.stderr

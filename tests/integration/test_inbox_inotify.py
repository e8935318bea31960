"""Offline updates through inbox directories watched with inotify (real kernel inotify, real LXC).

The watcher tests use real inotify on temp directories; the device tests boot
``pvinit --storage`` (launcher + PID 1 + supervisor) and drop real signed
bundles into ``<storage>/inbox`` and into a configured ``inbox_paths``
directory, writable or read-only (a read-only bind mount, like a stick
mounted ``ro``), or a stick mounted there while the device runs.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from pvinit.pid1.locate import find_dev_pid1
from pvinit.supervisor.inbox import FileId, InboxWatcher, list_bundles, settled
from pvinit.update.settings import DeviceSettings
from tests.integration.test_containers_support import pvnotify_binary
from tests.integration.test_supervisor_support import device, supervisor_image
from tests.integration.test_update_device import (
    GROUPS,
    Updater,
    base_containers,
    boot_factory,
    updater,
)

__all__ = ["device", "pvnotify_binary", "supervisor_image", "updater"]

# -- the rule and the watcher (no device) ---------------------------------------------------

def test_a_file_is_settled_when_announced_or_unchanged_between_two_scans() -> None:
    a, b, c = Path("/i/a.pvb"), Path("/i/b.pvb"), Path("/i/c.pvb")
    now = {a: FileId(10, 1, 7), b: FileId(20, 2, 8), c: FileId(30, 3, 9)}
    before = {a: FileId(10, 1, 7), b: FileId(19, 2, 8)}
    assert settled(now, before, [c]) == [a, c]  # b grew since the last scan: still written
    assert settled(now, {}, []) == []
    assert settled({}, before, [a]) == []  # announced, but gone by now


def test_only_complete_pvb_files_are_listed(tmp_path: Path) -> None:
    (tmp_path / "r2.pvb").write_bytes(b"x")
    (tmp_path / ".r3.pvb.1234.tmp").write_bytes(b"x")
    (tmp_path / ".hidden.pvb").write_bytes(b"x")
    (tmp_path / "notes.txt").write_bytes(b"x")
    (tmp_path / "dir.pvb").mkdir()
    (tmp_path / "link.pvb").symlink_to(tmp_path / "r2.pvb")
    assert list(list_bundles(tmp_path)) == [tmp_path / "r2.pvb"]
    assert list_bundles(tmp_path / "absent") == {}


def test_the_watcher_announces_written_and_renamed_files_and_wakes_on_request(
    tmp_path: Path,
) -> None:
    logs: list[str] = []
    inbox, stick = tmp_path / "inbox", tmp_path / "stick"
    inbox.mkdir()
    watcher = InboxWatcher([inbox, stick], log=logs.append)
    try:
        assert watcher.inotify, logs
        watcher.announced.clear()
        (inbox / "a.pvb").write_bytes(b"bundle")  # close after write
        watcher.wait(60)
        assert inbox / "a.pvb" in watcher.announced
        (tmp_path / "b.tmp").write_bytes(b"bundle")
        (tmp_path / "b.tmp").rename(inbox / "b.pvb")  # moved in
        watcher.wait(60)
        assert inbox / "b.pvb" in watcher.announced
        stick.mkdir()  # a configured path that appears later is watched once refreshed
        watcher.refresh()
        (stick / "c.pvb").write_bytes(b"bundle")
        watcher.wait(60)
        assert stick / "c.pvb" in watcher.announced
        waker = threading.Timer(0.2, watcher.wake)
        waker.start()
        watcher.wait(600)  # returns on wake, not after ten minutes
        waker.join()
    finally:
        watcher.close()
    watcher.wake()  # after close: harmless


def test_inbox_paths_round_trip_and_bad_ones_are_named() -> None:
    settings = DeviceSettings.from_dict({"inbox_paths": ["/media/usb", "/mnt/stick"]}, where="c")
    assert settings.inbox_paths == ("/media/usb", "/mnt/stick")
    assert DeviceSettings.from_dict(settings.to_dict(), where="c") == settings
    assert "inbox_paths" not in DeviceSettings().to_dict()
    for bad in ("/media/usb", ["media/usb"], ["/media/../etc"], ["/"], ["/a", "/a"], [3]):
        with pytest.raises(Exception, match="inbox_paths") as caught:
            DeviceSettings.from_dict({"inbox_paths": bad}, where="c")
        assert type(caught.value).__name__ == "BadInputError"


# -- on a device ------------------------------------------------------------------------------

def _configure(u: Updater, **extra: object) -> None:
    (u.dev.storage / "config" / "pvinit.json").write_text(
        json.dumps({"commit_delay": 1, **extra}))


@pytest.mark.root
@pytest.mark.slow
def test_a_bundle_dropped_into_the_inbox_is_installed_and_moved_to_done(
    updater: Updater,
) -> None:
    u = updater
    boot_factory(u)
    u.drop(u.bundle(GROUPS, base_containers(app_env="2"), name="r2.pvb"))
    u.wait("revision 2 UPDATED", lambda: u.journal_state(2) == "UPDATED")
    done = u.dev.storage / "inbox" / "done"
    u.wait("bundle in done/", (done / "r2.pvb").is_file)
    assert not (done / "r2.pvb.reason").exists()
    assert "inotify unavailable" not in u.dev.log_text()


@pytest.mark.root
@pytest.mark.slow
def test_a_writable_extra_path_is_watched_and_handled_bundles_move_beside_them(
    updater: Updater,
) -> None:
    u = updater
    stick = u.dev.top / "stick"
    stick.mkdir()
    _configure(u, inbox_paths=[str(stick)])
    boot_factory(u)
    unsigned = u.bundle(GROUPS, base_containers(app_env="3"), name="unsigned.pvb", sign=False)
    _drop(stick, unsigned)
    u.wait("unsigned bundle in failed/", (stick / "failed" / "unsigned.pvb").is_file)
    reason = (stick / "failed" / "unsigned.pvb.reason").read_text()
    assert "WONTGO" in reason and "signature" in reason
    good = u.bundle(GROUPS, base_containers(app_env="4"), name="r3.pvb", revision=3)
    _drop(stick, good)
    u.wait("revision 3 UPDATED", lambda: u.journal_state(3) == "UPDATED")
    u.wait("bundle in done/", (stick / "done" / "r3.pvb").is_file)
    assert u.env().get("pv_rev") == "3" and u.boots() == 0
    assert not (u.dev.storage / "inbox" / "done" / "r3.pvb").exists()


@pytest.mark.root
@pytest.mark.slow
def test_a_read_only_extra_path_is_copied_into_the_inbox_and_left_alone(
    updater: Updater,
) -> None:
    u = updater
    source, stick = u.dev.top / "stick-src", u.dev.top / "stick"
    source.mkdir()
    stick.mkdir()
    factory = u.bundle(GROUPS, base_containers(), name="factory.pvb")
    _drop(source, u.bundle(GROUPS, base_containers(app_env="2"), name="r2.pvb"))
    subprocess.run(["mount", "--bind", str(source), str(stick)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(stick)], check=True)
    _configure(u, inbox_paths=[str(stick)])
    u.boot(factory)
    u.wait("revision 1 running", lambda: u.running(1))
    u.wait("revision 2 UPDATED", lambda: u.journal_state(2) == "UPDATED")
    inbox = u.dev.storage / "inbox"
    u.wait("the copy in inbox/done", (inbox / "done" / "copy-r2.pvb").is_file)
    assert sorted(p.name for p in stick.iterdir()) == ["r2.pvb"]  # the stick is untouched
    assert "read-only directory" in u.dev.log_text()


@pytest.mark.root
@pytest.mark.slow
def test_a_stick_mounted_while_the_device_runs_is_watched_and_its_bundle_installed(
    updater: Updater,
) -> None:
    """An ext4 stick mounted over the (empty, watched) configured path after boot.

    The mount hides the directory inotify watches; the watcher sees
    ``/proc/self/mountinfo`` change, watches the stick's root instead and
    finds the bundle already on it.  The mount is made inside the device's
    own mount namespace, where a device's automounter would make it.
    """
    u = updater
    stick, content = u.dev.top / "stick", u.dev.top / "stick-content"
    stick.mkdir()
    content.mkdir()
    _configure(u, inbox_paths=[str(stick)])
    boot_factory(u)
    _drop(content, u.bundle(GROUPS, base_containers(app_env="2"), name="r2.pvb"))
    image = u.dev.top / "stick.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(image), "64M"], check=True)
    pid1 = find_dev_pid1(u.dev.storage)
    assert pid1 is not None
    subprocess.run(["nsenter", "-t", str(pid1), "-m", "--", "mount", "-o", "loop", str(image),
                    str(stick)], check=True)  # fmt: skip
    u.wait("revision 2 UPDATED", lambda: u.journal_state(2) == "UPDATED")
    on_stick = Path(f"/proc/{pid1}/root") / stick.relative_to("/")
    u.wait("bundle in done/ on the stick", (on_stick / "done" / "r2.pvb").is_file)
    assert not (stick / "done").exists()  # the host sees the directory under the mount
    assert f"inbox: {stick} is another directory now (a mount); watching it" in u.dev.log_text()
    assert u.env().get("pv_rev") == "2" and u.boots() == 0


def _drop(directory: Path, bundle: Path) -> None:
    """Write a bundle the way a technician's ``cp`` does: in place, then closed."""
    with open(bundle, "rb") as reader, open(directory / bundle.name, "wb") as writer:
        while block := reader.read(1 << 16):
            writer.write(block)

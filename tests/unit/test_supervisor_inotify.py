"""The inbox watcher's inotify binding: event parsing (pure) and the real kernel descriptor."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from pvinit.pid1.syscalls import Libc
from pvinit.supervisor.inbox import InboxWatcher
from pvinit.supervisor.inotify import (
    IN_CLOSE_WRITE,
    IN_IGNORED,
    IN_MOVED_TO,
    IN_ONLYDIR,
    Inotify,
    InotifyEvent,
    parse_events,
)


def _event(wd: int, mask: int, name: bytes, cookie: int = 0) -> bytes:
    padded = name + b"\0" * (-(len(name) + 1) % 16 + 1) if name else b""
    return struct.pack("=iIII", wd, mask, cookie, len(padded)) + padded


def test_events_are_parsed_with_their_nul_padded_names() -> None:
    data = _event(1, IN_CLOSE_WRITE, b"r2.pvb") + _event(2, IN_MOVED_TO, b"x" * 15, 7)
    data += _event(1, IN_IGNORED, b"")
    assert parse_events(data) == [
        InotifyEvent(wd=1, mask=IN_CLOSE_WRITE, cookie=0, name="r2.pvb"),
        InotifyEvent(wd=2, mask=IN_MOVED_TO, cookie=7, name="x" * 15),
        InotifyEvent(wd=1, mask=IN_IGNORED, cookie=0, name=""),
    ]
    assert parse_events(b"") == []


def test_a_name_that_is_not_utf8_survives_as_a_surrogate_escaped_str() -> None:
    (event,) = parse_events(_event(3, IN_CLOSE_WRITE, b"caf\xe9.pvb"))
    assert os.fsencode(event.name) == b"caf\xe9.pvb"


@pytest.mark.parametrize("cut", [1, 15, 17, 20])
def test_truncated_bytes_are_refused_not_half_read(cut: int) -> None:
    data = _event(1, IN_CLOSE_WRITE, b"r2.pvb")
    with pytest.raises(ValueError, match="inotify"):
        parse_events(data[:-cut])


def test_the_kernel_reports_closed_renamed_and_removed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watch = Inotify()
    try:
        wd = watch.add_watch(inbox, IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR)
        assert watch.read_events() == []  # non-blocking: nothing queued yet
        (inbox / "a.pvb").write_bytes(b"bundle")
        (tmp_path / "b.tmp").write_bytes(b"bundle")  # outside: not reported
        (tmp_path / "b.tmp").rename(inbox / "b.pvb")
        events = watch.read_events()
        assert [(e.wd, e.mask, e.name) for e in events] == [
            (wd, IN_CLOSE_WRITE, "a.pvb"), (wd, IN_MOVED_TO, "b.pvb"),
        ]
        for name in ("a.pvb", "b.pvb"):
            (inbox / name).unlink()
        inbox.rmdir()
        assert [e.mask & IN_IGNORED for e in watch.read_events()] == [IN_IGNORED]
    finally:
        watch.close()
    watch.close()  # twice: harmless


def test_a_file_is_not_accepted_as_a_watched_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    watch = Inotify()
    try:
        with pytest.raises(NotADirectoryError):
            watch.add_watch(tmp_path / "file", IN_CLOSE_WRITE | IN_ONLYDIR)
        with pytest.raises(FileNotFoundError):
            watch.add_watch(tmp_path / "absent", IN_CLOSE_WRITE | IN_ONLYDIR)
    finally:
        watch.close()


class _NoInotify(Libc):
    def inotify_init1(self, flags: int) -> int:
        raise OSError(24, "Too many open files")


def test_without_inotify_the_watcher_says_so_and_scans_every_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pvinit.supervisor.inotify as inotify_module

    monkeypatch.setattr(inotify_module, "Libc", _NoInotify)
    logs: list[str] = []
    watcher = InboxWatcher([tmp_path], log=logs.append)
    try:
        assert not watcher.inotify
        assert logs == ["inbox: inotify unavailable ([Errno 24] Too many open files); "
                        "scanning every 1s"]
        watcher.rescan = False
        watcher.wait(600)  # capped at the one-second scan
        assert watcher.rescan
    finally:
        watcher.close()


def test_a_watched_directory_removed_and_made_again_is_watched_again(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    logs: list[str] = []
    watcher = InboxWatcher([inbox], log=logs.append)
    try:
        inbox.rmdir()
        watcher.wait(0)  # IN_IGNORED: the watch is forgotten
        inbox.mkdir()
        watcher.refresh()
        watcher.announced.clear()
        (inbox / "c.pvb").write_bytes(b"bundle")
        watcher.wait(60)
        assert inbox / "c.pvb" in watcher.announced, logs
    finally:
        watcher.close()

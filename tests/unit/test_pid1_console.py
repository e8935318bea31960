"""PID 1's console: never blocks PID 1, loses no line it can keep, leaves fd 2 alone."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvinit.pid1.console import BACKLOG_BYTES, PREFIX, Console


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    try:
        yield read_end, write_end
    finally:
        for fd in (read_end, write_end):
            os.close(fd)


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def test_a_console_nobody_reads_never_blocks_pid1(pipe: tuple[int, int]) -> None:
    _, write_end = pipe
    console = Console(kmsg_path=None, fd=write_end)
    try:
        line = "x" * 200
        for _ in range(2000):  # 400 KB: the pipe (64 KiB) plus the backlog would block
            console.log(line)
        assert 0 < console.pending <= BACKLOG_BYTES
    finally:
        console.close()


def test_lines_kept_while_the_console_was_full_come_out_in_order_with_a_count_of_the_rest(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    console = Console(kmsg_path=None, fd=write_end)
    try:
        count = 3000
        for n in range(count):
            console.log(f"event {n:05d} " + "y" * 100)
        text = read_all(read_end).decode()
        console.flush()
        text += read_all(read_end).decode()
        console.log("after")
        console.drain(5)
        text += read_all(read_end).decode()
    finally:
        console.close()
    lines = text.splitlines()
    numbers = [int(line.split()[2]) for line in lines if line.startswith(f"{PREFIX}event ")]
    assert numbers == list(range(len(numbers)))  # a prefix of the events, in order
    assert 0 < len(numbers) < count
    notices = [line for line in lines if "dropped" in line]
    assert notices == [f"{PREFIX}{count - len(numbers)} line(s) dropped: the console was too slow"]
    assert lines[-1] == f"{PREFIX}after"


def test_the_shared_descriptor_stays_blocking_for_the_supervisor(pipe: tuple[int, int]) -> None:
    _, write_end = pipe
    console = Console(kmsg_path=None, fd=write_end)
    try:
        console.log("hello")
        assert not fcntl.fcntl(write_end, fcntl.F_GETFL) & os.O_NONBLOCK
    finally:
        console.close()


def test_a_regular_file_console_gets_every_line_appended(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(fd, b"before\n")
    console = Console(kmsg_path=None, fd=fd)
    try:
        console.log("one")
        console.log("two")
    finally:
        console.close()
        os.close(fd)
    assert path.read_text() == f"before\n{PREFIX}one\n{PREFIX}two\n"


def test_a_console_that_went_away_is_not_an_error() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: EPIPE (Python ignores SIGPIPE)
    console = Console(kmsg_path=None, fd=write_end)
    try:
        console.log("into the void")
        assert console.pending == 0
    finally:
        console.close()
        os.close(write_end)

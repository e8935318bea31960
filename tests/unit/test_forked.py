"""run_forked: work in a short-lived fork; its answer, log, errors and crashes reach the caller."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

import pytest

from pvinit import durable
from pvinit.errors import (
    ExternalToolError,
    IntegrityError,
    NotFoundError,
    TrustRejectedError,
)
from pvinit.forked import run_forked
from pvinit.transport.fetcher import RemoteNotFoundError

Log = Callable[[str], None]


def test_the_answer_and_the_log_lines_come_back_and_imports_stay_in_the_fork() -> None:
    assert "wave" not in sys.modules
    lines: list[str] = []

    def work(log: Log) -> object:
        import wave  # noqa: F401 - a module nothing else in the tests imports

        log("one")
        log("two")
        return {"pid": os.getpid(), "loaded": "wave" in sys.modules}

    answer = run_forked(work, what="the test", log=lines.append)
    assert isinstance(answer, dict)
    assert answer["loaded"] is True and answer["pid"] != os.getpid()
    assert lines == ["one", "two"]
    assert "wave" not in sys.modules


def test_a_pv_error_comes_back_as_its_class_with_place_hint_and_reason() -> None:
    def integrity(log: Log) -> object:
        raise IntegrityError("digest mismatch", where="objects/ab", hint="fetch it again")

    with pytest.raises(IntegrityError) as caught:
        run_forked(integrity, what="the test")
    assert (caught.value.message, caught.value.where, caught.value.hint) == (
        "digest mismatch", "objects/ab", "fetch it again")

    def replay(log: Log) -> object:
        raise TrustRejectedError("old trust file", reason="replay", where="rev 3")

    with pytest.raises(TrustRejectedError) as rejected:
        run_forked(replay, what="the test")
    assert rejected.value.reason == "replay"


def test_an_error_class_defined_elsewhere_comes_back_as_its_nearest_public_ancestor() -> None:
    def work(log: Log) -> object:
        raise RemoteNotFoundError("no such channel", where="https://x/channels/beta")

    with pytest.raises(NotFoundError) as caught:
        run_forked(work, what="the test")
    assert caught.value.where == "https://x/channels/beta"


def test_an_os_error_keeps_its_errno_and_file() -> None:
    def work(log: Log) -> object:
        open("/nonexistent/bundle.pvb", "rb")  # noqa: SIM115 - raises
        return None

    with pytest.raises(FileNotFoundError) as caught:
        run_forked(work, what="the test")
    assert caught.value.filename == "/nonexistent/bundle.pvb"


def test_any_other_exception_is_an_external_tool_error_naming_the_work() -> None:
    def work(log: Log) -> object:
        raise RuntimeError("boom")

    with pytest.raises(ExternalToolError) as caught:
        run_forked(work, what="the test", where="app")
    assert str(caught.value) == "app: the test: RuntimeError('boom')"


def test_a_child_that_dies_without_answering_is_an_error_saying_how() -> None:
    def work(log: Log) -> object:
        os.kill(os.getpid(), signal.SIGKILL)
        return None

    with pytest.raises(ExternalToolError) as caught:
        run_forked(work, what="the test", where="app")
    assert caught.value.where == "app"
    assert "the test ended without an answer (killed by signal 9)" in caught.value.message


def test_a_grandchild_holding_the_pipe_does_not_keep_the_caller_waiting() -> None:
    """A daemonized ``lxc-start`` leaves a monitor behind that may still hold the pipe."""

    def work(log: Log) -> object:
        if os.fork() == 0:  # holds the pipe's write end, as a monitor may
            time.sleep(5)
            os._exit(0)
        return "started"

    started = time.monotonic()
    assert run_forked(work, what="the test") == "started"
    assert time.monotonic() - started < 4  # not a timing assertion: the grandchild sleeps 5 s


def test_sigterm_ends_the_fork_even_where_the_caller_handles_it() -> None:
    """The caller's handler would only set a flag for a loop the fork does not run."""
    seen: list[int] = []

    def handler(signo: int, frame: FrameType | None) -> None:
        seen.append(signo)

    def work(log: Log) -> object:
        time.sleep(30)
        return "slept"

    old = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(ExternalToolError, match="killed by signal 15"):
            run_forked(work, what="the test",
                       started=lambda pid: os.kill(pid, signal.SIGTERM))
    finally:
        signal.signal(signal.SIGTERM, old)
    assert seen == []


def test_a_power_cut_in_the_fork_is_one_in_the_caller_and_its_points_are_counted() -> None:
    def work(log: Log) -> object:
        durable.point("a.write")
        durable.point("b.write")
        return "done"

    durable.arm_crash("b.write")
    try:
        with pytest.raises(durable.SimulatedCrash, match=r"b\.write"):
            run_forked(work, what="the test")
        assert durable.seen_points() == ["a.write", "b.write"]
        durable.arm_crash("never")
        assert run_forked(work, what="the test") == "done"
        assert durable.seen_points() == ["a.write", "b.write"]
        durable.arm_crash("a.write", occurrence=2)
        durable.point("a.write")  # the first one, in the caller
        with pytest.raises(durable.SimulatedCrash, match=r"a\.write"):
            run_forked(work, what="the test")  # the second, in the fork
    finally:
        durable.arm_crash(None)

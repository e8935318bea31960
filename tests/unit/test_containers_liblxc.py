"""python-lxc in a fork: answers and errors cross back, liblxc stays out of the caller.

The fork itself (logs, error classes, crashes, signals) is tested in test_forked.py.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import pytest

from pvinit.containers import liblxc
from pvinit.containers.lxc_driver import halt_signal
from pvinit.errors import BadInputError, ExternalToolError

pytest.importorskip("_lxc", reason="python3-lxc")


def test_the_child_s_answer_comes_back_and_liblxc_is_not_loaded_here() -> None:
    loaded_before = "_lxc" in sys.modules

    def work(lxc: Any) -> object:
        return [lxc.__name__, os.getpid()]

    answer = liblxc.call(work, where="test")
    assert isinstance(answer, list)
    assert answer[0] == "_lxc"
    assert answer[1] != os.getpid()
    assert ("_lxc" in sys.modules) == loaded_before


def test_a_pv_error_raised_in_the_child_is_raised_again_with_its_class_and_place() -> None:
    def work(lxc: Any) -> object:
        raise BadInputError("liblxc rejects lxc.bogus = '1'", where="app: lxc lxc.bogus")

    with pytest.raises(BadInputError) as caught:
        liblxc.call(work, where="app")
    assert caught.value.where == "app: lxc lxc.bogus"
    assert caught.value.message == "liblxc rejects lxc.bogus = '1'"


def test_a_child_that_dies_without_answering_is_an_error_naming_the_container() -> None:
    def work(lxc: Any) -> object:
        os._exit(3)

    with pytest.raises(ExternalToolError) as caught:
        liblxc.call(work, where="app")
    assert caught.value.where == "app"
    assert "the liblxc helper ended without an answer (exit status 3)" in caught.value.message


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("lxc.uts.name = a\n", signal.SIGPWR),
        ("lxc.signal.halt = SIGTERM\n", signal.SIGTERM),
        ("lxc.signal.halt = SIGTERM\nlxc.signal.halt = sigusr1\n", signal.SIGUSR1),
        ("lxc.signal.halt = 10\n", 10),
        ("lxc.signal.halt = SIGRTMIN+3\n", signal.SIGRTMIN + 3),
        ("lxc.signal.halt = SIGRTMAX-1\n", signal.SIGRTMAX - 1),
        ("lxc.signal.halt = SIGRTMIN\n", signal.SIGRTMIN),
    ],
)
def test_the_halt_signal_is_read_from_the_config_as_liblxc_reads_it(
    config: str, expected: int
) -> None:
    assert halt_signal(config) == expected


@pytest.mark.parametrize("value", ["TERM", "SIGNOPE", "SIGRTMIN+x"])
def test_a_halt_signal_only_liblxc_could_read_is_left_to_liblxc(value: str) -> None:
    assert halt_signal(f"lxc.signal.halt = {value}\n") is None

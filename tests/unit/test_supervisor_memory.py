"""The supervisor's idle memory line: smaps_rollup parsed, read for real, described."""

from __future__ import annotations

import os

from pvinit.supervisor.memory import ProcessMemory, describe, parse_smaps_rollup, read_memory

ROLLUP = """55d0c6e4f000-7ffd5f3c6000 ---p 00000000 00:00 0                          [rollup]
Rss:               20308 kB
Pss:               12410 kB
Pss_Anon:           6900 kB
Shared_Clean:       3392 kB
"""


def test_pss_and_rss_are_read_from_a_rollup_and_the_rest_ignored() -> None:
    assert parse_smaps_rollup(ROLLUP) == ProcessMemory(pss_kib=12410, rss_kib=20308)
    assert parse_smaps_rollup("Pss_Anon: 10 kB\nRss: x kB\n") == ProcessMemory(0, 0)


def test_this_process_has_a_rollup_and_a_gone_one_has_none() -> None:
    mine = read_memory("self")
    assert mine is not None and 0 < mine.pss_kib <= mine.rss_kib
    assert read_memory(os.getpid()) is not None
    assert read_memory(2**22 + 1) is None  # above pid_max's ceiling: never a process


def test_the_line_gives_both_processes_their_sum_and_their_rss() -> None:
    line = describe(ProcessMemory(5939, 9318), ProcessMemory(12698, 20797))
    assert line == ("PID 1 5.8 MiB + supervisor 12.4 MiB = 18.2 MiB PSS "
                    "(RSS 9.1 + 20.3 MiB)")
    assert "not available" in describe(None, ProcessMemory(1, 1))


def test_releasing_the_boot_s_memory_turns_garbage_collection_back_on() -> None:
    """The supervisor boots without collection (a burst of allocations); RUNNING ends that."""
    import gc

    from pvinit.supervisor.loop import release_free_memory

    gc.disable()
    try:
        release_free_memory()
        assert gc.isenabled()
    finally:
        gc.enable()

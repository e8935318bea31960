"""pvinit's own memory, as the kernel accounts it: one log line once the device is idle.

A field technician reading a device's log, and the VM test, see what
pvinit's two processes cost on the device itself (issue 3's goal is on
their PSS), not on a development host where other Python processes share
the interpreter's pages and lower it.
"""

from __future__ import annotations

from pvinit.record import record

REPORT_AFTER = 10.0
"""Seconds after every group started: the boot's garbage collected, the heap trimmed."""


@record(frozen=True)
class ProcessMemory:
    pss_kib: int
    rss_kib: int


def parse_smaps_rollup(text: str) -> ProcessMemory:
    """``Pss:`` and ``Rss:`` of a ``/proc/<pid>/smaps_rollup`` (pure; 0 for a missing line)."""
    values = {"Pss:": 0, "Rss:": 0}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in values and words[1].isdigit():
            values[words[0]] = int(words[1])
    return ProcessMemory(pss_kib=values["Pss:"], rss_kib=values["Rss:"])


def read_memory(pid: int | str) -> ProcessMemory | None:
    """Memory of ``pid`` (``"self"`` for this process); None where the kernel has no rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return parse_smaps_rollup(rollup.read())
    except OSError:
        return None


def describe(pid1: ProcessMemory | None, supervisor: ProcessMemory | None) -> str:
    """``PID 1 5.8 MiB + supervisor 12.4 MiB = 18.2 MiB PSS (RSS 9.1 + 20.3 MiB)``."""
    if pid1 is None or supervisor is None:
        return "not available (no /proc/<pid>/smaps_rollup)"

    def mib(kib: int) -> str:
        return f"{kib / 1024:.1f}"

    total = pid1.pss_kib + supervisor.pss_kib
    return (f"PID 1 {mib(pid1.pss_kib)} MiB + supervisor {mib(supervisor.pss_kib)} MiB = "
            f"{mib(total)} MiB PSS (RSS {mib(pid1.rss_kib)} + {mib(supervisor.rss_kib)} MiB)")

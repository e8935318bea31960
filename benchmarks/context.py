"""What every benchmark section is given, and what it gives back.

``tools/bench`` runs sections (boot, footprint, update sizes, ...) one after
the other in one process.  A section is a module with a function
``run(ctx: Context) -> Section``.  It measures pvinit and the peers that run
on this machine *in the same run*, and returns:

- ``figures``: flat, stable, documented keys (``boot.ratio_vs_lxc_start``,
  ``update.one_file.bytes.ostree``) -> numbers; ``None`` when a figure could
  not be measured in this run (the section says why in ``notes``).  Units are
  in the key: ``_s`` seconds, ``_mb`` MiB (2**20 bytes), ``bytes``,
  ``ratio`` / ``ratio_vs_*`` dimensionless, ``_per_s`` a rate, ``_percent``.
- ``markdown``: the section's part of ``docs/benchmarks.md`` (how it was
  measured, its table), written for a reader who will rerun it.
- ``losses``: one plain sentence per figure where pvinit loses to a peer or
  misses its goal; the report lists them all at the top.
- ``series``: named (x, y) point lists for the plots (memory over time,
  boot time by container count).

Every key a section can emit is listed, with its meaning, in its module's
``KEYS: dict[str, str]`` (key -> one-line meaning with the unit); the report
prints them all and a test checks that nothing undocumented is emitted.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

Figure = float | int | None


@dataclass(frozen=True)
class Context:
    """One ``tools/bench`` run, as seen by a section."""

    repo: Path
    #: Scratch directory of this section (``build/bench/<section>``), empty at start.
    work: Path
    #: ``--quick``: smaller sizes, fewer runs, a short scale run (< 3 min in all).
    quick: bool
    #: The interpreter of the project's venv (runs pvinit's commands).
    python: Path
    #: Keep scratch files after the run (``--keep``), for looking into a number.
    keep: bool = False

    def log(self, message: str) -> None:
        """Progress for the person waiting: stderr, one line, time-stamped."""
        sys.stderr.write(f"bench {time.strftime('%H:%M:%S')} {message}\n")
        sys.stderr.flush()

    def runs(self, full: int, quick: int = 1) -> int:
        """How many repetitions a measurement gets in this mode."""
        return quick if self.quick else full

    def tool(self, name: str) -> str:
        """Path of a project command in the venv (``pvinit``, ``pvstate``, ``pvctl``)."""
        return str(self.python.parent / name)


@dataclass
class Section:
    """What a section measured (see the module docstring)."""

    name: str
    figures: dict[str, Figure] = field(default_factory=dict)
    markdown: str = ""
    losses: list[str] = field(default_factory=list)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (the figure a noisy machine allows)."""
    return float(statistics.median(values))


def ratio(numerator: float | None, denominator: float | None, digits: int = 2) -> float | None:
    """numerator / denominator rounded, or None when either is missing or zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, digits)


def timed(run: Callable[[], object]) -> float:
    """Wall-clock seconds of one call (monotonic clock)."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def sh(argv: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
       check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool with output captured; raise with its stderr when it fails."""
    merged = {**os.environ, **env} if env is not None else None
    proc = subprocess.run(list(argv), cwd=cwd, env=merged, check=False,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def is_root() -> bool:
    return os.geteuid() == 0


def fmt_bytes(n: float | None) -> str:
    """1,234 B / 21.0 KiB / 18.8 MiB, for tables."""
    if n is None:
        return "n/a"
    if n < 1024:
        return f"{n:,.0f} B"
    if n < 1024 * 1024:
        return f"{n / 1024:,.1f} KiB"
    return f"{n / 1024 / 1024:,.1f} MiB"


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"

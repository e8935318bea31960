"""Output for the CLIs: JSON for scripts, aligned tables and progress for people.

Colour and progress bars appear only when the stream is a terminal (and
``NO_COLOR`` is unset); piped output stays quiet and line-oriented so it can
be parsed by ``grep``/``awk``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

COLOURS = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "bold": "1", "dim": "2"}


class ProgressBar:
    """A one-line progress bar on a terminal, redrawn at most ten times a second."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        width = 30
        fraction = 0.0 if total <= 0 else min(1.0, done / total)
        filled = int(fraction * width)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction * 100:5.1f}%")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class Output:
    """Where a command's results go."""

    def __init__(
        self, *, json_mode: bool = False, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.json_mode = json_mode
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    @property
    def is_tty(self) -> bool:
        return hasattr(self.out, "isatty") and self.out.isatty()

    def colour(self, text: str, name: str) -> str:
        if not self.is_tty or os.environ.get("NO_COLOR"):
            return text
        return f"\x1b[{COLOURS[name]}m{text}\x1b[0m"

    def data(self, value: object) -> None:
        """Print a JSON document (the ``--json`` form of a result)."""
        self.out.write(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        """Human chatter that is not the result: stderr, so pipes stay clean."""
        if not self.json_mode:
            self.err.write(text + "\n")

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        cells = [[str(c) for c in row] for row in rows]
        widths = [len(c) for c in columns]
        for row in cells:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))
        header = "  ".join(c.upper().ljust(widths[i]) for i, c in enumerate(columns)).rstrip()
        self.line(self.colour(header, "bold"))
        for row in cells:
            self.line("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())

    def progress(self, label: str) -> ProgressBar | None:
        """A progress bar on a terminal, else None (callers then stay quiet)."""
        if self.json_mode or not (hasattr(self.err, "isatty") and self.err.isatty()):
            return None
        return ProgressBar(label, self.err)


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"

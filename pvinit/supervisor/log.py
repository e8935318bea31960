"""The supervisor's own log: one line per event, to the console and to a size-capped file.

Lines logged before the revision (and so the log directory) is known are
kept and written to the file once it is opened.  The file is rotated to
``pvinit.log.1`` when it passes its cap, so a device never fills its
storage with logs: at most twice the cap is kept.  A log write that fails
(a full disk) is dropped: logging must never stop the supervisor.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TextIO

DEFAULT_CAP = 1 << 20


class SupervisorLog:
    def __init__(self, *, console: TextIO | None = None, cap: int = DEFAULT_CAP) -> None:
        self.console = console if console is not None else sys.stderr
        self.cap = cap
        self.path: Path | None = None
        self._early: list[str] = []

    def open(self, path: Path) -> None:
        """Start writing to ``path`` (and flush what was logged before)."""
        self.path = path
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
        early, self._early = self._early, []
        for line in early:
            self._to_file(line)

    def __call__(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        line = f"{stamp} pvinit: {message}\n"
        with contextlib.suppress(OSError, ValueError):
            self.console.write(f"pvinit: {message}\n")
            self.console.flush()
        if self.path is None:
            self._early.append(line)
        else:
            self._to_file(line)

    def _to_file(self, line: str) -> None:
        assert self.path is not None
        with contextlib.suppress(OSError):
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size + len(line) > self.cap:
                self.path.replace(self.path.with_name(self.path.name + ".1"))
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)

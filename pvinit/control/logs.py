"""Log files the control API serves: ``<storage>/logs/<rev>/<source>/*.log``, tail and follow.

A source is a container name or ``pvinit`` (the supervisor's own log).  The
file served is ``console.log`` (a container's console) or ``pvinit.log``,
else the first ``*.log`` found.  Following polls the file's size from the
supervisor's loop; a file that shrank was rotated and is read again from
its start.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pvinit.errors import NotFoundError
from pvinit.trails.layout import StorageLayout

PREFERRED = ("console.log", "pvinit.log")
MAX_TAIL_BYTES = 1 << 20
FOLLOW_CHUNK = 64 * 1024


def log_sources(layout: StorageLayout, revision: int | None) -> list[str]:
    directory = layout.logs / ("none" if revision is None else str(revision))
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and any(p.glob("*.log")))


def log_file(layout: StorageLayout, revision: int | None, source: str) -> Path:
    try:
        directory = layout.log_dir(revision, source)
    except Exception:  # noqa: BLE001 - a bad name is a not-found for a reader
        raise NotFoundError(f"no log source {source[:60]!r}") from None
    for name in PREFERRED:
        if (directory / name).is_file():
            return directory / name
    found = sorted(directory.glob("*.log")) if directory.is_dir() else []
    if not found:
        raise NotFoundError(f"no log for {source!r} in revision {revision}",
                            hint="'pvctl logs' lists the sources")
    return found[0]


def tail_bytes(path: Path, lines: int) -> tuple[bytes, int]:
    """The last ``lines`` lines of ``path`` (at most 1 MiB) and the file's size."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        start = max(0, size - MAX_TAIL_BYTES)
        handle.seek(start)
        data = handle.read(size - start)
    if lines == 0:
        return b"", size
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:]), size


class FileFollower:
    """New bytes of a growing file, polled by the server between loop turns."""

    def __init__(self, path: Path, offset: int, *, first: bytes = b"") -> None:
        self.path = path
        self.offset = offset
        self.pending = first

    def poll(self) -> bytes | None:
        out, self.pending = self.pending, b""
        try:
            size = self.path.stat().st_size
        except OSError:
            return out
        if size < self.offset:
            self.offset = 0  # rotated or truncated
        if size > self.offset:
            with contextlib.suppress(OSError), open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(FOLLOW_CHUNK)
                self.offset += len(data)
                out += data
        return out

    def close(self) -> None:
        self.pending = b""

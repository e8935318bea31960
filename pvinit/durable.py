"""Durable file writes: temp file, fsync, rename, fsync of the directory.

Every persistent write of pvinit goes through this module so that a power
cut at any instant leaves either the old file or the new one, never a torn
one.  Each step that matters for power-loss safety passes a named
*persistence point*; tests arm one with :func:`arm_crash` to simulate the
power failing exactly there (the process "dies" by raising
:class:`SimulatedCrash`, leaving whatever was on disk at that instant).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import BinaryIO

_armed: str | None = None
_armed_occurrence: int | None = None
_seen: list[str] = []


class SimulatedCrash(BaseException):
    """Raised at an armed persistence point; a BaseException so no handler swallows it."""


def arm_crash(point: str | None, occurrence: int | None = None) -> None:
    """Arm (or with None, disarm) a simulated power cut at the named point.

    ``occurrence`` k crashes only the k-th time ``point`` is passed since
    arming (names repeat along a path: the journal is written at every
    step), so a test can cut the power at each occurrence in turn; None
    crashes every time the point is passed.
    """
    global _armed, _armed_occurrence  # noqa: PLW0603 - process-wide test seam by design
    if occurrence is not None and occurrence < 1:
        raise ValueError(f"occurrence counts from 1, not {occurrence}")
    _armed = point
    _armed_occurrence = occurrence
    _seen.clear()


def seen_points() -> list[str]:
    """The persistence points passed since the last :func:`arm_crash`."""
    return list(_seen)


def point(name: str) -> None:
    """Mark a persistence point; raises SimulatedCrash when it is the armed one."""
    _seen.append(name)
    if _armed == name and (_armed_occurrence is None or _seen.count(name) == _armed_occurrence):
        raise SimulatedCrash(name)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename or create inside it survives power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(final: Path) -> Path:
    """A temp name beside ``final`` (same filesystem, so rename is atomic)."""
    # os.urandom, not secrets: importing secrets loads OpenSSL (~4 MB in PID 1).
    return final.with_name(f".{final.name}.{os.urandom(6).hex()}.tmp")


@contextlib.contextmanager
def save_file(
    path: str | os.PathLike[str], *, mode: int = 0o644, name: str = "file"
) -> Iterator[BinaryIO]:
    """Open a temp file beside ``path``; on clean exit fsync, rename and fsync the dir.

    On an exception the temp file is removed and ``path`` is untouched.
    ``name`` labels the persistence points (``<name>.write``, ``<name>.rename``).
    """
    final = Path(path)
    tmp = temp_path(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            point(f"{name}.write")
            os.fsync(handle.fileno())
        point(f"{name}.rename")
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(final.parent)


def write_file(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, name: str = "file"
) -> None:
    """Durably replace ``path`` with ``data``."""
    with save_file(path, mode=mode, name=name) as handle:
        handle.write(data)


def makedirs(path: str | os.PathLike[str], mode: int = 0o755) -> None:
    """Create a directory tree, fsyncing each parent that gained an entry."""
    target = Path(path)
    missing: list[Path] = []
    probe = target
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=mode)
        fsync_dir(directory.parent)


def remove_file(path: str | os.PathLike[str], *, name: str = "file") -> None:
    """Remove a file durably (the directory entry removal is fsynced)."""
    target = Path(path)
    point(f"{name}.unlink")
    target.unlink()
    fsync_dir(target.parent)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove a directory tree, never following a symbolic link out of it.

    What ``shutil.rmtree`` does (by descriptor, so a symlink swapped in cannot
    redirect it), without importing ``shutil``: that brings ``bz2`` and
    ``lzma`` into the supervisor for as long as the device runs, and a boot
    clears the boot-scope volumes every time.  The caller fsyncs the parent
    when the removal must be durable.
    """
    for _top, dirs, files, dir_fd in os.fwalk(path, topdown=False, follow_symlinks=False):
        for name in files:
            os.unlink(name, dir_fd=dir_fd)
        for name in dirs:  # a symlink to a directory is listed here too: unlink it
            try:
                os.rmdir(name, dir_fd=dir_fd)
            except NotADirectoryError:
                os.unlink(name, dir_fd=dir_fd)
    Path(path).rmdir()

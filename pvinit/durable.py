"""Durable file writes: temp file, fsync, rename, fsync of the directory.

Every persistent write of pvinit goes through this module so that a power
cut at any instant leaves either the old file or the new one, never a torn
one.  Each step that matters for power-loss safety passes a named
*persistence point*; tests arm one with :func:`arm_crash` to simulate the
power failing exactly there (the process "dies" by raising
:class:`SimulatedCrash`, leaving whatever was on disk at that instant).
"""

# os.path, not pathlib: the dev launcher and PID 1's shutdown record import this module.
# ruff: noqa: PTH100, PTH102, PTH106, PTH108, PTH110, PTH118, PTH120

from __future__ import annotations

import os

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


def note_points(names: list[str]) -> None:
    """Record points passed elsewhere: a fork doing this process's work (:mod:`pvinit.forked`)."""
    _seen.extend(names)


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


def temp_path(final: str | os.PathLike[str]) -> str:
    """A temp name beside ``final`` (same filesystem, so rename is atomic)."""
    head, name = os.path.split(os.fspath(final))
    # os.urandom, not secrets: importing secrets loads OpenSSL (~4 MB in PID 1).
    return os.path.join(head, f".{name}.{os.urandom(6).hex()}.tmp")


class save_file:  # lower case: it is used as a function, ``with save_file(path) as handle``
    """Open a temp file beside ``path``; on clean exit fsync, rename and fsync the dir.

    On an exception the temp file is removed and ``path`` is untouched.
    ``name`` labels the persistence points (``<name>.write``, ``<name>.rename``).
    A class, not a ``contextlib`` generator: the dev launcher imports this
    module before every boot, and ``contextlib`` (with ``collections`` and
    ``functools``) is ~2.5 ms of its start.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, mode: int = 0o644, name: str = "file"
    ) -> None:
        self.final = os.fspath(path)
        self.name = name
        self.tmp = temp_path(self.final)
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            self.handle: BinaryIO = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise

    def __enter__(self) -> BinaryIO:
        return self.handle

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        try:
            if kind is None:
                self.handle.flush()
                point(f"{self.name}.write")
                os.fsync(self.handle.fileno())
            self.handle.close()
            if kind is None:
                point(f"{self.name}.rename")
                os.replace(self.tmp, self.final)
        except BaseException:
            self._discard()
            raise
        if kind is not None:
            self._discard()
            return
        fsync_dir(os.path.dirname(self.final) or ".")

    def _discard(self) -> None:
        self.handle.close()
        try:  # noqa: SIM105 - no contextlib here (see save_file)
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def write_file(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, name: str = "file"
) -> None:
    """Durably replace ``path`` with ``data``."""
    with save_file(path, mode=mode, name=name) as handle:
        handle.write(data)


def makedirs(path: str | os.PathLike[str], mode: int = 0o755) -> None:
    """Create a directory tree, fsyncing each parent that gained an entry."""
    probe = os.path.abspath(path)
    missing: list[str] = []
    while not os.path.exists(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    for directory in reversed(missing):
        try:  # noqa: SIM105 - no contextlib here (see save_file)
            os.mkdir(directory, mode)
        except FileExistsError:
            pass
        fsync_dir(os.path.dirname(directory))


def ensure_dir(path: str | os.PathLike[str], mode: int = 0o755) -> None:
    """Create a directory tree *without* fsync, for directories nothing durable depends on.

    Mount points, overlay ``upper``/``work`` directories, log directories
    and the boot persistence scope: if a power cut loses one, the next boot
    creates it again (empty, as it was).  On the boot path each fsync of a
    directory is a journal commit (~0.2 ms here, several on an SD card), and
    a container's volumes needed six.
    """
    os.makedirs(path, mode, exist_ok=True)  # noqa: PTH103 - no pathlib here (see save_file)


def remove_file(path: str | os.PathLike[str], *, name: str = "file") -> None:
    """Remove a file durably (the directory entry removal is fsynced)."""
    target = os.fspath(path)
    point(f"{name}.unlink")
    os.unlink(target)
    fsync_dir(os.path.dirname(target) or ".")


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
    os.rmdir(path)

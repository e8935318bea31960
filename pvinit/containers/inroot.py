"""Reading and creating paths inside a container's root from the host, as a chroot would.

The supervisor runs as root on the host and a container's root is an image
nobody vetted: its ``/etc/passwd`` may be a symlink to ``/../../host/etc``,
its ``/app`` a symlink to ``/proc/self/root``.  Every path here is walked one
component at a time with directory file descriptors and ``O_NOFOLLOW``;
symlinks are followed by hand with chroot semantics (an absolute target
restarts at the container's root, ``..`` stops there), so nothing outside
``root`` is ever read or created, even if the tree changes during the walk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

MAX_SYMLINKS = 40


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def open_in_root(root: Path, path: str, *, make_dirs: bool = False) -> int:
    """An ``O_RDONLY`` fd of what ``path`` names inside ``root`` (caller closes it).

    With ``make_dirs`` every missing component is created as a directory
    (mode 0755, owned by the caller, as ``mkdir -p`` in the container would)
    and the result must be a directory.  Raises OSError (ENOENT, ENOTDIR,
    ELOOP...) like the system call that failed.
    """
    stack = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        pending = _parts(path)
        links = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            parent = stack[-1]
            try:
                info = os.lstat(part, dir_fd=parent)
            except FileNotFoundError:
                if not make_dirs:
                    raise
                # A component that appears between lstat and mkdir is fine: open checks it.
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=parent)
                info = os.lstat(part, dir_fd=parent)
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(part, dir_fd=parent)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending = _parts(target) + pending
                continue
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            if pending or make_dirs:
                flags |= os.O_DIRECTORY
            stack.append(os.open(part, flags, dir_fd=parent))
        return os.dup(stack[-1])
    finally:
        for fd in stack:
            os.close(fd)


def read_in_root(root: Path, path: str, *, limit: int = 4 << 20) -> bytes | None:
    """The bytes of the regular file ``path`` inside ``root``; None when it does not exist.

    A file that is not regular (a FIFO would block, a device could be anything)
    or larger than ``limit`` raises OSError.
    """
    try:
        fd = open_in_root(root, path)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 16):
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def make_dirs_in_root(root: Path, path: str) -> None:
    """``mkdir -p path`` inside ``root``; an existing directory (or link to one) is fine."""
    os.close(open_in_root(root, path, make_dirs=True))

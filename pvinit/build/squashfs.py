"""Reproducible squashfs images, written durably.

A container's root volume and the BSP's modules and firmware are squashfs
objects in the store, named by their SHA256.  For the store to dedupe and for
a release engineer to verify a build, the same input tree must give the same
bytes on every machine and every run: so every timestamp (file and
filesystem) is pinned to 0, every owner is root, extended attributes of the
build host (SELinux labels, capabilities of a developer's checkout) are left
out, and mksquashfs' ``-reproducible`` mode orders its parallel output.

The image is built beside its final name and renamed into place only once it
is complete and fsynced, so a crash or a failing mksquashfs never leaves a
half-written image under the final name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pvinit import durable
from pvinit.errors import BadInputError, ExternalToolError, NotFoundError

#: Flags that make the output a pure function of the input tree's names,
#: contents, modes and symlink targets.
REPRODUCIBLE_FLAGS: tuple[str, ...] = (
    "-comp", "zstd",
    "-noappend",
    "-reproducible",
    "-mkfs-time", "0",
    "-all-time", "0",
    "-all-root",
    "-no-xattrs",
)

#: A callback that receives the fraction done, 0.0 .. 1.0.
ProgressCallback = Callable[[float], None]

_PROGRESS_RE = re.compile(rb"\]\s+(\d+)/(\d+)\s+\d+%")
_STDERR_TAIL = 2000


def find_mksquashfs() -> str:
    """The mksquashfs program, or ExternalToolError saying how to install it."""
    found = shutil.which("mksquashfs")
    if found is None and Path("/usr/sbin/mksquashfs").exists():
        found = "/usr/sbin/mksquashfs"
    if found is None:
        raise ExternalToolError(
            "mksquashfs is not installed", where="mksquashfs",
            hint="apt-get install squashfs-tools",
        )
    return found


def mksquashfs_argv(
    tool: str, src_dir: Path, out: str | Path, *, processors: int | None, progress: bool
) -> list[str]:
    """The full mksquashfs command line for one reproducible build."""
    argv = [tool, str(src_dir), str(out), *REPRODUCIBLE_FLAGS]
    if processors is not None:
        argv += ["-processors", str(processors)]
    # -quiet drops the per-file listing; the progress bar is kept only when
    # someone reads it, since it is the one thing on stdout we can parse.
    argv.append("-quiet")
    if not progress:
        argv.append("-no-progress")
    return argv


def parse_progress(output: bytes) -> float | None:
    """The last fraction done shown in a chunk of mksquashfs' progress bar.

    The bar is redrawn with carriage returns as ``[===|   ]  123/456  26%``;
    the block counts give a finer fraction than the rounded percentage.
    None when the chunk holds no complete bar (the caller keeps the last one).
    """
    matches = _PROGRESS_RE.findall(output)
    if not matches:
        return None
    done, total = (int(n) for n in matches[-1])
    if total <= 0:
        return None
    return min(1.0, done / total)


def make_squashfs(
    src_dir: Path,
    out: Path,
    *,
    progress: ProgressCallback | None = None,
    processors: int | None = None,
) -> None:
    """Build a reproducible zstd squashfs of ``src_dir`` at ``out``, atomically.

    Same tree in -> same bytes out.  ``out`` is replaced only when the new
    image is complete and on disk.  ``progress`` is called with the fraction
    done as mksquashfs reports it (and with 1.0 at the end).  A missing or
    failing mksquashfs raises ExternalToolError carrying its stderr tail.
    """
    src_dir = Path(src_dir)
    out = Path(out)
    if not src_dir.is_dir():
        if src_dir.exists():
            raise BadInputError("not a directory", where=str(src_dir))
        raise NotFoundError("source directory does not exist", where=str(src_dir))
    if not out.parent.is_dir():
        raise NotFoundError("output directory does not exist", where=str(out.parent))
    if out.is_dir():
        raise BadInputError("output is a directory", where=str(out))
    tool = find_mksquashfs()

    tmp = durable.temp_path(out)
    argv = mksquashfs_argv(tool, src_dir, tmp, processors=processors, progress=progress is not None)
    try:
        _run(argv, progress)
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o644)
            durable.point("squashfs.write")
            os.fsync(fd)
        finally:
            os.close(fd)
        durable.point("squashfs.rename")
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # noqa: PTH108 - temp_path gives text
        raise
    durable.fsync_dir(out.parent)
    if progress is not None:
        progress(1.0)


def _run(argv: list[str], progress: ProgressCallback | None) -> None:
    """Run mksquashfs, feeding its progress bar to ``progress`` when given."""
    with tempfile.TemporaryFile() as stderr:
        try:
            # Our flags already pin every timestamp; mksquashfs refuses to run
            # when SOURCE_DATE_EPOCH is set as well, so keep it out of its way.
            env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=env
            )
        except OSError as exc:
            raise ExternalToolError(f"cannot run mksquashfs: {exc}", where=argv[0]) from exc
        try:
            if proc.stdout is not None:
                _follow_progress(proc.stdout, progress)
        except BaseException:
            # a progress callback that raises aborts the build: stop the tool too
            proc.kill()
            proc.wait()
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
        code = proc.wait()
        if code != 0:
            stderr.seek(0)
            tail = stderr.read().decode("utf-8", "replace")[-_STDERR_TAIL:].strip()
            raise ExternalToolError(
                f"mksquashfs exited with status {code}: {tail or '(no output)'}",
                where=argv[1],
            )


def _follow_progress(stdout: IO[bytes], progress: ProgressCallback | None) -> None:
    """Read stdout to its end, reporting each new fraction done."""
    last: float | None = None
    pending = b""
    while chunk := os.read(stdout.fileno(), 4096):
        if progress is None:
            continue
        pending = (pending + chunk)[-512:]
        fraction = parse_progress(pending)
        if fraction is not None and fraction != last:
            last = fraction
            progress(fraction)

"""Mount what a container runs on: squashfs volumes, overlays over them, bind mounts.

Mounting uses util-linux's ``mount``/``umount`` (``-o loop`` finds a free loop
device and sets autoclear, so unmounting frees it): one well-tested path
instead of re-implementing LOOP_CONFIGURE with ctypes.  Before a squashfs
object is handed to the kernel its superblock is checked here, so a truncated
or overwritten object gives an IntegrityError naming the object, instead of
the kernel's "wrong fs type, bad option, bad superblock".

Every error names the object (or source) and the mount point.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from pathlib import Path

from pvinit import durable
from pvinit.containers import loopmount
from pvinit.errors import BadInputError, ExternalToolError, IntegrityError
from pvinit.record import record

SQUASHFS_MAGIC = 0x73717368  # "hsqs" little-endian
_SUPERBLOCK = struct.Struct("<IIIIIHHHHHHQQQQQQQQ")  # 96 bytes
_ABSENT = 0xFFFFFFFFFFFFFFFF
#: Characters overlayfs's option parser treats specially in lowerdir/upperdir/workdir.
_OVERLAY_UNSAFE = frozenset(",:\\\n")

_CORRUPT_HINT = "the image is likely corrupt: verify the object (fsck) or fetch it again"


@record(frozen=True)
class SquashfsSuperblock:
    """The fields of a squashfs 4.0 superblock that tell a usable image from a broken one."""

    inodes: int
    block_size: int
    compression: int
    bytes_used: int

    @classmethod
    def parse(cls, data: bytes, *, size: int, where: str) -> SquashfsSuperblock:
        """Parse and sanity-check the first 96 bytes of an image of ``size`` bytes (pure)."""
        if len(data) < _SUPERBLOCK.size:
            raise IntegrityError(
                f"not a squashfs image: only {len(data)} bytes, shorter than a superblock",
                where=where,
            )
        fields = _SUPERBLOCK.unpack_from(data)
        magic, inodes, _mtime, block_size, _frags, compression, block_log = fields[:7]
        major, minor = fields[9], fields[10]
        bytes_used = fields[12]
        tables = fields[13:]
        if magic != SQUASHFS_MAGIC:
            raise IntegrityError("not a squashfs image (bad magic)", where=where)
        if (major, minor) != (4, 0):
            raise IntegrityError(f"unsupported squashfs version {major}.{minor}", where=where)
        if block_log > 20 or block_size != 1 << block_log or block_size < 4096:
            raise IntegrityError("corrupt squashfs superblock (block size)", where=where)
        if bytes_used > size:
            raise IntegrityError(
                f"truncated squashfs image: superblock says {bytes_used} bytes, file has {size}",
                where=where,
            )
        if any(start != _ABSENT and start > bytes_used for start in tables):
            raise IntegrityError("corrupt squashfs superblock (table offsets)", where=where)
        return cls(
            inodes=inodes, block_size=block_size, compression=compression, bytes_used=bytes_used
        )


def check_squashfs(image: Path, *, where: str | None = None) -> SquashfsSuperblock:
    """Read and check ``image``'s superblock; IntegrityError names ``where`` (or the path)."""
    label = where or str(image)
    try:
        with open(image, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data = handle.read(_SUPERBLOCK.size)
    except FileNotFoundError:
        raise BadInputError("squashfs image does not exist", where=label) from None
    return SquashfsSuperblock.parse(data, size=size, where=label)


def parse_mountinfo(text: str) -> list[str]:
    """The mount points listed in a /proc/self/mountinfo text, octal escapes decoded (pure)."""
    points = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.append(_unescape(fields[4]))
    return points


def _unescape(field: str) -> str:
    out, index = [], 0
    while index < len(field):
        chunk = field[index : index + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and chunk[1:].isdigit():
            out.append(chr(int(chunk[1:], 8)))
            index += 4
        else:
            out.append(field[index])
            index += 1
    return "".join(out)


def is_mountpoint(path: Path) -> bool:
    """True when something is mounted exactly at ``path``."""
    text = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
    return os.path.realpath(path) in parse_mountinfo(text)


def _run_mount(argv: list[str], *, what: str, target: Path) -> None:
    try:
        import subprocess  # the fallback only: loop-control mounts need no process

        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError:
        raise ExternalToolError(f"{argv[0]} is not installed", where=what) from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().replace("\n", "; ")
        raise ExternalToolError(f"cannot mount on {target}: {detail}", where=what)


def mount_squashfs(image: Path, target: Path, *, name: str | None = None) -> None:
    """Loop-mount squashfs ``image`` read-only on ``target`` (created if missing).

    ``name`` (an object id or a revision key) labels errors instead of the path.
    By system calls (:mod:`pvinit.containers.loopmount`) where loop-control
    exists, else with util-linux's ``mount``.
    """
    what = name or str(image)
    check_squashfs(image, where=what)
    durable.ensure_dir(target)
    if loopmount.available():
        try:
            loopmount.mount_image(image, target)
        except OSError as error:
            if error.errno == errno.EINVAL:  # what the kernel says of a squashfs it cannot read
                raise ExternalToolError(
                    f"cannot mount on {target}: the kernel refuses the squashfs (bad superblock "
                    "or tables)",
                    where=what,
                    hint=_CORRUPT_HINT,
                ) from None
            raise ExternalToolError(
                f"cannot mount on {target}: {error.strerror or error}", where=what
            ) from None
        return
    try:
        _run_mount(
            ["mount", "-t", "squashfs", "-o", "loop,ro,nodev,nosuid", str(image), str(target)],
            what=what,
            target=target,
        )
    except ExternalToolError as exc:
        if "superblock" not in exc.message:
            raise
        # The kernel read past our superblock check and found garbage: a corrupt object.
        raise ExternalToolError(exc.message, where=what, hint=_CORRUPT_HINT) from None


def overlay_options(lower: list[Path], upper: Path, work: Path) -> str:
    """The option string of an overlay mount, refusing paths overlayfs would misparse (pure)."""
    for path in (*lower, upper, work):
        if any(ch in _OVERLAY_UNSAFE for ch in str(path)):
            raise BadInputError("overlay paths may not contain ',', ':' or '\\'", where=str(path))
    lowerdir = ":".join(str(path) for path in lower)
    return f"lowerdir={lowerdir},upperdir={upper},workdir={work}"


OVERLAY_DIRS = ("upper", "work")
"""What an overlay keeps in its persistence directory: the writes, and overlayfs's scratch."""


def mount_overlay(lower: list[Path], persist: Path, target: Path) -> None:
    """Mount an overlay of ``lower`` on ``target``, writes kept in ``persist``/upper.

    ``persist`` is the container volume's persistence directory (permanent,
    per revision or per boot); ``upper`` and ``work`` inside it are always on
    the same filesystem, as overlayfs requires.  Missing ones are created
    here without fsync: a caller that needs them durable creates them first.
    """
    upper, work = (persist / name for name in OVERLAY_DIRS)
    options = overlay_options(lower, upper, work)
    for directory in (upper, work, target):
        durable.ensure_dir(directory)
    what = f"overlay of {', '.join(str(path) for path in lower)}"
    if loopmount.available():
        try:
            loopmount.mount_overlay_fs(options, target)
        except OSError as error:
            raise ExternalToolError(
                f"cannot mount on {target}: {error.strerror or error}", where=what
            ) from None
        return
    _run_mount(["mount", "-t", "overlay", "overlay", "-o", options, str(target)], what=what,
               target=target)


def bind_mount(source: Path, target: Path, *, readonly: bool = False) -> None:
    """Bind ``source`` on ``target`` (read-only when asked: a second remount step)."""
    if not source.exists():
        raise BadInputError("bind mount source does not exist", where=str(source))
    if source.is_dir():
        durable.ensure_dir(target)
    elif not target.exists():
        durable.ensure_dir(target.parent)
        target.touch()
    _run_mount(["mount", "--bind", str(source), str(target)], what=str(source), target=target)
    if readonly:
        try:
            _run_mount(
                ["mount", "-o", "remount,bind,ro", str(target)], what=str(source), target=target
            )
        except ExternalToolError:
            unmount(target)
            raise


def unmount(target: Path, *, lazy_fallback: bool = True) -> None:
    """Unmount ``target``; when it is busy, detach it lazily (``umount -l``) if allowed.

    Unmounting something not mounted is a no-op, so cleanup paths can call it blindly.
    """
    if not is_mountpoint(target):
        return
    import subprocess  # only unmounts (shutdown, updates, failures) run umount

    result = subprocess.run(["umount", str(target)], capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return
    if lazy_fallback:
        lazy = subprocess.run(
            ["umount", "-l", str(target)], capture_output=True, text=True, check=False
        )
        if lazy.returncode == 0:
            return
    raise ExternalToolError(f"cannot unmount: {result.stderr.strip()}", where=str(target))


@record(frozen=True)
class RootMount:
    """A container root: a squashfs volume (``lower``) under an overlay (``target``)."""

    lower: Path
    target: Path

    def unmount(self) -> None:
        """Unmount the overlay, then the squashfs (which frees its loop device)."""
        unmount(self.target)
        unmount(self.lower)


def mount_root(
    image: Path, *, lower: Path, persist: Path, target: Path, name: str | None = None
) -> RootMount:
    """Mount ``image`` on ``lower`` and an overlay with writes in ``persist`` on ``target``.

    On failure nothing stays mounted.
    """
    mount_squashfs(image, lower, name=name)
    try:
        mount_overlay([lower], persist, target)
    except BaseException:
        with contextlib.suppress(ExternalToolError):
            unmount(lower)
        raise
    return RootMount(lower=lower, target=target)

"""Mount squashfs images and overlays with the kernel's own calls, not util-linux's ``mount``.

Every container root is a loop-mounted squashfs plus an overlay: two
``mount`` processes per container, each a fork + exec + library load of
several milliseconds, one after the other on the boot's critical path.  The
same work done here is a few ioctls and a ``mount(2)``: a free loop device
from ``/dev/loop-control``, bound to the image with ``LOOP_CONFIGURE``
(read-only, auto-clear: the device goes away with the last unmount, as with
``mount -o loop``), then mounted.

:func:`available` says whether this machine allows it (a loop-control
device and a libc with ``mount``); :mod:`pvinit.containers.volumes` falls
back to the ``mount`` tool otherwise.  Errors are ``OSError`` with the
kernel's errno; the caller words them for the user.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

from pvinit.pid1.syscalls import Libc

LOOP_CONTROL = "/dev/loop-control"
#: ioctls of <linux/loop.h>.
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A  # Linux >= 5.8: fd + status in one call
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
#: struct loop_info64: 5 u64, 4 u32, file name[64], crypt name[64], key[32], 2 u64.
_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")
#: struct loop_config: u32 fd, u32 block_size, loop_info64, u64 reserved[8].
_CONFIG = struct.Struct(f"=II{_INFO64.size}s64x")
#: mount(2) flags.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
#: How often a free loop device may be taken by someone else before we give up.
_RACE_RETRIES = 16

_libc: Libc | None = None


def _mount_call() -> Libc:
    global _libc  # noqa: PLW0603 - one libc handle per process
    if _libc is None:
        _libc = Libc()
    return _libc


def available() -> bool:
    """True when loop devices can be set up here without util-linux."""
    return Path(LOOP_CONTROL).exists()


def _info(image: Path) -> bytes:
    name = os.fsencode(image)[:63]
    return _INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
                        name, b"", b"", 0, 0)


def _bind(loop_fd: int, backing_fd: int, image: Path) -> None:
    """Attach ``backing_fd`` to the loop device, read-only and auto-clearing."""
    info = _info(image)
    try:
        fcntl.ioctl(loop_fd, LOOP_CONFIGURE, _CONFIG.pack(backing_fd, 0, info))
        return
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    fcntl.ioctl(loop_fd, LOOP_SET_FD, backing_fd)  # kernels before 5.8
    try:
        fcntl.ioctl(loop_fd, LOOP_SET_STATUS64, info)
    except OSError:
        fcntl.ioctl(loop_fd, LOOP_CLR_FD, 0)
        raise


def mount_image(image: Path, target: Path, fstype: str = "squashfs") -> str:
    """Loop-mount ``image`` read-only (nodev, nosuid) on ``target``; the loop device's path.

    The loop device is auto-clearing, so a failed mount, or the unmount
    later, leaves no loop device behind.
    """
    backing = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    try:
        control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(_RACE_RETRIES):
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                loop_fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    try:
                        _bind(loop_fd, backing, image)
                    except OSError as error:
                        if error.errno == errno.EBUSY:
                            continue  # another process took it between GET_FREE and now
                        raise
                    _mount_call().mount(device, target, fstype, MS_RDONLY | MS_NODEV | MS_NOSUID)
                    return device
                finally:
                    os.close(loop_fd)  # auto-clear: the mount now holds the device, or nothing
            raise OSError(errno.EBUSY, "no free loop device stayed free", LOOP_CONTROL)
        finally:
            os.close(control)
    finally:
        os.close(backing)


def mount_overlay_fs(options: str, target: Path) -> None:
    """``mount -t overlay overlay -o OPTIONS TARGET`` as one system call."""
    _mount_call().mount("overlay", target, "overlay", 0, options)

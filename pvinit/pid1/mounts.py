"""The basic mounts PID 1 owns: mount what is missing at boot, unmount all at shutdown.

On a device the kernel may already have mounted some of ``/proc``, ``/sys``,
``/dev`` (devtmpfs automount, an initramfs that moved its mounts), so each
one is mounted only when ``/proc/self/mountinfo`` does not list it: mounting
twice would stack a second instance and hide whatever the first held.

In dev mode PID 1 runs in a new mount namespace on a developer's machine.
It first makes every mount private (so nothing it does propagates to the
host), mounts a fresh ``/proc`` for its new PID namespace and a tmpfs at
``<storage>/run`` for the device's volatile ``/run``; the host's ``/sys``
and ``/dev`` are used as they are.  At shutdown it unmounts only below the
storage dir and never remounts anything read-only: a read-only remount
changes the *superblock*, which a private namespace still shares with the
host.

The parsing and planning below are pure functions of the mount table; only
:func:`mount_basics`, :func:`dev_mounts` and :func:`unmount_all` act.
"""

# PID 1 does not import pathlib (~0.7 MiB for its whole life, ~3 ms per boot): os.path
# on purpose; pathlib.Path only in what runs outside PID 1 or at shutdown.
# ruff: noqa: PTH103, PTH115, PTH118

from __future__ import annotations

import errno
import os

from pvinit.errors import RefusedError
from pvinit.pid1 import SlotsRecord, syscalls
from pvinit.pid1.syscalls import (
    MNT_DETACH,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
)

TYPE_CHECKING = False  # not typing's, nor collections.abc at run time: see pvinit.pid1.syscalls
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    Log = Callable[[str], None]

MOUNTINFO = "/proc/self/mountinfo"

API_FSTYPES = frozenset(
    {
        "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs",
        "debugfs", "tracefs", "pstore", "bpf", "mqueue", "hugetlbfs", "configfs",
        "fusectl", "efivarfs", "binfmt_misc", "autofs",
    }
)  # fmt: skip
"""Kernel interface filesystems: not unmounted at shutdown, nothing to flush in them."""


class MountSpec(SlotsRecord):
    """One mount PID 1 wants to exist; ``target`` is absolute within the root."""

    __slots__ = ("target", "fstype", "source", "flags", "data")  # noqa: RUF023 - constructor order

    def __init__(
        self, target: str, fstype: str, source: str, flags: int = 0, data: str | None = None
    ) -> None:
        self.target = target
        self.fstype = fstype
        self.source = source
        self.flags = flags
        self.data = data


BASE_MOUNTS: tuple[MountSpec, ...] = (
    MountSpec("/proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC),
    MountSpec("/sys", "sysfs", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC),
    MountSpec("/dev", "devtmpfs", "devtmpfs", MS_NOSUID, "mode=0755"),
    MountSpec("/dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666"),
    MountSpec("/dev/shm", "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"),  # noqa: S108
    MountSpec("/run", "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"),
    MountSpec("/sys/fs/cgroup", "cgroup2", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC),
)
"""What a device needs before the supervisor starts, parents before children."""


class MountEntry(SlotsRecord):
    """One line of /proc/self/mountinfo (the fields PID 1 uses)."""

    __slots__ = ("mount_id", "parent_id", "mount_point", "fstype", "source")  # noqa: RUF023 - constructor order

    def __init__(
        self, mount_id: int, parent_id: int, mount_point: str, fstype: str, source: str
    ) -> None:
        self.mount_id = mount_id
        self.parent_id = parent_id
        self.mount_point = mount_point
        self.fstype = fstype
        self.source = source


class MountReport(SlotsRecord):
    """What :func:`mount_basics` did: targets mounted, already there, or failed (errno text)."""

    __slots__ = ("mounted", "present", "failed")  # noqa: RUF023 - constructor order

    def __init__(
        self,
        mounted: tuple[str, ...] = (),
        present: tuple[str, ...] = (),
        failed: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.mounted = mounted
        self.present = present
        self.failed = failed


def _unescape(field: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as \ooo octal."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        char = field[i]
        digits = field[i + 1 : i + 4]
        if char == "\\" and len(digits) == 3 and all(d in "01234567" for d in digits):
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            out.append(char)
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> tuple[MountEntry, ...]:
    """Parse mountinfo text in kernel order; malformed lines are skipped, not fatal."""
    entries: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)
            entries.append(
                MountEntry(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    mount_point=_unescape(fields[4]),
                    fstype=fields[dash + 1],
                    source=_unescape(fields[dash + 2]),
                )
            )
        except (ValueError, IndexError):
            continue
    return tuple(entries)


def read_mountinfo(path: str = MOUNTINFO) -> tuple[MountEntry, ...]:
    """The current mount table; empty when /proc is not mounted yet."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return parse_mountinfo(handle.read())
    except OSError:
        return ()


def is_mounted(table: Iterable[MountEntry], path: str) -> bool:
    return any(entry.mount_point == path for entry in table)


def _is_below(path: str, top: str) -> bool:
    if top == "/":
        return path != "/"
    return path.startswith(top.rstrip("/") + "/")


def plan_unmounts(table: Iterable[MountEntry], under: str, *, keep_api: bool) -> list[MountEntry]:
    """Mounts strictly below ``under``, last mounted first (children before parents).

    ``keep_api`` leaves kernel interface filesystems (:data:`API_FSTYPES`)
    alone: PID 1 needs ``/proc`` and ``/dev`` until the very end.
    """
    chosen = [
        entry
        for entry in table
        if _is_below(entry.mount_point, under) and not (keep_api and entry.fstype in API_FSTYPES)
    ]
    return list(reversed(chosen))


def mount_basics(
    specs: Iterable[MountSpec] = BASE_MOUNTS,
    *,
    root: str = "/",
    log: Log | None = None,
    mountinfo: str = MOUNTINFO,
) -> MountReport:
    """Mount each spec whose target (under ``root``) is not a mount point yet.

    A failure is logged and reported, never raised: a device without cgroup2
    should still boot far enough to report it.  ``root`` lets tests build the
    same mounts inside a scratch directory.
    """
    mounted: list[str] = []
    present: list[str] = []
    failed: list[tuple[str, str]] = []
    for spec in specs:
        target = os.path.join(root, spec.target.lstrip("/")) if root != "/" else spec.target
        if is_mounted(read_mountinfo(mountinfo), target):
            present.append(target)
            continue
        try:
            os.makedirs(target, mode=0o755, exist_ok=True)
            syscalls.libc.mount(spec.source, target, spec.fstype, spec.flags, spec.data)
        except OSError as error:
            failed.append((target, os.strerror(error.errno or 0)))
            if log is not None:
                log(f"mount {spec.fstype} on {target} failed: {error}")
            continue
        mounted.append(target)
    return MountReport(tuple(mounted), tuple(present), tuple(failed))


def _parent_pid(proc: str, pid: str) -> str | None:
    try:
        with open(os.path.join(proc, pid, "stat"), encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[1] if len(fields) > 1 and fields[1] != "0" else None


def assert_own_mount_namespace(proc: str = "/proc") -> None:
    """Refuse dev mode unless this process has a mount namespace of its own.

    Called before the fresh /proc is mounted, while ``/proc`` still shows
    the parent PID namespace: walking up our ancestors there, one of them
    (the launcher, at the latest) must be in a different mount namespace,
    proof that ours was made for us.  If every readable ancestor shares it,
    every mount below would land on the host.
    """
    mine = os.readlink(os.path.join(proc, "self", "ns", "mnt"))
    pid: str | None = os.readlink(os.path.join(proc, "self"))
    for _ in range(64):
        pid = _parent_pid(proc, pid) if pid is not None else None
        if pid is None:
            break
        try:
            theirs = os.readlink(os.path.join(proc, pid, "ns", "mnt"))
        except OSError:
            continue  # an ancestor we may not inspect; keep walking up
        if theirs != mine:
            return
    raise RefusedError(
        "dev mode needs its own mount namespace, but shares its parent's",
        where=mine,
        hint="start it with `unshare --pid --mount --fork` or `pvinit --storage DIR`",
    )


def dev_mounts(storage: str | os.PathLike[str], *, log: Log | None = None) -> MountReport:
    """Dev mode: private mounts, a fresh /proc, a tmpfs for the device's /run.

    Raises RefusedError when not in a mount namespace of our own; mount
    failures of the fresh /proc or the private remount raise OSError,
    because continuing would show PID 1 the host's processes.
    """
    assert_own_mount_namespace()
    syscalls.libc.mount("none", "/", None, MS_REC | MS_PRIVATE)
    syscalls.libc.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    run_dir = os.path.join(os.fspath(storage), "run")
    run = MountSpec(run_dir, "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    report = mount_basics((run,), log=log)
    return MountReport(("/proc", *report.mounted), report.present, report.failed)


def unmount_all(
    under: str = "/",
    *,
    keep_api: bool = True,
    remount_ro: bool = True,
    log: Log | None = None,
    mountinfo: str = MOUNTINFO,
) -> list[str]:
    """Unmount everything below ``under`` in reverse order; returns what is left mounted.

    A busy mount (EBUSY: a process we could not kill still holds a file)
    is remounted read-only when ``remount_ro`` -- its data is then safe
    for the power cut.  Otherwise, or when a file is still open for writing
    (a read-only remount is EBUSY too), it is lazily detached; a mount that
    could not be made read-only is returned as left.  With ``under == "/"``
    and ``remount_ro`` the root itself is remounted read-only last.
    """
    left: list[str] = []
    for entry in plan_unmounts(read_mountinfo(mountinfo), under, keep_api=keep_api):
        target = entry.mount_point
        try:
            syscalls.libc.umount2(target)
            continue
        except OSError as error:
            if error.errno in (errno.EINVAL, errno.ENOENT):
                continue  # already gone with a parent that was detached
            if error.errno != errno.EBUSY:
                left.append(target)
                if log is not None:
                    log(f"unmount {target} failed: {error}")
                continue
        if remount_ro:
            try:
                syscalls.libc.mount("none", target, None, MS_REMOUNT | MS_RDONLY)
                if log is not None:
                    log(f"{target} busy: remounted read-only")
                continue
            except OSError as error:  # a file still open for writing
                left.append(target)
                if log is not None:
                    log(f"{target} busy and cannot be made read-only: {error}")
        try:  # out of the way at least: what is under it can still unmount
            syscalls.libc.umount2(target, MNT_DETACH)
        except OSError as error:
            if target not in left:
                left.append(target)
            if log is not None:
                log(f"{target} busy and cannot be detached: {error}")
    if under == "/" and remount_ro:
        try:
            syscalls.libc.mount("none", "/", None, MS_REMOUNT | MS_RDONLY)
        except OSError as error:
            left.append("/")
            if log is not None:
                log(f"remount / read-only failed: {error}")
    return left

"""The one seam between PID 1 and the kernel calls Python's ``os`` lacks.

Everything that can reboot the machine, kill every process or change the
mount table passes through the :data:`libc` object below, for two reasons:

* tests replace :data:`libc` with an object whose methods fail, to check
  that PID 1 survives a failing ``mount(2)`` or ``reboot(2)``;
* the two calls that would end *this* machine if run outside a PID
  namespace we made -- ``reboot(2)`` and ``kill(-1, ...)`` -- refuse unless
  the calling process is PID 1.  On a development host the real init is
  another program, so our code is PID 1 only inside a namespace we created.

Failures are ``OSError`` with the errno the kernel returned, like ``os``.
"""

from __future__ import annotations

import ctypes
import os

from pvinit.pid1 import suppress

# mount(2) flags (linux/mount.h)
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
# umount2(2) flags
MNT_FORCE = 0x1
MNT_DETACH = 0x2
# reboot(2) commands (linux/reboot.h, as glibc's <sys/reboot.h> names them)
RB_AUTOBOOT = 0x01234567
RB_HALT_SYSTEM = 0xCDEF0123
RB_POWER_OFF = 0x4321FEDC
RB_DISABLE_CAD = 0
# prctl(2)
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NAME = 15
PR_SET_THP_DISABLE = 41
PR_GET_THP_DISABLE = 42


def _as_c_int(value: int) -> ctypes.c_int:
    """reboot(2)'s magic numbers exceed INT_MAX; pass their 32-bit pattern."""
    return ctypes.c_int(value - (1 << 32) if value >= 1 << 31 else value)


def _encode(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


class Libc:
    """Thin typed wrappers over libc; every failure raises OSError(errno)."""

    def __init__(self) -> None:
        # Not ctypes.util.find_library: it runs ldconfig in a child process,
        # a fork PID 1 does not need at every boot.
        try:
            self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:  # not glibc (musl): the interpreter's own symbols hold libc
            self._libc = ctypes.CDLL(None, use_errno=True)

    def _check(self, result: int, what: str, target: str | os.PathLike[str] | None = None) -> None:
        if result != 0:
            err = ctypes.get_errno()
            filename = None if target is None else os.fspath(target)
            raise OSError(err, f"{what}: {os.strerror(err)}", filename)

    def mount(
        self,
        source: str,
        target: str | os.PathLike[str],
        fstype: str | None,
        flags: int = 0,
        data: str | None = None,
    ) -> None:
        result = self._libc.mount(
            _encode(source),
            _encode(target),
            _encode(fstype),
            ctypes.c_ulong(flags),
            _encode(data),
        )
        self._check(result, "mount", target)

    def umount2(self, target: str | os.PathLike[str], flags: int = 0) -> None:
        self._check(self._libc.umount2(_encode(target), ctypes.c_int(flags)), "umount2", target)

    def sync(self) -> None:
        self._libc.sync()

    def set_process_title(self, title: str) -> None:
        """Show ``title`` as this process's command line (``ps``, ``/proc/<pid>/cmdline``).

        For a process forked from PID 1 without an exec, which would otherwise
        show PID 1's command line.  As setproctitle does on Linux: the kernel
        reads the command line from the process's original argv memory
        (``arg_start``..``arg_end`` in ``/proc/self/stat``), which Python no
        longer uses after start-up; the title is written there, cut to fit,
        NUL-padded.  ``comm`` (``/proc/<pid>/comm``, 15 bytes) is set too.
        """
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        arg_start, arg_end = int(fields[45]), int(fields[46])  # stat fields 48 and 49
        size = arg_end - arg_start
        if size <= 1:
            return
        data = os.fsencode(title)[: size - 1]
        ctypes.memmove(arg_start, data + b"\0" * (size - len(data)), size)
        self._libc.prctl(PR_SET_NAME, os.fsencode(title)[:15], 0, 0, 0)

    def malloc_trim(self) -> None:
        """Give the C heap's free pages back to the kernel (glibc; a no-op elsewhere).

        A boot or an update allocates and frees megabytes (state documents,
        bundle buffers); glibc keeps freed memory for reuse, so an idle
        supervisor would go on holding its peak.
        """
        trim = getattr(self._libc, "malloc_trim", None)
        if trim is not None:
            trim(ctypes.c_size_t(0))

    def inotify_init1(self, flags: int) -> int:
        """A new inotify(7) descriptor (the supervisor's inbox watcher)."""
        return self._fd_or_raise(self._libc.inotify_init1(ctypes.c_int(flags)), "inotify_init1")

    def inotify_add_watch(self, fd: int, path: str | os.PathLike[str], mask: int) -> int:
        """Watch ``path``; returns the watch descriptor (the same one if already watched)."""
        result = self._libc.inotify_add_watch(
            ctypes.c_int(fd), _encode(path), ctypes.c_uint32(mask)
        )
        return self._fd_or_raise(result, "inotify_add_watch", path)

    def inotify_rm_watch(self, fd: int, wd: int) -> None:
        self._check(self._libc.inotify_rm_watch(ctypes.c_int(fd), ctypes.c_int(wd)),
                    "inotify_rm_watch")

    def _fd_or_raise(
        self, result: int, what: str, target: str | os.PathLike[str] | None = None
    ) -> int:
        """Calls that return a descriptor, or -1 and errno."""
        if result < 0:
            self._check(result, what, target)
        return result

    def set_thp_disable(self, disabled: bool) -> None:
        """Opt this process out of transparent huge pages (or back in); see THP below.

        The flag belongs to the address space: forks inherit it and exec keeps
        it, so whoever starts a workload with the system's own policy clears
        it around the spawn (:func:`thp_as_the_system_has_it`).
        """
        self._check(self._libc.prctl(PR_SET_THP_DISABLE, int(disabled), 0, 0, 0), "prctl")

    def thp_disabled(self) -> bool:
        return bool(self._libc.prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1)

    def set_child_subreaper(self) -> None:
        self._check(self._libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl")

    def reboot(self, command: int) -> None:
        """reboot(2); only PID 1 may call it (see the module docstring).

        Returns only when the kernel refused (``RB_DISABLE_CAD`` returns 0);
        inside a child PID namespace a restart or power-off ends the
        namespace's init instead of the machine.
        """
        _require_pid1("reboot(2)")
        self._check(self._libc.reboot(_as_c_int(command)), "reboot")

    def kill_all(self, sig: int) -> None:
        """kill(-1, sig): every process but PID 1 itself; only PID 1 may call it."""
        _require_pid1("kill(-1)")
        with suppress(ProcessLookupError):  # nothing left to signal
            os.kill(-1, sig)


def _require_pid1(what: str) -> None:
    if os.getpid() != 1:
        raise PermissionError(
            1, f"{what} refused: this process is not PID 1 (pid {os.getpid()})", None
        )


libc = Libc()
"""The object PID 1 calls; tests may replace it to inject failures."""

# THP: where the kernel backs anonymous memory with transparent huge pages
# ("always", as Debian's kernels do), any untouched 2 MiB-aligned range of a
# larger mapping -- pymalloc's arenas merge into one, a thread's stack -- gets
# a whole 2 MiB page on its first touch.  Measured on the VM: the supervisor's
# idle PSS read 15.3 or 16.9 MiB from one boot to the next, depending only on
# whether that happened.  PID 1 opts itself and the supervisor out (the
# containers keep the system's policy: the LXC driver spawns lxc-start with
# the flag cleared).  The same opt-out as systemd's MemoryTHP=disable.


class thp_as_the_system_has_it:  # a context manager, named like suppress
    """Clear this process's THP opt-out for a spawn: the child gets the system's policy.

    ``posix_spawn`` runs the child in this address space until its exec, and
    exec copies the flag: cleared for that moment, set again at once.  A no-op
    where the kernel has no such flag or it was not set.
    """

    def __init__(self) -> None:
        self._was = False

    def __enter__(self) -> None:
        try:
            self._was = libc.thp_disabled()
            if self._was:
                libc.set_thp_disable(False)
        except (OSError, AttributeError):
            self._was = False

    def __exit__(self, *exc: object) -> None:
        if self._was:
            with suppress(OSError):
                libc.set_thp_disable(True)

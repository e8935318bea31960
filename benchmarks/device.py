"""A dev-mode pvinit device for the benchmarks: launch, wait for goals, measure, power off.

Shared by the ``boot``, ``footprint`` and scale sections.  A device is
``pvinit --storage DIR [--factory BUNDLE]``: the launcher (outside) starts
``unshare --pid --mount --fork --kill-child``, whose child is pvinit's PID 1
in a fresh PID + mount namespace; PID 1 forks the supervisor, which runs the
containers under LXC (one ``[lxc monitor]`` process per container, forked
from the supervisor by liblxc).  Everything here reads the device from the
host through ``/proc``, the way a field technician's tools would, and never
changes it.

Typical use::

    byte_compile(REPO, python)                     # once, as on a device image
    with running_device(storage, factory=bundle, pvinit=ctx.tool("pvinit")) as dev:
        boot = wait_for_goals(dev)                 # BootTiming: seconds, handover_to_goals_s, ...
        memory = dev.memory()                      # [ProcessMemory] of PID 1, supervisor, monitors
    # powered off in order here, even when the block raised

Needs root (namespaces, loop mounts, LXC).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.context import REPO
from benchmarks.watch import DirectoryWatch
from pvinit.errors import PvError
from pvinit.pid1 import HANDED_OVER_ENV
from pvinit.pid1.locate import find_dev_pid1, status_path
from pvinit.supervisor.memory import read_memory
from pvinit.supervisor.status import StatusDocument, read_status

#: Longest boot we wait for before calling it a failure (a guard, not a goal).
BOOT_TIMEOUT = 180.0
#: Seconds the launcher gets to power the device off in order before we kill it.
STOP_TIMEOUT = 60.0
#: Longest wait between two looks at the device while it boots.  Once the status
#: file exists the harness wakes on its every replacement (inotify,
#: :mod:`benchmarks.watch`), so a goal is seen when it is written, not on a 10 ms grid.
POLL_INTERVAL = 0.01
_CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Process roles :func:`classify_namespace` gives.
ROLE_PID1 = "pid1"
ROLE_SUPERVISOR = "supervisor"
ROLE_PYTHON = "python"  # another pvinit Python process (none today)
ROLE_MONITOR = "lxc-monitor"
ROLE_OTHER = "other"
#: pvinit's own interpreters: what its idle-memory goal counts.
PVINIT_ROLES = frozenset({ROLE_PID1, ROLE_SUPERVISOR, ROLE_PYTHON})


# --- /proc readers --------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (its main thread's list; empty when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(word) for word in text.split()]


def command_of(pid: int) -> str:
    """``pid``'s command line, words joined by spaces ("" when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _exe(pid: int) -> str:
    try:
        return str(Path(f"/proc/{pid}/exe").readlink())
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (field 3 is index 0)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float | None:
    """CPU time ``pid`` used so far (utime + stime, seconds); None when it is gone.

    ``reaped_children`` adds cutime + cstime: the CPU of children it already
    waited for (e.g. the supervisor's short-lived helper processes).
    """
    fields = _stat_fields(pid)
    if fields is None:
        return None
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _CLK_TCK


def handover_of(pid: int) -> float | None:
    """When the launcher started ``unshare`` for PID 1 ``pid`` (``time.monotonic()`` seconds).

    Read from PID 1's environment (:data:`pvinit.pid1.HANDED_OVER_ENV`): the
    instant a device's bootloader would hand over, to the nanosecond.
    """
    try:
        words = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    prefix = f"{HANDED_OVER_ENV}=".encode()
    stamp = next((w[len(prefix):] for w in words if w.startswith(prefix)), b"")
    return int(stamp) / 1e9 if stamp.isdigit() else None


@dataclass(frozen=True)
class ProcessMemory:
    """One process's memory from ``/proc/<pid>/smaps_rollup``, in KiB."""

    pid: int
    role: str
    command: str
    pss_kb: int
    rss_kb: int


def memory_of(pid: int, role: str) -> ProcessMemory | None:
    """PSS and RSS of ``pid`` (None when it is gone), read as the supervisor reads its own."""
    rollup = read_memory(pid)
    if rollup is None:
        return None
    return ProcessMemory(pid, role, command_of(pid), rollup.pss_kib, rollup.rss_kib)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, containers included (all threads' children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                todo.extend(int(w) for w in (task / "children").read_text().split())
    return found


_PAGE = os.sysconf("SC_PAGE_SIZE")
_PRESENT = 1 << 63
_PFN_MASK = (1 << 55) - 1


def resident_frames(pid: int) -> list[int] | None:
    """Page frame number of each resident page of ``pid``, once per mapping it appears in.

    From ``/proc/<pid>/pagemap`` (bit 63 present, bits 0-54 the frame);
    the kernel shows frames only to CAP_SYS_ADMIN, so None without it or
    when the process is gone.
    """
    frames: list[int] = []
    try:
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            for line in maps:
                start, end = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
                if start >= 1 << 47:  # [vsyscall]: not in pagemap
                    continue
                pagemap.seek(start // _PAGE * 8)
                data = pagemap.read((end - start) // _PAGE * 8)
                for (entry,) in struct.iter_unpack("Q", data):
                    if entry & _PRESENT:
                        frames.append(entry & _PFN_MASK)
    except OSError:
        return None
    if frames and not any(frames):
        return None  # frames hidden: not root
    return frames


def device_pss_kb(pids: Sequence[int], sharers: Sequence[int]) -> dict[int, float] | None:
    """PSS of each of ``pids`` as if only ``sharers`` existed on the machine (KiB).

    The kernel's PSS divides a page among every process that maps it.  On a
    development host the dev launcher and the benchmark harness are Python
    too, so they share (and take half or more of) the interpreter's code
    pages that on a device only PID 1 and the supervisor map.  Counting as
    sharers only the device's own processes (``sharers``: PID 1 and
    everything below it) gives the PSS the same processes have on a device.
    None when frames cannot be read (not root).
    """
    frames: dict[int, list[int]] = {}
    for pid in dict.fromkeys([*pids, *sharers]):
        found = resident_frames(pid)
        if found is None:
            if pid in pids:
                return None
            continue
        frames[pid] = found
    mappers: dict[int, int] = {}
    for found in frames.values():
        for frame in found:
            mappers[frame] = mappers.get(frame, 0) + 1
    kib = _PAGE / 1024
    return {pid: kib * sum(1 / mappers[frame] for frame in frames[pid]) for pid in pids}


def sum_mb(items: Sequence[ProcessMemory], what: str = "pss") -> float:
    """Sum of the ``pss`` or ``rss`` of ``items`` in MiB, 2 decimals."""
    total = sum(item.pss_kb if what == "pss" else item.rss_kb for item in items)
    return round(total / 1024, 2)


def classify_namespace(init_pid: int) -> list[tuple[int, str]]:
    """(pid, role) of PID 1 and its descendants, not descending into containers.

    Roles: ``pid1``; ``supervisor`` (a Python child of PID 1, or a Python
    process whose command names ``supervisor``) or ``python`` (any other of
    pvinit's interpreters);
    ``lxc-monitor`` (liblxc's per-container monitor; its children are the
    container, which pvinit does not own); ``other`` (helpers such as a
    ``mount`` in flight).
    """
    found = [(init_pid, ROLE_PID1)]
    direct = set(children(init_pid))
    todo = list(direct)
    while todo:
        pid = todo.pop()
        command = command_of(pid)
        if command.startswith("[lxc monitor]"):
            found.append((pid, ROLE_MONITOR))
            continue
        if "python" in Path(_exe(pid)).name:
            # The supervisor is PID 1's Python child: exec'd (``-m pvinit.supervisor``)
            # or a fork titled ``pvinit.supervisor``; an untitled fork shows PID 1's
            # command line, so being PID 1's direct child is enough.
            supervisor = "supervisor" in command or pid in direct
            found.append((pid, ROLE_SUPERVISOR if supervisor else ROLE_PYTHON))
        else:
            found.append((pid, ROLE_OTHER))
        todo.extend(children(pid))
    return found


def monitors_under(lxcpath: Path) -> list[ProcessMemory]:
    """Memory of every ``[lxc monitor]`` of containers in ``lxcpath`` (the host-side reference)."""
    prefix = f"[lxc monitor] {lxcpath} "
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and command_of(int(entry.name)).startswith(prefix):
            memory = memory_of(int(entry.name), ROLE_MONITOR)
            if memory is not None:
                found.append(memory)
    return found


# --- mounts and scratch ------------------------------------------------------------------


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` in this mount namespace."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    return points


def unmount_under(root: Path) -> None:
    """Unmount everything below ``root``, deepest first (lazily when busy)."""
    for point in sorted(mounts_under(root), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def remove_tree(path: Path) -> None:
    """Delete a scratch tree, never crossing into a mount that is still there."""
    if not path.exists():
        return
    unmount_under(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True,
                   check=False)


def byte_compile(repo: Path = REPO, python: Path | str = sys.executable) -> None:
    """Byte-compile ``pvinit/`` first, as a device image is (``images/vm/build``).

    Without ``.pyc`` files (``PYTHONDONTWRITEBYTECODE=1``, a read-only tree)
    every interpreter compiles each module it imports from source on every
    boot: ~10 ms more for PID 1, ~30 ms more for the supervisor, and more
    memory.  A benchmark of a device must not pay what a device does not.
    Both levels: the device runs ``-OO`` (``.opt-2.pyc``), the tools do not.
    """
    subprocess.run([str(python), "-m", "compileall", "-q", "-o", "0", "-o", "2",
                    str(repo / "pvinit")], check=True, stdout=subprocess.DEVNULL)


# --- the device ----------------------------------------------------------------------------


@dataclass
class Device:
    """A running ``pvinit --storage`` launcher and what was found of its namespace."""

    launcher: subprocess.Popen[bytes]
    storage: Path
    #: ``time.monotonic()`` just before the launcher was started.
    launched: float
    log: Path | None = None
    unshare_pid: int | None = None
    init_pid: int | None = None
    _status_key: tuple[int, int, int] | None = field(default=None, repr=False)
    _status: StatusDocument | None = field(default=None, repr=False)

    def find_init(self) -> int | None:
        """Host pid of the namespace's PID 1 (launcher -> unshare -> PID 1), once it exists."""
        if self.init_pid is not None and Path(f"/proc/{self.init_pid}").exists():
            return self.init_pid
        self.init_pid = None
        outer = children(self.launcher.pid)
        if outer:
            self.unshare_pid = outer[0]
            inner = children(outer[0])
            self.init_pid = inner[0] if inner else None
        if self.init_pid is None and outer:
            # A launcher that nests differently: find PID 1 by its command line.
            self.init_pid = find_dev_pid1(self.storage)
        return self.init_pid

    def status(self) -> StatusDocument | None:
        """The device's status document (None before the supervisor wrote one).

        Parsed again only when the file's (inode, size, mtime) changed, so
        polling it every 10 ms costs a ``stat`` and not a JSON parse.
        """
        init_pid = self.find_init()
        if init_pid is None:
            return None
        path = status_path(init_pid, self.storage)
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key != self._status_key:
            try:
                self._status = read_status(path)
            except (PvError, OSError):
                return self._status
            self._status_key = key
        return self._status

    def processes(self) -> list[tuple[int, str]]:
        """(pid, role) of the namespace's processes (:func:`classify_namespace`)."""
        init_pid = self.find_init()
        return classify_namespace(init_pid) if init_pid is not None else []

    def memory(self) -> list[ProcessMemory]:
        """PSS/RSS of the namespace's processes (containers excluded), launcher and unshare."""
        found = [memory_of(pid, role) for pid, role in self.processes()]
        found.append(memory_of(self.launcher.pid, "launcher"))
        if self.unshare_pid is not None:
            found.append(memory_of(self.unshare_pid, "unshare"))
        return [m for m in found if m is not None]

    def pids(self, role: str) -> list[int]:
        """Pids of the namespace's processes with ``role`` (e.g. ``supervisor``)."""
        return [pid for pid, found in self.processes() if found == role]


def launch(
    storage: Path,
    *,
    factory: Path | None = None,
    log: Path | None = None,
    pvinit: str | None = None,
    args: Sequence[str] = (),
) -> Device:
    """Start ``pvinit --storage STORAGE [--factory FACTORY] [ARGS]`` in the background.

    ``pvinit`` is the launcher command (default: the one beside this
    interpreter, i.e. the venv's, as ``ctx.tool("pvinit")`` gives).  Its
    output goes to ``log`` (appended) or is dropped.  A status-print
    interval of an hour keeps the launcher's table printer quiet: it would
    otherwise parse the status every second beside the measurement.
    """
    command = [pvinit or str(Path(sys.executable).parent / "pvinit"),
               "--storage", str(storage), "--status-interval", "3600"]
    if factory is not None:
        command += ["--factory", str(factory)]
    command += list(args)
    storage.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    launched = time.monotonic()
    try:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    finally:
        if not isinstance(out, int):
            out.close()
    return Device(proc, storage, launched, log)


@dataclass(frozen=True)
class BootTiming:
    """How long a boot took to reach every status goal, and where the time went.

    ``seconds``: from launching the dev launcher to all goals (includes the
    launcher's own start-up, which a device does not have).
    ``handover_to_goals_s``: from the launcher's hand-over (it starts
    ``unshare``, whose child execs PID 1; :func:`handover_of`) to all goals:
    what a device's boot after the bootloader costs, plus making the
    namespace; None when the launcher did not stamp it.
    ``timeline``: seconds since launch of the first time PID 1 was seen,
    each supervisor phase and each container status.
    """

    seconds: float
    handover_to_goals_s: float | None
    timeline: dict[str, float]


def all_at_goal(document: StatusDocument, ignore: Collection[str] = ()) -> bool:
    """Every container (but ``ignore``) at its status goal."""
    counted = [c for c in document.containers if c.name not in ignore]
    return bool(counted) and all(c.goal_reached for c in counted)


def wait_for_goals(
    device: Device,
    *,
    timeout: float = BOOT_TIMEOUT,
    ignore: Collection[str] = (),
    since: float | None = None,
) -> BootTiming:
    """Wait until every container but ``ignore`` is at its status goal.

    ``since`` (a ``time.monotonic()``) is where the clock starts (default:
    the launch).  Raises RuntimeError when the launcher ends first or after
    ``timeout`` seconds, naming who was late.  ``ignore`` is for a container
    that never settles (a crash-looping app).
    """
    started = device.launched if since is None else since
    deadline = started + timeout
    timeline: dict[str, float] = {}
    document: StatusDocument | None = None

    def mark(event: str, at: float) -> None:
        timeline.setdefault(event, round(at - started, 3))

    with DirectoryWatch() as changes:
        while True:
            now = time.monotonic()
            if device.launcher.poll() is not None:
                raise RuntimeError(f"pvinit ended before all goals (exit "
                                   f"{device.launcher.returncode})"
                                   + (f"; log: {device.log}" if device.log else ""))
            init_pid = device.find_init()
            if init_pid is not None:
                mark("pid1 found", now)
                document = device.status()
                if document is not None:
                    # The status file exists, so its directory is the device's /run (a
                    # tmpfs in its namespace), not the storage dir that tmpfs covers.
                    changes.watch(status_path(init_pid, device.storage).parent)
                    mark(f"status {document.phase.value}", now)
                    for report in document.containers:
                        mark(f"{report.name} {report.status.value}", now)
                    if all_at_goal(document, ignore):
                        break
            if now >= deadline:
                late = ([c.name for c in document.containers if not c.goal_reached]
                        if document else [])
                raise RuntimeError(f"pvinit did not reach every goal in {timeout:.0f}s"
                                   + (f" (late: {', '.join(late)})" if late else ""))
            changes.wait(POLL_INTERVAL)
    seconds = now - started
    handed_over = handover_of(init_pid) if init_pid is not None else None
    from_handover = None if handed_over is None else round(max(0.0, now - handed_over), 3)
    return BootTiming(round(seconds, 3), from_handover, timeline)


def power_off(device: Device, timeout: float = STOP_TIMEOUT) -> float:
    """Orderly power-off: SIGINT to the launcher (it asks PID 1); returns the seconds it took.

    When the device hangs for ``timeout`` seconds, ``unshare`` is killed
    (``--kill-child`` takes PID 1, its namespace and its mounts down) and then
    the launcher; a message on stderr says so.
    """
    started = time.monotonic()
    if device.launcher.poll() is None:
        device.launcher.send_signal(signal.SIGINT)
    try:
        device.launcher.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        sys.stderr.write(f"bench: pvinit on {device.storage} did not power off: killing it\n")
        if device.unshare_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(device.unshare_pid, signal.SIGKILL)
        device.launcher.kill()
        device.launcher.wait()
    return time.monotonic() - started


@contextlib.contextmanager
def running_device(
    storage: Path,
    *,
    factory: Path | None = None,
    log: Path | None = None,
    pvinit: str | None = None,
    args: Sequence[str] = (),
) -> Iterator[Device]:
    """:func:`launch` a device and always :func:`power_off` it when the block ends."""
    device = launch(storage, factory=factory, log=log, pvinit=pvinit, args=args)
    try:
        yield device
    finally:
        power_off(device)


def wipe_storage(storage: Path) -> None:
    """Make ``storage`` blank again (the next boot with ``--factory`` is a fresh install)."""
    remove_tree(storage)


def tool_path(python: Path, name: str) -> str:
    """A venv command beside ``python`` (as :meth:`Context.tool`), or on PATH."""
    beside = python.parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)

#!/usr/bin/env python3
"""Benchmark: device boot time, idle memory and install footprint (issue 3).

Needs root (namespaces, loop mounts, LXC).  In one run of this command:

1. **Boot to all goals** of the default state.  *pvinit (cold)*: a fresh
   storage dir, ``pvinit --storage DIR --factory build/factory.pvb`` launched,
   timed until the status document (read through the namespace's PID 1,
   :func:`pvinit.cli.pvinit.status_path`) shows every container at its
   status goal; this includes installing the factory bundle.  *pvinit
   (warm)*: the same storage booted a second time (already installed).
   *Reference*: a shell script doing what pvinit does with plain LXC tools:
   loop-mount the BSP modules/firmware squashfs and each container's root
   squashfs (the same images, from ``state/``), an overlay over each with its
   upper dir on disk, then ``lxc-start`` with the config pvinit's own
   :func:`pvinit.containers.lxcconf.lxc_config` generates (minus the notify
   socket: no supervisor listens), platform first and ``lxc-wait`` RUNNING,
   then dashboard and sensor, ``lxc-wait`` RUNNING, and until the sensor's
   console log shows its first reading (what READY means under pvinit).
2. **Idle memory** ~10 s after the goals are reached: PSS and RSS from
   ``/proc/<pid>/smaps_rollup`` of pvinit's Python processes inside the
   namespace (PID 1, the supervisor, any other), summed.  LXC monitors (forks
   of the supervisor under liblxc), the launcher outside the namespace and
   ``unshare`` are reported separately; containers are not counted.
3. **Install footprint**: ``du`` of ``pvinit/`` without ``__pycache__``, and
   the Debian packages' ``Installed-Size``.

``pvinit/`` is byte-compiled first (:func:`byte_compile`), as on a device.
Medians over ``--runs``; ratios are what count (the machine is shared).

    .venv/bin/python tools/bench/bench_boot.py [--runs 3] [--idle 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pvinit
from pvinit.cli.pvinit import status_path
from pvinit.containers.lxcconf import host_has_apparmor, lxc_config, render_config
from pvinit.containers.spec import BindMount, ContainerSpec
from pvinit.errors import PvError
from pvinit.pid1.launcher import _children
from pvinit.supervisor.status import StatusDocument, read_status

REPO = Path(pvinit.__file__).resolve().parent.parent
GOAL_RATIO = 1.2
GOAL_PSS_MB = 16.0
BOOT_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
#: Boot order of the default state: the platform group, then the app group.
GROUPS = (("platform",), ("dashboard", "sensor"))
SENSOR_FIRST_READING = "sensor: reading 1 "
DEPENDENCIES = (
    "python3-zstandard",
    "python3-msgpack",
    "python3-cryptography",
    "python3-lxc",
    "python3-pyinotify",
)
RUNTIME = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "liblxc1")


# --- processes and memory ---------------------------------------------------------------


@dataclass(frozen=True)
class ProcessMemory:
    """One process's memory from smaps_rollup, in KiB."""

    pid: int
    role: str
    command: str
    pss_kb: int
    rss_kb: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "role": self.role,
            "command": self.command,
            "pss_kb": self.pss_kb,
            "rss_kb": self.rss_kb,
        }


def _command(pid: int) -> str:
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


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a tool, output captured; the caller judges its exit status."""
    return subprocess.run(argv, check=False, capture_output=True, text=True)


def memory_of(pid: int, role: str) -> ProcessMemory | None:
    """PSS and RSS of ``pid`` (None when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("Rss:", "Pss:"):
            values[words[0]] = int(words[1])
    return ProcessMemory(pid, role, _command(pid), values.get("Pss:", 0), values.get("Rss:", 0))


def classify_namespace(init_pid: int) -> list[tuple[int, str]]:
    """(pid, role) of PID 1 and its descendants, not descending into containers.

    Roles: ``pid1``, ``supervisor`` / ``python`` (pvinit's Python processes),
    ``lxc-monitor`` (liblxc's per-container monitor), ``other``.
    """
    found = [(init_pid, "pid1")]
    todo = list(_children(init_pid))
    while todo:
        pid = todo.pop()
        command = _command(pid)
        if command.startswith("[lxc monitor]"):
            found.append((pid, "lxc-monitor"))
            continue  # its children are the container
        if "python" in Path(_exe(pid)).name:
            found.append((pid, "supervisor" if "pvinit.supervisor" in command else "python"))
        else:
            found.append((pid, "other"))
        todo.extend(_children(pid))
    return found


def _sum_mb(items: Sequence[ProcessMemory], field: str) -> float:
    total: int = sum(getattr(item, field) for item in items)
    return round(total / 1024, 2)


# --- pvinit boots -------------------------------------------------------------------------


@dataclass
class Device:
    """A running ``pvinit --storage`` launcher and what was found of its namespace."""

    launcher: subprocess.Popen[bytes]
    storage: Path
    unshare_pid: int | None = None
    init_pid: int | None = None

    def find_init(self) -> int | None:
        if self.init_pid is None:
            outer = _children(self.launcher.pid)
            if outer:
                self.unshare_pid = outer[0]
                inner = _children(outer[0])
                self.init_pid = inner[0] if inner else None
        return self.init_pid


def launch_device(storage: Path, factory: Path | None, log: Path) -> Device:
    command = [str(Path(sys.prefix) / "bin" / "pvinit"), "--storage", str(storage)]
    if factory is not None:
        command += ["--factory", str(factory)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    return Device(proc, storage)


def all_at_goal(document: StatusDocument) -> bool:
    return bool(document.containers) and all(c.goal_reached for c in document.containers)


def wait_for_goals(device: Device, started: float) -> tuple[float, dict[str, float]]:
    """Seconds from ``started`` until every container is at its status goal.

    Also a timeline (seconds since ``started``) of the first time PID 1 was
    found, the status document appeared, and each container showed each
    status: what says where a slow boot spends its time.
    """
    deadline = started + BOOT_TIMEOUT
    timeline: dict[str, float] = {}

    def mark(event: str) -> None:
        timeline.setdefault(event, round(time.monotonic() - started, 3))

    while time.monotonic() < deadline:
        if device.launcher.poll() is not None:
            raise RuntimeError(f"pvinit ended early (exit {device.launcher.returncode})")
        init_pid = device.find_init()
        if init_pid is not None:
            mark("pid1 found")
            try:
                document = read_status(status_path(init_pid, device.storage))
            except (PvError, OSError):
                document = None
            if document is not None:
                mark(f"status {document.phase.value}")
                for report in document.containers:
                    mark(f"{report.name} {report.status.value}")
                if all_at_goal(document):
                    return time.monotonic() - started, timeline
        time.sleep(0.01)
    raise RuntimeError(f"pvinit did not reach every goal in {BOOT_TIMEOUT:.0f}s")


def power_off(device: Device) -> None:
    """Orderly power-off (SIGINT to the launcher); kill the namespace if it hangs."""
    if device.launcher.poll() is None:
        device.launcher.send_signal(signal.SIGINT)
    try:
        device.launcher.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        sys.stderr.write("bench: pvinit did not power off: killing it\n")
        if device.unshare_pid is not None:  # unshare --kill-child takes the namespace down
            with contextlib.suppress(ProcessLookupError):
                os.kill(device.unshare_pid, signal.SIGKILL)
        device.launcher.kill()
        device.launcher.wait()


@dataclass(frozen=True)
class PvinitRun:
    cold_seconds: float
    cold_timeline: dict[str, float]
    warm_timeline: dict[str, float]
    warm_seconds: float
    processes: tuple[ProcessMemory, ...]
    monitors: tuple[ProcessMemory, ...]
    launcher: ProcessMemory | None
    unshare: ProcessMemory | None


def run_pvinit(work: Path, factory: Path, idle: float) -> PvinitRun:
    storage = work / "storage"
    log = work / "pvinit.log"
    started = time.monotonic()
    device = launch_device(storage, factory, log)
    try:
        cold, cold_timeline = wait_for_goals(device, started)
        time.sleep(idle)
        init_pid = device.find_init()
        assert init_pid is not None
        measured = [memory_of(pid, role) for pid, role in classify_namespace(init_pid)]
        found = [m for m in measured if m is not None]
        launcher = memory_of(device.launcher.pid, "launcher")
        unshare = memory_of(device.unshare_pid, "unshare") if device.unshare_pid else None
    finally:
        power_off(device)
    started = time.monotonic()
    device = launch_device(storage, None, log)
    try:
        warm, warm_timeline = wait_for_goals(device, started)
    finally:
        power_off(device)
    return PvinitRun(
        cold_seconds=cold,
        cold_timeline=cold_timeline,
        warm_timeline=warm_timeline,
        warm_seconds=warm,
        processes=tuple(m for m in found if m.role in ("pid1", "supervisor", "python")),
        monitors=tuple(m for m in found if m.role == "lxc-monitor"),
        launcher=launcher,
        unshare=unshare,
    )


# --- the lxc-start reference ------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def reference_config(name: str, state: Path, ref: Path, apparmor: bool) -> str:
    """The LXC config pvinit would generate for ``name``, without the notify socket."""
    run = _read_json(state / name / "run.json")
    mounts = []
    if "data" in run.get("storage", {}):
        data = ref / "disks" / name / "data"
        data.mkdir(parents=True, exist_ok=True)
        mounts.append(BindMount(source=data, target="/storage/data"))
    for part in ("modules", "firmware"):
        mounts.append(
            BindMount(
                source=ref / "bsp" / part, target=f"/lib/{part}", readonly=True, optional=True
            )
        )
    spec = ContainerSpec(
        name=name,
        rootfs=ref / "mnt" / name / "root",
        init=tuple(run["init"]),
        console_log=ref / "logs" / name / "console.log",
        env=dict(run.get("env", {})),
        lxc_keys=dict(run.get("lxc", {})),
        mounts=tuple(mounts),
    )
    return render_config(lxc_config(spec, apparmor=apparmor))


def reference_script(state: Path, ref: Path) -> str:
    """The shell script that boots the three containers with plain LXC tools."""
    lxcpath = ref / "lxc"
    bsp = _read_json(state / "bsp" / "run.json")
    lines = [
        "#!/bin/sh",
        "set -eu",
        f"R='{ref}'",
        f"P='{lxcpath}'",
        'squash() { mkdir -p "$2"; mount -t squashfs -o loop,ro,nodev,nosuid "$1" "$2"; }',
        "root() {",
        '  mkdir -p "$R/mnt/$1/root" "$R/ov/$1/upper" "$R/ov/$1/work"',
        '  squash "$2" "$R/mnt/$1/lower"',
        '  mount -t overlay overlay -o "lowerdir=$R/mnt/$1/lower,upperdir=$R/ov/$1/upper,'
        'workdir=$R/ov/$1/work" "$R/mnt/$1/root"',
        "}",
        f"squash '{state / 'bsp' / bsp['modules']}' \"$R/bsp/modules\"",
        f"squash '{state / 'bsp' / bsp['firmware']}' \"$R/bsp/firmware\"",
    ]
    for group in GROUPS:
        for name in group:
            image = state / name / _read_json(state / name / "run.json")["root-volume"]
            lines.append(f"root {name} '{image}'")
            lines.append(f'lxc-start -n {name} -P "$P"')
        for name in group:
            lines.append(f'lxc-wait -n {name} -P "$P" -s RUNNING -t 30')
    lines += [
        "i=0",
        f"until grep -q '{SENSOR_FIRST_READING}' \"$R/logs/sensor/console.log\" 2>/dev/null; do",
        "  i=$((i + 1)); [ $i -lt 3000 ] || exit 1; sleep 0.01",
        "done",
    ]
    return "\n".join(lines) + "\n"


def mounts_under(root: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    return points


def clean_reference(ref: Path) -> None:
    lxcpath = ref / "lxc"
    for group in reversed(GROUPS):
        for name in group:
            if not (lxcpath / name).is_dir():
                continue
            stop = ["lxc-stop", "-n", name, "-P", str(lxcpath)]
            if _run([*stop, "-t", "10"]).returncode != 0:
                _run([*stop, "-k"])
    for point in sorted(mounts_under(ref), key=len, reverse=True):
        if _run(["umount", point]).returncode != 0:
            _run(["umount", "-l", point])


@dataclass(frozen=True)
class ReferenceRun:
    seconds: float
    monitors: tuple[ProcessMemory, ...]


def run_reference(work: Path, state: Path) -> ReferenceRun:
    ref = work / "ref"
    apparmor = host_has_apparmor()
    for group in GROUPS:
        for name in group:
            (ref / "lxc" / name).mkdir(parents=True)
            (ref / "logs" / name).mkdir(parents=True)
            (ref / "lxc" / name / "config").write_text(reference_config(name, state, ref, apparmor))
    script = ref / "boot.sh"
    script.write_text(reference_script(state, ref))
    try:
        started = time.monotonic()
        result = _run(["sh", str(script)])
        seconds = time.monotonic() - started
        if result.returncode != 0:
            raise RuntimeError(f"reference boot failed: {result.stderr.strip()}")
        time.sleep(1.0)
        monitors = []
        for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()):
            if _command(pid).startswith(f"[lxc monitor] {ref / 'lxc'} "):
                memory = memory_of(pid, "lxc-start-monitor")
                if memory is not None:
                    monitors.append(memory)
    finally:
        clean_reference(ref)
    return ReferenceRun(seconds, tuple(monitors))


# --- install footprint ------------------------------------------------------------------


def package_kb(package: str) -> int | None:
    """Installed-Size of a Debian package in KiB: dpkg's record, else apt's."""
    result = _run(["dpkg-query", "-W", "-f=${Status}|${Installed-Size}", package])
    status, _, size = result.stdout.partition("|")
    if result.returncode == 0 and status.endswith(" installed") and size.strip().isdigit():
        return int(size)
    shown = _run(["apt-cache", "show", package])
    for line in shown.stdout.splitlines():
        if line.startswith("Installed-Size:"):
            return int(line.split()[1])
    return None


def pvinit_du_kb() -> int:
    result = subprocess.run(
        ["du", "-sk", "--exclude=__pycache__", str(REPO / "pvinit")],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.split()[0])


# --- report -----------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


def build_report(
    pv_runs: Sequence[PvinitRun],
    ref_runs: Sequence[ReferenceRun],
    packages: dict[str, int | None],
    pvinit_kb: int,
) -> dict[str, Any]:
    cold = _median([r.cold_seconds for r in pv_runs])
    warm = _median([r.warm_seconds for r in pv_runs])
    reference = _median([r.seconds for r in ref_runs])
    pss = _median([_sum_mb(r.processes, "pss_kb") for r in pv_runs])
    rss = _median([_sum_mb(r.processes, "rss_kb") for r in pv_runs])
    deps = sum(packages[p] or 0 for p in DEPENDENCIES)
    runtime = sum(packages[p] or 0 for p in RUNTIME)
    last = pv_runs[-1]
    launcher = [m for m in (last.launcher,) if m is not None]
    unshare = [m for m in (last.unshare,) if m is not None]
    return {
        "boot.runs": len(pv_runs),
        "boot.seconds.pvinit": cold,
        "boot.seconds.pvinit_warm": warm,
        "boot.seconds.lxc_start": reference,
        "boot.ratio_vs_lxc_start": round(cold / reference, 2),
        "boot.ratio_warm_vs_lxc_start": round(warm / reference, 2),
        "boot.goal_ratio": GOAL_RATIO,
        "boot.all_seconds.pvinit": [round(r.cold_seconds, 3) for r in pv_runs],
        "boot.all_seconds.pvinit_warm": [round(r.warm_seconds, 3) for r in pv_runs],
        "boot.all_seconds.lxc_start": [round(r.seconds, 3) for r in ref_runs],
        "boot.timeline.pvinit": last.cold_timeline,
        "boot.timeline.pvinit_warm": last.warm_timeline,
        "footprint.pss_mb": pss,
        "footprint.rss_mb": rss,
        "footprint.goal_pss_mb": GOAL_PSS_MB,
        "footprint.processes": [m.to_dict() for m in last.processes],
        "footprint.lxc_monitors.pss_mb": _sum_mb(last.monitors, "pss_kb"),
        "footprint.lxc_monitors.rss_mb": _sum_mb(last.monitors, "rss_kb"),
        "footprint.lxc_start_monitors.pss_mb": _sum_mb(ref_runs[-1].monitors, "pss_kb"),
        "footprint.lxc_start_monitors.rss_mb": _sum_mb(ref_runs[-1].monitors, "rss_kb"),
        "footprint.launcher.pss_mb": _sum_mb(launcher, "pss_kb"),
        "footprint.launcher.rss_mb": _sum_mb(launcher, "rss_kb"),
        "footprint.unshare.pss_mb": _sum_mb(unshare, "pss_kb"),
        "footprint.unshare.rss_mb": _sum_mb(unshare, "rss_kb"),
        "footprint.install_kb.pvinit": pvinit_kb,
        "footprint.install_kb.packages": packages,
        "footprint.install_kb.dependencies": deps,
        "footprint.install_kb.pvinit_and_dependencies": pvinit_kb + deps,
        "footprint.install_kb.python_and_liblxc": runtime,
        "footprint.install_kb.total": pvinit_kb + deps + runtime,
    }


def format_report(report: dict[str, Any]) -> str:
    rows = [
        ("boot to all goals, lxc-start reference (s)", report["boot.seconds.lxc_start"], ""),
        ("boot to all goals, pvinit fresh storage (s)", report["boot.seconds.pvinit"], ""),
        ("boot to all goals, pvinit second boot (s)", report["boot.seconds.pvinit_warm"], ""),
        ("ratio pvinit fresh / lxc-start", report["boot.ratio_vs_lxc_start"], "<= 1.2"),
        ("ratio pvinit second boot / lxc-start", report["boot.ratio_warm_vs_lxc_start"], ""),
        ("idle PSS of pvinit processes (MiB)", report["footprint.pss_mb"], "<= 16"),
        ("idle RSS of pvinit processes (MiB)", report["footprint.rss_mb"], ""),
        ("PSS of pvinit's LXC monitors (MiB)", report["footprint.lxc_monitors.pss_mb"], ""),
        ("PSS of lxc-start's monitors (MiB)", report["footprint.lxc_start_monitors.pss_mb"], ""),
        ("PSS / RSS of the launcher (MiB)", "{} / {}".format(
            report["footprint.launcher.pss_mb"], report["footprint.launcher.rss_mb"]), ""),
        ("pvinit/ without __pycache__ (KiB)", report["footprint.install_kb.pvinit"], ""),
        ("+ Debian Python dependencies (KiB)",
         report["footprint.install_kb.pvinit_and_dependencies"], ""),
        ("+ python3.11 and liblxc1 (KiB)", report["footprint.install_kb.total"], ""),
    ]  # fmt: skip
    width = max(len(row[0]) for row in rows)
    lines = [f"{'figure'.ljust(width)}  {'value':>10}  goal"]
    lines += [f"{name.ljust(width)}  {value!s:>10}  {goal}".rstrip() for name, value, goal in rows]
    lines.append("processes: " + ", ".join(
        f"{m['role']} {m['pss_kb'] / 1024:.1f}/{m['rss_kb'] / 1024:.1f}"
        for m in report["footprint.processes"]) + " (PSS/RSS MiB, last run)")  # fmt: skip
    for key in ("boot.timeline.pvinit", "boot.timeline.pvinit_warm"):
        events = sorted(report[key].items(), key=lambda item: item[1])
        lines.append(f"{key}: " + ", ".join(f"{name} {at:.2f}" for name, at in events))
    return "\n".join(lines)


def byte_compile() -> None:
    """Byte-compile ``pvinit/`` first, as a device image is (``images/vm/build``).

    Without ``.pyc`` files (``PYTHONDONTWRITEBYTECODE=1``, a read-only
    tree) every interpreter compiles each module it imports from source,
    every boot: ~10 ms more for PID 1, ~30 ms more for the supervisor.
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "pvinit")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pvbench-boot-"))
    try:
        yield path
    finally:
        leftovers = mounts_under(path)
        for point in sorted(leftovers, key=len, reverse=True):
            _run(["umount", "-l", point])
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before memory")
    parser.add_argument("--state", type=Path, default=REPO / "state")
    parser.add_argument("--factory", type=Path, default=REPO / "build" / "factory.pvb")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work dirs (logs)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.stderr.write("bench_boot: needs root (namespaces, loop mounts, LXC)\n")
        return 1
    if not args.factory.exists():
        sys.stderr.write(
            f"bench_boot: {args.factory} missing: .venv/bin/pvstate -C state export HEAD -o "
            f"{args.factory}\n"
        )
        return 1
    state = args.state.absolute()
    factory = args.factory.absolute()
    byte_compile()
    pv_runs: list[PvinitRun] = []
    ref_runs: list[ReferenceRun] = []
    for number in range(1, args.runs + 1):
        with workdir(args.keep) as work:
            ref_runs.append(run_reference(work, state))
            pv_runs.append(run_pvinit(work, factory, args.idle))
        sys.stderr.write(
            f"run {number}: lxc-start {ref_runs[-1].seconds:.3f}s, pvinit fresh "
            f"{pv_runs[-1].cold_seconds:.3f}s, second boot {pv_runs[-1].warm_seconds:.3f}s\n"
        )
    packages = {name: package_kb(name) for name in (*DEPENDENCIES, *RUNTIME)}
    report = build_report(pv_runs, ref_runs, packages, pvinit_du_kb())
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

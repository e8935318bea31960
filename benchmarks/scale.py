"""Section ``scale``: a device with 53 containers for 10 minutes, one of them crash-looping.

What a fleet device does all day is sit there: the question is whether
pvinit's own processes stay flat while many containers run and one keeps
failing.  In one run:

1. *Reference boot*: the default state (3 containers, no extra app) booted
   on fresh storage; once every status goal is reached and
   :data:`SETTLE_S` seconds passed, the supervisor's and PID 1's PSS/RSS are
   read, then the device is powered off.  This is what the supervisor costs
   with few containers, for the per-container figures.
2. *Scale boot*: the default state + 50 extra app containers on the
   dashboard's image (:mod:`benchmarks.fleet`), 53 in all: 49 that run
   normally and ``crashloop``, whose init exits with status 3 a second
   after it starts, with an ``auto_recovery`` that restarts it every ~2 s
   forever (``retry_delay`` 1 s, ``backoff_factor`` 1, a million retries:
   running out would reboot the device).  Timed from launch until every
   container but the crash-looper is at its status goal (``scale.boot_s``).
3. *Sampling*: :data:`SETTLE_S` seconds later, every 5 s for 600 s (quick
   mode: 10 extra apps, the crash-looper one of them, every 3 s for 45 s),
   from the host through
   ``/proc``: PSS and RSS (``smaps_rollup``) of the supervisor, of PID 1 and
   of the ``[lxc monitor]`` processes (summed); CPU time (utime + stime) of
   the supervisor and of PID 1, as percent of one core over each interval
   and over the whole window; the crash-looper's ``restarts`` from the
   status document; PID 1's host pid and boot id (``PVINIT_BOOT_ID`` in its
   environment), so a reboot during the run is seen and counted.

The references are in the same run: growth is each process's own end /
start ("start" and "end": medians of the first and last 10 % of the
samples, see :func:`edges`); the supervisor's per-container memory
((scale boot - reference boot) / 50 extra containers) is set beside what
one LXC monitor costs, the part LXC itself charges per container.  The
monitors are forks of the supervisor (liblxc forks them from the process
that starts a container), so they share its pages copy-on-write: PSS
splits those pages between them and the supervisor, whose PSS *falls* as
monitors are added; RSS does not, so the per-container figure is given for
both, and for the three together (``scale.all.pss_per_container_kb``).

Losses: the supervisor's or PID 1's RSS growing more than 5 % over the
run (a leak worth stating; a PSS that grows while the RSS does not is
explained in the text instead, see :func:`pss_only_growth`), the
supervisor using more than 5 % of one core on average, the crash-looper
not being restarted (or no longer being restarted in the last quarter of
the window), a reboot during the run.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.context import Context, Figure, Section, fmt_s, is_root, median, ratio
from benchmarks.device import (
    ROLE_MONITOR,
    ROLE_PID1,
    ROLE_SUPERVISOR,
    Device,
    ProcessMemory,
    byte_compile,
    classify_namespace,
    cpu_seconds,
    memory_of,
    remove_tree,
    running_device,
    wait_for_goals,
)
from benchmarks.fleet import Fleet, build_fleet

#: Extra app containers, the crash-looper one of them (the default state has 3).
FULL_EXTRA, QUICK_EXTRA = 50, 10
#: Seconds of sampling, and between samples.
FULL_DURATION_S, QUICK_DURATION_S = 600.0, 45.0
FULL_INTERVAL_S, QUICK_INTERVAL_S = 5.0, 3.0
#: Seconds between reaching the goals and the first sample (both boots alike).
SETTLE_S = 2.0
#: The crash-looper's restart timing: every ~2 s (1 s up, 1 s delay), never backing off.
CRASHLOOP_RETRY_DELAY_S = 1.0
CRASHLOOP_BACKOFF = 1.0
#: Goals (issue 7): growth over the run, supervisor CPU at steady state.
GOAL_GROWTH_RATIO = 1.05
GOAL_CPU_PERCENT = 5.0
BOOT_TIMEOUT_S = 240.0
#: "Start" and "end" of the window: the medians of its first and last 10 % (>= 3 samples).
EDGE = 0.1
EDGE_MIN_SAMPLES = 3

KEYS: dict[str, str] = {
    "scale.duration_s": "seconds between the first and the last sample",
    "scale.interval_s": "seconds between samples",
    "scale.samples": "number of samples taken",
    "scale.containers": "containers in the scale state (default 3 + extra apps, the "
                        "crash-looper one of them)",
    "scale.boot_s": "scale state on fresh storage, from launching `pvinit --storage` until "
                    "every container but the crash-looper is at its status goal (s)",
    "scale.supervisor.cpu_percent": "supervisor CPU (utime+stime) over the whole sampling window, "
                                    "percent of one core (goal <= 5)",
    "scale.supervisor.cpu_percent.max": "supervisor CPU, busiest sampling interval "
                                        "(percent of one core)",
    "scale.supervisor.children_cpu_percent": "CPU of the supervisor's children it reaped during "
                                             "the window (cutime+cstime), percent of one core",
    "scale.pid1.cpu_percent": "PID 1 CPU over the whole sampling window (percent of one core)",
    "scale.supervisor.pss_per_container_kb": "(supervisor PSS at the first sample - in the "
                                             "3-container reference boot) / extra containers "
                                             "(KiB; lowered, even below 0, by pages shared with "
                                             "the monitors)",
    "scale.supervisor.rss_per_container_kb": "(supervisor RSS at the first sample - in the "
                                             "3-container reference boot) / extra containers "
                                             "(KiB)",
    "scale.all.pss_per_container_kb": "(PSS of supervisor + PID 1 + all monitors at the first "
                                      "sample - the same in the reference boot) / extra "
                                      "containers (KiB): what one more container costs pvinit "
                                      "and LXC together",
    "scale.reference.containers": "containers in the reference boot (the default state)",
    "scale.reference.supervisor.pss_mb": "supervisor PSS in the reference boot (MiB)",
    "scale.reference.supervisor.rss_mb": "supervisor RSS in the reference boot (MiB)",
    "scale.reference.pid1.pss_mb": "PID 1 PSS in the reference boot (MiB)",
    "scale.reference.monitors.pss_mb": "PSS of all [lxc monitor] processes in the reference boot "
                                       "(MiB)",
    "scale.monitors.count": "[lxc monitor] processes at the first sample",
    "scale.monitors.pss_mb": "PSS of all [lxc monitor] processes, median of the samples (MiB)",
    "scale.monitors.rss_mb": "RSS of all [lxc monitor] processes, median of the samples (MiB)",
    "scale.monitors.pss_per_container_kb": "PSS of one [lxc monitor], median over samples of "
                                           "sum / count (KiB): what LXC costs per container",
    "scale.monitors.rss_per_container_kb": "RSS of one [lxc monitor], median over samples of "
                                           "sum / count (KiB)",
    "scale.supervisor.pss_per_container_ratio_vs_monitor": "scale.supervisor.pss_per_container_kb"
                                                           " / scale.monitors.pss_per_container_kb",
    "scale.supervisor.rss_per_container_ratio_vs_monitor": "scale.supervisor.rss_per_container_kb"
                                                           " / scale.monitors.rss_per_container_kb",
    "scale.crashloop.restarts": "the crash-looper's restart count (status document) at the "
                                "last sample, since boot",
    "scale.crashloop.restarts_per_min": "the crash-looper's restarts per minute during sampling",
    "scale.at_goal.min": "fewest containers (of all but the crash-looper) at their status goal "
                         "in any sample",
    "scale.reboots": "reboots seen during the scale boot (PID 1 host pid / boot id changes, "
                     "launcher boots beyond the first); goal 0",
    "scale.seconds": "wall time of the whole section (s)",
}
_WHO = {"supervisor": "the supervisor", "pid1": "PID 1",
        "monitors": "all [lxc monitor] processes (sum)"}
for _who, _label in _WHO.items():
    for _what in ("pss", "rss"):
        _W = _what.upper()
        KEYS.update({
            f"scale.{_who}.{_what}_mb.start": f"{_W} of {_label} at the start: median of the "
                                              "first 10 % of the samples (MiB)",
            f"scale.{_who}.{_what}_mb.end": f"{_W} of {_label} at the end: median of the last "
                                            "10 % of the samples (MiB)",
            f"scale.{_who}.{_what}_mb.max": f"{_W} of {_label}, highest sample (MiB)",
            f"scale.{_who}.{_what}_growth_ratio": f"{_W} of {_label}, end / start" + (
                " (goal <= 1.05: the leak test)" if _what == "rss" else
                " (also moves when other processes stop sharing its pages)"),
            f"scale.{_who}.{_what}_trend_kb_per_h": f"{_W} of {_label}: least-squares slope "
                                                    "over the second half of the samples, "
                                                    "after warm-up (KiB per hour)",
        })


# --- sampling -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """What one look at the device found (memory in KiB, CPU in seconds since each started)."""

    at: float  # seconds since the sampling started
    init_pid: int | None
    boot_id: str
    supervisor_pid: int | None
    supervisor: ProcessMemory | None
    pid1: ProcessMemory | None
    monitors: tuple[ProcessMemory, ...]
    supervisor_cpu: float | None
    supervisor_children_cpu: float | None
    pid1_cpu: float | None
    restarts: int | None  # the crash-looper's
    at_goal: int | None  # containers but the crash-looper at their goal


def boot_id_of(pid: int) -> str:
    """``PVINIT_BOOT_ID`` from PID 1's environment: the launcher gives each boot a new one."""
    try:
        words = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    for word in words:
        if word.startswith(b"PVINIT_BOOT_ID="):
            return word.split(b"=", 1)[1].decode(errors="replace")
    return ""


def take_sample(device: Device, at: float, crashloop: str | None) -> Sample:
    """One look at the device: its processes' memory and CPU, the status document."""
    init_pid = device.find_init()
    processes = classify_namespace(init_pid) if init_pid is not None else []
    supervisors = [pid for pid, role in processes if role == ROLE_SUPERVISOR]
    supervisor_pid = supervisors[0] if supervisors else None
    monitors = [memory_of(pid, ROLE_MONITOR) for pid, role in processes if role == ROLE_MONITOR]
    document = device.status()
    restarts = at_goal = None
    if document is not None:
        looper = document.container(crashloop) if crashloop else None
        restarts = looper.restarts if looper is not None else None
        at_goal = sum(1 for c in document.containers if c.name != crashloop and c.goal_reached)
    return Sample(
        at=at,
        init_pid=init_pid,
        boot_id=boot_id_of(init_pid) if init_pid is not None else "",
        supervisor_pid=supervisor_pid,
        supervisor=memory_of(supervisor_pid, ROLE_SUPERVISOR) if supervisor_pid else None,
        pid1=memory_of(init_pid, ROLE_PID1) if init_pid is not None else None,
        monitors=tuple(m for m in monitors if m is not None),
        supervisor_cpu=cpu_seconds(supervisor_pid) if supervisor_pid else None,
        supervisor_children_cpu=(cpu_seconds(supervisor_pid, reaped_children=True)
                                 if supervisor_pid else None),
        pid1_cpu=cpu_seconds(init_pid) if init_pid is not None else None,
        restarts=restarts,
        at_goal=at_goal,
    )


def sample_device(device: Device, duration: float, interval: float, crashloop: str | None,
                  ctx: Context | None = None) -> list[Sample]:
    """Samples every ``interval`` s for ``duration`` s, on a fixed grid (no drift)."""
    started = time.monotonic()
    samples: list[Sample] = []
    count = int(duration // interval) + 1
    for number in range(count):
        due = started + number * interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if device.launcher.poll() is not None:
            raise RuntimeError(f"pvinit ended during sampling (exit {device.launcher.returncode})")
        sample = take_sample(device, time.monotonic() - started, crashloop)
        samples.append(sample)
        if ctx is not None and (number % 12 == 0 or number == count - 1):
            pss = sample.supervisor.pss_kb / 1024 if sample.supervisor else float("nan")
            ctx.log(f"scale: {sample.at:5.0f} s, supervisor PSS {pss:.2f} MiB, "
                    f"{len(sample.monitors)} monitors, crashloop restarts {sample.restarts}")
    return samples


# --- figures from samples ------------------------------------------------------------------


def slope_per_h(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (s, value) points, in value units per hour.

    The trend over many samples, less swayed than end / start by one noisy
    edge.  Taken over the second half of the window, once Python's
    allocator and caches warmed up: a leak keeps a positive slope there.
    """
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 3600


def _mb(kb: float | None) -> float | None:
    return None if kb is None else round(kb / 1024, 2)


def edges(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """(start, end): medians of the values in the first and the last :data:`EDGE` of the window.

    At least :data:`EDGE_MIN_SAMPLES` samples each: one sample alone swings
    by a few percent as the crash-looper's monitor comes and goes (it shares
    pages with the supervisor), which would be mistaken for growth.
    """
    if not points:
        return None
    span = points[-1][0] - points[0][0]
    head = [v for t, v in points if t - points[0][0] <= span * EDGE]
    tail = [v for t, v in points if points[-1][0] - t <= span * EDGE]
    head = head if len(head) >= EDGE_MIN_SAMPLES else [v for _, v in points[:EDGE_MIN_SAMPLES]]
    tail = tail if len(tail) >= EDGE_MIN_SAMPLES else [v for _, v in points[-EDGE_MIN_SAMPLES:]]
    return median(head), median(tail)


@dataclass
class Track:
    """One process's memory and CPU over the samples, only where it was the same process."""

    pss_kb: list[tuple[float, int]] = field(default_factory=list)
    rss_kb: list[tuple[float, int]] = field(default_factory=list)
    cpu_s: list[tuple[float, float]] = field(default_factory=list)

    def cpu_percent(self) -> float | None:
        """Mean CPU over the window, percent of one core."""
        if len(self.cpu_s) < 2 or self.cpu_s[-1][0] <= self.cpu_s[0][0]:
            return None
        (t0, c0), (t1, c1) = self.cpu_s[0], self.cpu_s[-1]
        return round((c1 - c0) / (t1 - t0) * 100, 2)

    def cpu_series(self) -> list[tuple[float, float]]:
        """(s, percent of one core over the interval ending there)."""
        return [(round(t1, 1), round((c1 - c0) / (t1 - t0) * 100, 2))
                for (t0, c0), (t1, c1) in itertools.pairwise(self.cpu_s) if t1 > t0]


def track(samples: Sequence[Sample], which: str) -> Track:
    """The ``supervisor``, ``children`` or ``pid1`` track, from the first sample's process on.

    Samples where the process was another one (after a reboot) or gone are
    left out: a track never mixes two processes' counters.
    """
    result = Track()
    first = samples[0].supervisor_pid if which != "pid1" else samples[0].init_pid
    for s in samples:
        pid = s.supervisor_pid if which != "pid1" else s.init_pid
        if pid is None or pid != first:
            continue
        memory = s.pid1 if which == "pid1" else s.supervisor
        cpu = {"pid1": s.pid1_cpu, "supervisor": s.supervisor_cpu,
               "children": s.supervisor_children_cpu}[which]
        if memory is not None:
            result.pss_kb.append((s.at, memory.pss_kb))
            result.rss_kb.append((s.at, memory.rss_kb))
        if cpu is not None:
            result.cpu_s.append((s.at, cpu))
    return result


def count_reboots(samples: Sequence[Sample], launcher_log: Path | None) -> int:
    """Reboots seen: changes of (PID 1 pid, boot id) between samples, or launcher boots > 1."""
    seen = [(s.init_pid, s.boot_id) for s in samples if s.init_pid is not None]
    changes = sum(1 for a, b in itertools.pairwise(seen) if a != b)
    boots = 0
    if launcher_log is not None and launcher_log.is_file():
        boots = len(re.findall(r"^pvinit-launcher: boot \d+: ", launcher_log.read_text(
            errors="replace"), flags=re.MULTILINE))
    return max(changes, boots - 1, 0)


@dataclass(frozen=True)
class Reference:
    """The supervisor and PID 1 of the 3-container default state (KiB)."""

    containers: int
    supervisor: ProcessMemory | None
    pid1: ProcessMemory | None
    monitors_pss_kb: int


def figures_of(samples: Sequence[Sample], reference: Reference | None, fleet: Fleet, *,
               boot_s: float, reboots: int, interval: float) -> dict[str, Figure]:
    """Every ``scale.*`` figure from the samples (None where a figure was not observable)."""
    sup, pid1, children = (track(samples, w) for w in ("supervisor", "pid1", "children"))
    first, last = samples[0], samples[-1]
    f: dict[str, Figure] = {
        "scale.duration_s": round(last.at - first.at, 1),
        "scale.interval_s": interval,
        "scale.samples": len(samples),
        "scale.containers": len(fleet.containers),
        "scale.boot_s": round(boot_s, 2),
        "scale.reboots": reboots,
    }
    monitors_pss = [(s.at, float(sum(m.pss_kb for m in s.monitors))) for s in samples]
    monitors_rss = [(s.at, float(sum(m.rss_kb for m in s.monitors))) for s in samples]
    tracks = (("supervisor", sup.pss_kb, sup.rss_kb), ("pid1", pid1.pss_kb, pid1.rss_kb),
              ("monitors", monitors_pss, monitors_rss))
    firsts: dict[str, float | None] = {}  # at the first sample: as long after goals as the ref
    for name, pss, rss in tracks:
        for what, points in (("pss", pss), ("rss", rss)):
            ends = edges([(t, float(v)) for t, v in points])
            firsts[f"{name}.{what}"] = float(points[0][1]) if points else None
            f[f"scale.{name}.{what}_mb.start"] = _mb(ends[0]) if ends else None
            f[f"scale.{name}.{what}_mb.end"] = _mb(ends[1]) if ends else None
            f[f"scale.{name}.{what}_mb.max"] = _mb(max(v for _, v in points)) if points else None
            f[f"scale.{name}.{what}_growth_ratio"] = ratio(ends[1], ends[0], 3) if ends else None
            half = points[0][0] + (points[-1][0] - points[0][0]) / 2 if points else 0.0
            slope = slope_per_h([(t, float(v)) for t, v in points if t >= half])
            f[f"scale.{name}.{what}_trend_kb_per_h"] = None if slope is None else round(slope)
    f["scale.supervisor.cpu_percent"] = sup.cpu_percent()
    f["scale.pid1.cpu_percent"] = pid1.cpu_percent()
    cpu_series = sup.cpu_series()
    f["scale.supervisor.cpu_percent.max"] = max(y for _, y in cpu_series) if cpu_series else None
    reaped = children.cpu_percent()
    own = sup.cpu_percent()
    f["scale.supervisor.children_cpu_percent"] = (round(reaped - own, 2)
                                                  if reaped is not None and own is not None
                                                  else None)
    monitored = [s for s in samples if s.monitors]
    f["scale.monitors.count"] = len(first.monitors)
    if monitored:
        f["scale.monitors.pss_mb"] = round(median(
            [sum(m.pss_kb for m in s.monitors) / 1024 for s in monitored]), 2)
        f["scale.monitors.rss_mb"] = round(median(
            [sum(m.rss_kb for m in s.monitors) / 1024 for s in monitored]), 2)
        f["scale.monitors.pss_per_container_kb"] = round(median(
            [sum(m.pss_kb for m in s.monitors) / len(s.monitors) for s in monitored]), 1)
        f["scale.monitors.rss_per_container_kb"] = round(median(
            [sum(m.rss_kb for m in s.monitors) / len(s.monitors) for s in monitored]), 1)
    else:
        for key in ("pss_mb", "rss_mb", "pss_per_container_kb", "rss_per_container_kb"):
            f[f"scale.monitors.{key}"] = None
    extra = len(fleet.containers) - (reference.containers if reference else 0)
    for what in ("pss", "rss"):
        per: float | None = None
        start = firsts[f"supervisor.{what}"]
        if reference is not None and reference.supervisor is not None and extra > 0 \
                and start is not None:
            ref_kb = reference.supervisor.pss_kb if what == "pss" else reference.supervisor.rss_kb
            per = round((start - ref_kb) / extra, 1)
        f[f"scale.supervisor.{what}_per_container_kb"] = per
        f[f"scale.supervisor.{what}_per_container_ratio_vs_monitor"] = ratio(
            per, _as_float(f[f"scale.monitors.{what}_per_container_kb"]), 3)
    parts = [firsts["supervisor.pss"], firsts["pid1.pss"], firsts["monitors.pss"]]
    total: float | None = None
    if reference is not None and reference.supervisor is not None and reference.pid1 is not None \
            and extra > 0 and all(p is not None for p in parts):
        before = reference.supervisor.pss_kb + reference.pid1.pss_kb + reference.monitors_pss_kb
        total = round((sum(p for p in parts if p is not None) - before) / extra, 1)
    f["scale.all.pss_per_container_kb"] = total
    if reference is not None:
        f["scale.reference.containers"] = reference.containers
        f["scale.reference.supervisor.pss_mb"] = _mb(
            reference.supervisor.pss_kb if reference.supervisor else None)
        f["scale.reference.supervisor.rss_mb"] = _mb(
            reference.supervisor.rss_kb if reference.supervisor else None)
        f["scale.reference.pid1.pss_mb"] = _mb(reference.pid1.pss_kb if reference.pid1 else None)
        f["scale.reference.monitors.pss_mb"] = _mb(reference.monitors_pss_kb)
    else:
        for key in ("containers", "supervisor.pss_mb", "supervisor.rss_mb", "pid1.pss_mb",
                    "monitors.pss_mb"):
            f[f"scale.reference.{key}"] = None
    restarts = crashloop_restarts(samples)
    f["scale.crashloop.restarts"] = restarts[-1][1] if restarts else None
    window = restarts[-1][0] - restarts[0][0] if len(restarts) > 1 else 0.0
    f["scale.crashloop.restarts_per_min"] = (
        round((restarts[-1][1] - restarts[0][1]) / window * 60, 1) if window > 0 else None)
    at_goal = [s.at_goal for s in samples if s.at_goal is not None]
    f["scale.at_goal.min"] = min(at_goal) if at_goal else None
    return f


def crashloop_restarts(samples: Sequence[Sample]) -> list[tuple[float, int]]:
    """(s, the crash-looper's restart count) while the first boot lasted (a reboot resets it)."""
    first = samples[0].init_pid
    return [(s.at, s.restarts) for s in samples if s.restarts is not None and s.init_pid == first]


def _as_float(value: Figure) -> float | None:
    return None if value is None else float(value)


def series_of(samples: Sequence[Sample]) -> dict[str, list[tuple[float, float]]]:
    """The plots' series: x = seconds since sampling start."""
    sup, pid1 = track(samples, "supervisor"), track(samples, "pid1")
    return {
        "scale.supervisor_pss_mb": [(round(t, 1), round(v / 1024, 3)) for t, v in sup.pss_kb],
        "scale.supervisor_rss_mb": [(round(t, 1), round(v / 1024, 3)) for t, v in sup.rss_kb],
        "scale.supervisor_cpu_percent": sup.cpu_series(),
        "scale.pid1_pss_mb": [(round(t, 1), round(v / 1024, 3)) for t, v in pid1.pss_kb],
        "scale.monitors_pss_mb": [(round(s.at, 1), round(sum(m.pss_kb for m in s.monitors)
                                                        / 1024, 3)) for s in samples],
        "scale.crashloop_restarts": [(round(t, 1), float(r))
                                     for t, r in crashloop_restarts(samples)],
    }


def losses_of(f: dict[str, Figure], samples: Sequence[Sample]) -> list[str]:
    """One sentence per missed goal, from the measured figures."""
    losses: list[str] = []
    minutes = f"{_num(f['scale.duration_s']):.0f} s"
    setting = f"{f['scale.containers']} containers, one crash-looping"
    for who, label in (("supervisor", "the supervisor's"), ("pid1", "PID 1's")):
        growth = _opt(f[f"scale.{who}.rss_growth_ratio"])
        if growth is not None and growth > GOAL_GROWTH_RATIO:
            start, end = f[f"scale.{who}.rss_mb.start"], f[f"scale.{who}.rss_mb.end"]
            losses.append(
                f"Scale: {label} RSS grew from {_num(start):.2f} to {_num(end):.2f} MiB "
                f"(+{(growth - 1) * 100:.1f} %) in {minutes} with {setting} (goal: at most +5 %;"
                " a leak).")
    cpu = f["scale.supervisor.cpu_percent"]
    if cpu is not None and cpu > GOAL_CPU_PERCENT:
        losses.append(f"Scale: the supervisor used {cpu:.1f} % of one core on average over "
                      f"{minutes} with {setting} (goal: at most {GOAL_CPU_PERCENT:.0f} %).")
    restarts = crashloop_restarts(samples)
    if len(restarts) < 2 or restarts[-1][1] <= restarts[0][1]:
        losses.append(f"Scale: the crash-looping container was not restarted during the {minutes}"
                      " of sampling.")
    else:
        last_quarter = [r for t, r in restarts if t >= restarts[-1][0] * 0.75]
        if last_quarter[-1] <= last_quarter[0]:
            losses.append("Scale: the crash-looping container stopped being restarted in the "
                          f"last quarter of the {minutes} (restarts stuck at {last_quarter[-1]}).")
    reboots = f["scale.reboots"]
    if reboots:
        losses.append(f"Scale: the device rebooted {reboots} time(s) during the run with "
                      f"{setting} (goal: never).")
    return losses


def pss_only_growth(f: dict[str, Figure]) -> list[str]:
    """Sentences for a PSS that grew past the goal while the same process's RSS did not.

    RSS counts the pages a process maps; PSS divides each by the number of
    processes mapping it, on the whole machine.  When other processes that
    mapped the same interpreter and libraries exit (another benchmark, a
    shell), PSS rises with no new page: not a leak, so not a loss.  Said,
    with the figures, so the reader of the table does not take it for one.
    """
    sentences = []
    for who, label in (("supervisor", "The supervisor's"), ("pid1", "PID 1's")):
        pss = _opt(f[f"scale.{who}.pss_growth_ratio"])
        rss = _opt(f[f"scale.{who}.rss_growth_ratio"])
        if pss is None or rss is None or pss <= GOAL_GROWTH_RATIO or rss > GOAL_GROWTH_RATIO:
            continue
        sentences.append(
            f"{label} PSS grew {(pss - 1) * 100:+.1f} % while its RSS changed "
            f"{(rss - 1) * 100:+.1f} %: the pages it maps barely changed, fewer processes on "
            "the machine share them (PSS divides a shared page among its users); not a leak.")
    return sentences


def _num(value: Figure) -> float:
    return float(value) if value is not None else float("nan")


def _v(value: Figure, fmt: str = "{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def markdown_of(f: dict[str, Figure], quick: bool, extra: int) -> str:
    """The section's part of docs/benchmarks.md."""
    duration, interval = _v(f["scale.duration_s"], "{:.0f}"), _v(f["scale.interval_s"], "{:g}")
    ref_n = _v(f["scale.reference.containers"], "{}")
    rows = [
        f"| {what.upper()} {label} (MiB) | "
        + " | ".join(_v(f[f"scale.{who}.{what}_mb.{edge}"])
                     for who in ("supervisor", "pid1", "monitors")) + " |"
        for what in ("pss", "rss")
        for edge, label in (("start", "at the start"), ("end", "at the end"),
                            ("max", "highest sample"))
    ]
    lines = [
        f"### Scale: {f['scale.containers']} containers for {duration} s, one crash-looping",
        "",
        f"The default state (3 containers) plus {extra} extra app containers on the "
        f"dashboard's image: {extra - 1} that run normally and `crashloop`, whose init exits "
        "with status 3 one second after it starts "
        "and whose `auto_recovery` restarts it every ~2 s for ever (`retry_delay` 1 s, "
        "`backoff_factor` 1, a million retries), booted on fresh storage with "
        "`pvinit --storage DIR --factory BUNDLE`. Once every other container is at its status "
        f"goal and {SETTLE_S:g} s passed, the host samples the device every {interval} s for "
        f"{duration} s through `/proc`: PSS/RSS (`smaps_rollup`) of the supervisor, of PID 1 "
        "and of the `[lxc monitor]` processes, utime + stime of the supervisor and PID 1, the "
        "crash-looper's `restarts` in the status document, and PID 1's pid and boot id (a "
        "reboot would change them). \"Start\" and \"end\" are the medians of the first and "
        "the last 10 % of the samples (at least 3): a single sample swings by a few percent as "
        "the crash-looper's monitor comes and goes; the trend is the least-squares slope over "
        "the second half of the samples (after warm-up). References from the same run: the start "
        f"(growth = end / start), a boot of the {ref_n}-container default state (the "
        "supervisor's cost per extra container), and the LXC monitors (what LXC itself "
        "costs per container). "
        "The monitors are forks of the supervisor and share its pages, so PSS moves memory "
        "from the supervisor to them as containers are added; RSS does not."
        + (" Quick mode: fewer containers, a short window." if quick else ""),
        "",
        "| figure | pvinit supervisor | PID 1 | LXC monitors (sum) |",
        "|---|---:|---:|---:|",
    ]
    lines += rows
    lines += [
        *(f"| growth, end / start {what.upper()}"
          + (f" (goal <= {GOAL_GROWTH_RATIO}: the leak test)" if what == "rss" else "") + " | "
          + " | ".join(_v(f[f"scale.{who}.{what}_growth_ratio"], "{:.3f}")
                       for who in ("supervisor", "pid1", "monitors")) + " |"
          for what in ("pss", "rss")),
        *(f"| trend of {what.upper()}, second half (KiB per hour) | "
          + " | ".join(_v(f[f"scale.{who}.{what}_trend_kb_per_h"], "{:,.0f}")
                       for who in ("supervisor", "pid1", "monitors")) + " |"
          for what in ("pss", "rss")),
        f"| CPU, mean over the window (% of one core, goal <= {GOAL_CPU_PERCENT:g}) | "
        f"{_v(f['scale.supervisor.cpu_percent'])} | {_v(f['scale.pid1.cpu_percent'])} | |",
        f"| CPU, busiest {interval} s interval (% of one core) | "
        f"{_v(f['scale.supervisor.cpu_percent.max'])} | | |",
        f"| CPU of reaped children (% of one core) | "
        f"{_v(f['scale.supervisor.children_cpu_percent'])} | | |",
        f"| PSS per container (KiB; supervisor: first sample vs the {ref_n}-container boot) | "
        f"{_v(f['scale.supervisor.pss_per_container_kb'], '{:.1f}')} | | "
        f"{_v(f['scale.monitors.pss_per_container_kb'], '{:.1f}')} |",
        f"| RSS per container (KiB) | {_v(f['scale.supervisor.rss_per_container_kb'], '{:.1f}')}"
        f" | | {_v(f['scale.monitors.rss_per_container_kb'], '{:.1f}')} |",
        f"| ratio per container supervisor / monitor (PSS; RSS) | "
        f"{_v(f['scale.supervisor.pss_per_container_ratio_vs_monitor'], '{:.3f}')}; "
        f"{_v(f['scale.supervisor.rss_per_container_ratio_vs_monitor'], '{:.3f}')} | | |",
        f"| PSS per extra container, supervisor + PID 1 + monitors together (KiB) | "
        f"{_v(f['scale.all.pss_per_container_kb'], '{:.1f}')} | | |",
        "",
        "| run | value |",
        "|---|---:|",
        f"| containers (monitors at the first sample) | {f['scale.containers']} "
        f"({_v(f['scale.monitors.count'], '{}')}) |",
        "| boot to all goals but the crash-looper, fresh storage | "
        f"{fmt_s(_opt(f['scale.boot_s']))} |",
        f"| reference boot ({ref_n} containers): supervisor PSS / RSS, PID 1 PSS, monitors PSS "
        f"(MiB) | {_v(f['scale.reference.supervisor.pss_mb'])} / "
        f"{_v(f['scale.reference.supervisor.rss_mb'])}, {_v(f['scale.reference.pid1.pss_mb'])}, "
        f"{_v(f['scale.reference.monitors.pss_mb'])} |",
        f"| crash-looper restarts (since boot; per minute while sampled) | "
        f"{_v(f['scale.crashloop.restarts'], '{}')}; "
        f"{_v(f['scale.crashloop.restarts_per_min'], '{:.1f}')} |",
        f"| fewest other containers at their goal in a sample | "
        f"{_v(f['scale.at_goal.min'], '{}')} of {_num(f['scale.containers']) - 1:.0f} |",
        f"| reboots during the run (goal 0) | {_v(f['scale.reboots'], '{}')} |",
        f"| samples | {f['scale.samples']} |",
        "",
    ]
    explained = pss_only_growth(f)
    if explained:
        lines += [" ".join(explained), ""]
    return "\n".join(lines)


def _opt(value: Figure) -> float | None:
    return None if value is None else float(value)


# --- the section ---------------------------------------------------------------------------


def reference_boot(ctx: Context, storage: Path, log: Path) -> Reference:
    """The default state's supervisor and PID 1, :data:`SETTLE_S` s after all goals."""
    fleet = build_fleet(ctx.work, 0, pvstate=ctx.tool("pvstate"))
    with running_device(storage, factory=fleet.factory, log=log,
                        pvinit=ctx.tool("pvinit")) as device:
        wait_for_goals(device, timeout=BOOT_TIMEOUT_S)
        time.sleep(SETTLE_S)
        sample = take_sample(device, 0.0, None)
    return Reference(len(fleet.containers), sample.supervisor, sample.pid1,
                     sum(m.pss_kb for m in sample.monitors))


def run(ctx: Context) -> Section:
    section = Section("scale")
    began = time.monotonic()
    if not is_root():
        section.notes.append("needs root (namespaces, loop mounts, LXC): not measured")
        section.figures = {key: None for key in KEYS}
        return section
    extra = QUICK_EXTRA if ctx.quick else FULL_EXTRA
    duration = QUICK_DURATION_S if ctx.quick else FULL_DURATION_S
    interval = QUICK_INTERVAL_S if ctx.quick else FULL_INTERVAL_S
    byte_compile(ctx.repo, ctx.python)
    ctx.work.mkdir(parents=True, exist_ok=True)
    ref_storage, storage = ctx.work / "storage-reference", ctx.work / "storage"
    try:
        ctx.log("scale: reference boot (default state)")
        reference = reference_boot(ctx, ref_storage, ctx.work / "reference.log")
        fleet = build_fleet(ctx.work, extra - 1, crashloop=True, pvstate=ctx.tool("pvstate"),
                            crashloop_retry_delay=CRASHLOOP_RETRY_DELAY_S,
                            crashloop_backoff=CRASHLOOP_BACKOFF)
        ctx.log(f"scale: booting {len(fleet.containers)} containers, then sampling every "
                f"{interval:g} s for {duration:.0f} s")
        log = ctx.work / "pvinit.log"
        with running_device(storage, factory=fleet.factory, log=log,
                            pvinit=ctx.tool("pvinit")) as device:
            boot = wait_for_goals(device, timeout=BOOT_TIMEOUT_S, ignore=fleet.unsettled)
            time.sleep(SETTLE_S)
            samples = sample_device(device, duration, interval, fleet.crashloop, ctx)
        reboots = count_reboots(samples, log)
    finally:
        if not ctx.keep:  # storages and fleet builds: ~200 MiB; logs stay (small)
            for scratch in (ref_storage, storage, *ctx.work.glob("fleet-*")):
                remove_tree(scratch)
    if reference.supervisor is None:
        section.notes.append("the reference boot's supervisor was not found: no per-container "
                             "figures for the supervisor")
    figures = figures_of(samples, reference, fleet, boot_s=boot.seconds, reboots=reboots,
                         interval=interval)
    figures["scale.seconds"] = round(time.monotonic() - began, 1)
    section.figures = figures
    section.series = series_of(samples)
    section.losses = losses_of(figures, samples)
    section.markdown = markdown_of(figures, ctx.quick, extra)
    section.notes.extend(pss_only_growth(figures))
    for key, value in figures.items():
        if value is None:
            section.notes.append(f"{key}: not observed in this run")
    return section

"""Section ``footprint``: pvinit's idle memory and install size, beside lxc-start and peers.

Measured in this run:

- **Idle memory**: the default state (BSP, platform, dashboard, sensor) is
  installed from its factory bundle on a blank storage (first boot), powered
  off, and booted again (a device's normal boot).  ~10 s after every
  container reached its goal (3 s in quick mode), PSS and RSS are read from
  ``/proc/<pid>/smaps_rollup`` of pvinit's processes in the device's
  namespace: PID 1 and the supervisor (issue 3's <= 16 MiB goal); liblxc's
  per-container ``[lxc monitor]`` processes separately.  The goal is judged
  on their PSS *as on a device* (:func:`benchmarks.device.device_pss_kb`):
  on this host the dev launcher and the harness are Python too and share
  the interpreter's pages, which lowers the kernel's PSS of PID 1 and the
  supervisor by ~3 MiB.
  The containers are not counted (they are the device's payload), nor the
  dev launcher outside the namespace (a device has none).  PSS is sampled
  once a second while idle (a series for a plot).
- **Reference monitors**: the same state booted by the lxc-start shell script
  of the ``boot`` section; the PSS of its ``[lxc monitor]`` processes.
- **Install size**: ``du`` of ``pvinit/`` without ``__pycache__``, plus the
  ``Installed-Size`` of the Debian packages of its Python dependencies, and
  with the interpreter and liblxc (what a device without Python must add).

Peers' figures that cannot be measured on this machine (Docker, the Atym
agent, Pantavisor) are quoted from their publications and marked so; they
are never mixed with measured figures.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.boot import run_reference
from benchmarks.context import Context, Figure, Section, is_root, median, ratio
from benchmarks.device import (
    PVINIT_ROLES,
    ROLE_MONITOR,
    ROLE_PID1,
    ROLE_SUPERVISOR,
    ProcessMemory,
    byte_compile,
    descendants,
    device_pss_kb,
    remove_tree,
    running_device,
    sum_mb,
    wait_for_goals,
)
from benchmarks.fleet import build_fleet
from benchmarks.published import PUBLISHED, PublishedFigure

GOAL_PSS_MB = 16.0
DEPENDENCIES = (
    "python3-zstandard",
    "python3-msgpack",
    "python3-cryptography",
    "python3-lxc",
)
RUNTIME = ("python3.11", "python3.11-minimal", "libpython3.11-minimal",
           "libpython3.11-stdlib", "liblxc1")


def compared_key(figure: PublishedFigure) -> str:
    """Which of our figures a published one is set beside: idle memory -> PSS, else install."""
    return "footprint.device_pss_mb" if figure.what == "idle memory" else "footprint.install_mb"


KEYS: dict[str, str] = {
    "footprint.device_pss_mb": "idle PSS of pvinit's processes (PID 1 + supervisor) with only "
                               "the device's processes as page sharers, as on a device "
                               "(MiB, median; goal <= 16; needs root)",
    "footprint.pid1.device_pss_mb": "PID 1's share of footprint.device_pss_mb (MiB, median)",
    "footprint.supervisor.device_pss_mb": "the supervisor's share of footprint.device_pss_mb "
                                          "(MiB, median)",
    "footprint.pss_mb": "idle PSS of pvinit's processes (PID 1 + supervisor) as smaps_rollup "
                        "reads on this host, default state, ~10 s after all goals (MiB, median)",
    "footprint.rss_mb": "idle RSS of pvinit's processes (PID 1 + supervisor) (MiB, median)",
    "footprint.pid1.pss_mb": "idle PSS of PID 1 (MiB, median)",
    "footprint.pid1.rss_mb": "idle RSS of PID 1 (MiB, median)",
    "footprint.supervisor.pss_mb": "idle PSS of the supervisor (MiB, median)",
    "footprint.supervisor.rss_mb": "idle RSS of the supervisor (MiB, median)",
    "footprint.monitors.pss_mb": "idle PSS of pvinit's LXC monitors, all containers (MiB, median)",
    "footprint.monitors.rss_mb": "idle RSS of pvinit's LXC monitors, summed (MiB, median)",
    "footprint.monitors.count": "LXC monitor processes found under pvinit",
    "footprint.reference.monitors.pss_mb": "PSS of the lxc-start reference's LXC monitors, "
                                           "same state, 2 s after its boot (MiB, median)",
    "footprint.reference.monitors.count": "LXC monitor processes of the lxc-start reference",
    "footprint.idle_s": "seconds idle after all goals before memory is read",
    "footprint.runs": "repetitions each memory median is taken over",
    "footprint.install_pvinit_mb": "pvinit/ on disk without __pycache__ (MiB, du)",
    "footprint.install_pyc_mb": "pvinit/'s __pycache__ after byte-compiling (MiB, du)",
    "footprint.install_deps_mb": "Installed-Size of the Debian packages of pvinit's Python "
                                 "dependencies (MiB)",
    "footprint.install_mb": "pvinit/ (no __pycache__) + its Debian Python dependencies (MiB)",
    "footprint.install_runtime_mb": "Installed-Size of python3.11 (+ -minimal, libpython3.11-"
                                    "minimal/-stdlib) and liblxc1 (MiB)",
    "footprint.install_with_runtime_mb": "footprint.install_mb + python3.11 + liblxc1 (MiB)",
}


# --- install size -------------------------------------------------------------------------


def package_kb(package: str) -> tuple[int | None, str]:
    """Installed-Size of a Debian package in KiB, and where it came from (dpkg or apt)."""
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}|${Installed-Size}", package],
                            capture_output=True, text=True, check=False)
    status, _, size = result.stdout.partition("|")
    if result.returncode == 0 and status.endswith(" installed") and size.strip().isdigit():
        return int(size), "dpkg"
    shown = subprocess.run(["apt-cache", "show", package], capture_output=True, text=True,
                           check=False)
    for line in shown.stdout.splitlines():
        if line.startswith("Installed-Size:"):
            return int(line.split()[1]), "apt-cache (not installed here)"
    return None, "unknown"


def du_kb(path: Path, *, exclude: str | None = None) -> int:
    argv = ["du", "-sk", str(path)]
    if exclude is not None:
        argv.insert(2, f"--exclude={exclude}")
    return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[0])


def pyc_kb(package: Path) -> int:
    """Disk use of every ``__pycache__`` under ``package`` (KiB)."""
    caches = [str(p) for p in package.rglob("__pycache__") if p.is_dir()]
    if not caches:
        return 0
    out = subprocess.run(["du", "-skc", *caches], capture_output=True, text=True, check=True)
    return int(out.stdout.splitlines()[-1].split()[0])


def _mb(kb: float | None) -> float | None:
    return None if kb is None else round(kb / 1024, 2)


# --- idle memory --------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdleRun:
    processes: tuple[ProcessMemory, ...]
    samples: tuple[tuple[float, float], ...]  # (seconds since goals, pvinit PSS MiB)
    device_kb: dict[int, float] | None  # pid -> PSS with the device's processes as sharers

    def of(self, roles: frozenset[str] | set[str]) -> list[ProcessMemory]:
        return [m for m in self.processes if m.role in roles]

    def device_mb(self, roles: frozenset[str] | set[str]) -> float | None:
        if self.device_kb is None:
            return None
        return round(sum(self.device_kb.get(m.pid, 0.0) for m in self.of(roles)) / 1024, 2)


def measure_idle(ctx: Context, factory: Path, storage: Path, idle: float) -> IdleRun:
    """First boot (install), power off, second boot; memory ``idle`` s after its goals."""
    remove_tree(storage)
    log = storage.parent / f"{storage.name}.log"
    pvinit = ctx.tool("pvinit")
    with running_device(storage, factory=factory, log=log, pvinit=pvinit) as device:
        wait_for_goals(device)
    samples: list[tuple[float, float]] = []
    with running_device(storage, log=log, pvinit=pvinit) as device:
        wait_for_goals(device)
        goals = time.monotonic()
        while True:
            elapsed = time.monotonic() - goals
            mine = [m for m in device.memory() if m.role in PVINIT_ROLES]
            samples.append((round(elapsed, 1), sum_mb(mine)))
            if elapsed >= idle:
                break
            time.sleep(min(1.0, idle - elapsed))
        processes = tuple(device.memory())
        if not any(m.role == ROLE_SUPERVISOR for m in processes):
            raise RuntimeError(f"no supervisor found in the device's namespace; log: {log}")
        init = device.find_init()
        device_kb = None if init is None else device_pss_kb(
            [m.pid for m in processes if m.role in PVINIT_ROLES], descendants(init))
    return IdleRun(processes, tuple(samples), device_kb)


# --- the section -------------------------------------------------------------------------------


def _med(values: Sequence[float]) -> float | None:
    return round(median(values), 2) if values else None


def _fmt(value: Figure, unit: str = "MiB") -> str:
    return "n/a" if value is None else f"{value:,.2f} {unit}"


def run(ctx: Context) -> Section:
    began = time.monotonic()
    section = Section("footprint")
    figures: dict[str, Figure] = {key: None for key in KEYS}
    idle = 3.0 if ctx.quick else 10.0
    runs = ctx.runs(3, 1)
    figures["footprint.idle_s"] = idle
    idle_runs: list[IdleRun] = []
    reference_monitors: list[tuple[ProcessMemory, ...]] = []
    if is_root():
        ctx.work.mkdir(parents=True, exist_ok=True)
        byte_compile(ctx.repo, ctx.python)
        fleet = build_fleet(ctx.work, 0, pvstate=ctx.tool("pvstate"))
        storage = ctx.work / "device"
        try:
            for number in range(runs):
                reference = run_reference(ctx.work, fleet, idle=min(idle, 2.0))
                reference_monitors.append(reference.monitors)
                idle_runs.append(measure_idle(ctx, fleet.factory, storage, idle))
                last = idle_runs[-1]
                ctx.log(f"footprint: run {number + 1}/{runs}: pvinit PSS "
                        f"{sum_mb(last.of(PVINIT_ROLES))} MiB (on a device "
                        f"{last.device_mb(PVINIT_ROLES)} MiB), monitors "
                        f"{sum_mb(last.of({ROLE_MONITOR}))} MiB; lxc-start's monitors "
                        f"{sum_mb(reference.monitors)} MiB")
        finally:
            if not ctx.keep:
                remove_tree(storage)
                remove_tree(fleet.checkout.parent)
    else:
        section.notes.append("idle memory not measured: needs root (namespaces, LXC)")
    if idle_runs:
        groups = {
            "footprint": PVINIT_ROLES,
            "footprint.pid1": frozenset({ROLE_PID1}),
            "footprint.supervisor": frozenset({ROLE_SUPERVISOR}),
            "footprint.monitors": frozenset({ROLE_MONITOR}),
        }
        for prefix, roles in groups.items():
            for what in ("pss", "rss"):
                figures[f"{prefix}.{what}_mb"] = _med([sum_mb(r.of(roles), what)
                                                      for r in idle_runs])
            device = [r.device_mb(roles) for r in idle_runs]
            if prefix != "footprint.monitors" and None not in device:
                figures[f"{prefix}.device_pss_mb"] = _med([d for d in device if d is not None])
        figures["footprint.monitors.count"] = len(idle_runs[-1].of({ROLE_MONITOR}))
        figures["footprint.runs"] = runs
        section.series["footprint.pss_mb_over_time"] = list(idle_runs[-1].samples)
    if reference_monitors:
        figures["footprint.reference.monitors.pss_mb"] = _med([sum_mb(m)
                                                              for m in reference_monitors])
        figures["footprint.reference.monitors.count"] = len(reference_monitors[-1])

    # Install size.
    package = ctx.repo / "pvinit"
    figures["footprint.install_pvinit_mb"] = _mb(du_kb(package, exclude="__pycache__"))
    figures["footprint.install_pyc_mb"] = _mb(pyc_kb(package))
    sizes = {name: package_kb(name) for name in (*DEPENDENCIES, *RUNTIME)}
    unknown = [name for name, (kb, _) in sizes.items() if kb is None]
    not_here = [name for name, (kb, source) in sizes.items() if kb is not None
                and source != "dpkg"]
    if not_here:
        section.notes.append(f"Installed-Size from apt-cache (not installed here): "
                             f"{', '.join(not_here)}")
    if unknown:
        section.notes.append(f"no Installed-Size for {', '.join(unknown)}: install sizes "
                             "that need them are n/a")
    deps = None if any(sizes[n][0] is None for n in DEPENDENCIES) else \
        sum(sizes[n][0] or 0 for n in DEPENDENCIES)
    runtime = None if any(sizes[n][0] is None for n in RUNTIME) else \
        sum(sizes[n][0] or 0 for n in RUNTIME)
    pvinit_kb = du_kb(package, exclude="__pycache__")
    figures["footprint.install_deps_mb"] = _mb(deps)
    figures["footprint.install_runtime_mb"] = _mb(runtime)
    figures["footprint.install_mb"] = _mb(None if deps is None else pvinit_kb + deps)
    figures["footprint.install_with_runtime_mb"] = _mb(
        None if deps is None or runtime is None else pvinit_kb + deps + runtime)

    section.figures = figures
    section.losses = losses(figures)
    section.markdown = markdown(figures, sizes, runs, idle)
    section.seconds = round(time.monotonic() - began, 1)
    return section


def losses(figures: dict[str, Figure]) -> list[str]:
    """Goal misses and every figure where the reference or a published peer is smaller."""
    found = []
    device, host = figures["footprint.device_pss_mb"], figures["footprint.pss_mb"]
    pss = device if device is not None else host
    if pss is not None and pss > GOAL_PSS_MB:
        how = "as on a device" if device is not None else "as read on this host"
        found.append(f"Idle memory: pvinit's PID 1 + supervisor use {pss:.1f} MiB PSS ({how}), "
                     f"goal <= {GOAL_PSS_MB:.0f} MiB ({pss / GOAL_PSS_MB:.2f}x).")
    ours, theirs = figures["footprint.monitors.pss_mb"], \
        figures["footprint.reference.monitors.pss_mb"]
    if ours is not None and theirs is not None and ours > theirs:
        found.append(f"LXC monitors: pvinit's {figures['footprint.monitors.count']} monitors "
                     f"use {ours:.1f} MiB PSS, lxc-start's {theirs:.1f} MiB "
                     f"({ratio(ours, theirs)}x).")
    for peer in PUBLISHED:
        key = compared_key(peer)
        mine = figures[key]
        if mine is None or peer.value_mb >= mine:
            continue
        what = "PSS" if key == "footprint.device_pss_mb" else "pvinit + Python deps"
        found.append(f"{peer.what.capitalize()}: {peer.peer} {peer.quoted} "
                     f"(published, not measured here) vs pvinit {mine:.1f} MiB ({what}; "
                     f"{mine / peer.value_mb:.1f}x).")
    runtime = figures["footprint.install_with_runtime_mb"]
    for peer in PUBLISHED:
        if peer.what == "install size" and runtime is not None and runtime > peer.value_mb:
            found.append(f"Install size with the interpreter and liblxc: pvinit {runtime:.1f} "
                         f"MiB vs {peer.peer} {peer.quoted} (published, not measured here; "
                         f"{runtime / peer.value_mb:.1f}x) on a device without Python.")
    return found


def markdown(figures: dict[str, Figure], sizes: dict[str, tuple[int | None, str]], runs: int,
             idle: float) -> str:
    f = figures
    monitors = f["footprint.monitors.count"]
    rows = [
        ("idle PSS, PID 1 + supervisor, as on a device", _fmt(f["footprint.device_pss_mb"]), "",
         f"<= {GOAL_PSS_MB:g} MiB"),
        ("PID 1 / supervisor, as on a device", f"{_fmt(f['footprint.pid1.device_pss_mb'])} / "
         f"{_fmt(f['footprint.supervisor.device_pss_mb'])}", "", ""),
        ("idle PSS, PID 1 + supervisor, as read on this host", _fmt(f["footprint.pss_mb"]), "",
         ""),
        ("idle RSS, PID 1 + supervisor", _fmt(f["footprint.rss_mb"]), "", ""),
        ("PID 1 PSS / RSS", f"{_fmt(f['footprint.pid1.pss_mb'])} / "
         f"{_fmt(f['footprint.pid1.rss_mb'])}", "", ""),
        ("supervisor PSS / RSS", f"{_fmt(f['footprint.supervisor.pss_mb'])} / "
         f"{_fmt(f['footprint.supervisor.rss_mb'])}", "", ""),
        (f"LXC monitors PSS ({monitors or 'n/a'} processes)", _fmt(f["footprint.monitors.pss_mb"]),
         _fmt(f["footprint.reference.monitors.pss_mb"]), ""),
        ("pvinit/ without `__pycache__`", _fmt(f["footprint.install_pvinit_mb"]), "", ""),
        ("+ Debian Python dependencies", _fmt(f["footprint.install_mb"]), "", ""),
        ("+ python3.11 and liblxc1", _fmt(f["footprint.install_with_runtime_mb"]), "", ""),
    ]
    table = ["| figure | pvinit (measured) | lxc-start reference (measured) | goal |",
             "| --- | ---: | ---: | --- |"]
    table += [f"| {a} | {b} | {c or '—'} | {d or '—'} |" for a, b, c, d in rows]
    peers = ["| peer | figure | published value | pvinit, measured here |",
             "| --- | --- | ---: | ---: |"]
    for peer in PUBLISHED:
        mine = f[compared_key(peer)]
        label = "PSS, PID 1 + supervisor" if compared_key(peer) == "footprint.device_pss_mb" \
            else "pvinit + Python deps"
        peers.append(f"| {peer.peer} | {peer.what} | {peer.quoted} (published, not measured "
                     f"here) | {_fmt(mine)} ({label}) |")
    packages = ", ".join(f"{name} {kb if kb is not None else 'n/a'} KiB"
                         for name, (kb, _) in sizes.items())
    return "\n".join([
        "### Footprint: idle memory and install size",
        "",
        "**Idle memory.** The default state is installed from its factory bundle on a blank "
        "storage, powered off and booted again (a device's normal boot); "
        f"{idle:g} s after every container reached its goal, PSS and RSS are read from "
        "`/proc/<pid>/smaps_rollup` of pvinit's processes in the device's namespace: PID 1 "
        "and the supervisor (the goal of issue 3 is on their PSS), and liblxc's "
        "`[lxc monitor]` processes separately. Containers and the dev launcher (absent on a "
        "device) are not counted. **As on a device**: the kernel's PSS splits a page among "
        "every process mapping it, and on this host the dev launcher and the benchmark itself "
        "are Python too, so they take a share of the interpreter's code pages that on a device "
        "PID 1 and the supervisor map alone. The device figure (the one the goal is judged "
        "on) recomputes PSS from `/proc/<pid>/pagemap` with only the device's processes "
        "(PID 1 and everything below it) counted as sharers; the host figure is "
        "`smaps_rollup` as read. "
        f"Medians of {runs} run(s); `pvinit/` is byte-compiled "
        "first. The reference is the `boot` section's lxc-start script on the same state; its "
        "monitors are read 2 s after its boot, once per run.",
        "",
        "**Install size.** `du -sk --exclude=__pycache__ pvinit/`, plus the `Installed-Size` "
        "of the Debian packages pvinit imports (" + ", ".join(DEPENDENCIES) + "), then with "
        "the interpreter and liblxc (" + ", ".join(RUNTIME) + f"). Packages: {packages}.",
        "",
        *table,
        "",
        "Peers' figures below are **published, not measured here** (no Docker, Atym or "
        "Pantavisor on this machine); they are set beside ours for scale only, and measured "
        "under other conditions. Their MB are taken as MiB for the ratios in the losses.",
        "",
        *peers,
        "",
    ])

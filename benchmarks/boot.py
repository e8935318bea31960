"""Section ``boot``: time to boot a device to all status goals, pvinit vs plain lxc-start.

What is timed, in one run, for the default state (BSP, platform, dashboard,
sensor) and for the same state with 10, 25 and 50 extra app containers
(:mod:`benchmarks.fleet`; quick mode: 10 only):

- *pvinit, fresh*: a blank storage dir, ``pvinit --storage DIR --factory
  BUNDLE`` launched, timed until the status document (read through the
  namespace's PID 1) shows every container at its status goal.  Includes
  the launcher's start, copying and installing the factory bundle.
- *pvinit, second boot*: the same storage booted again (installed): what a
  device does at every power-on.  Also timed from the launcher's hand-over
  (it starts ``unshare``, which execs PID 1) instead of from the launch: a
  device has no dev launcher (``handover_to_goals_s``).
- *reference*: a shell script doing what pvinit does with plain LXC tools,
  on the same images from the same checkout: loop-mount the BSP modules and
  firmware squashfs and each container's root squashfs, an overlay over
  each with its upper dir on disk, then ``lxc-start`` with the config
  pvinit's own :func:`pvinit.containers.lxcconf.lxc_config` generates
  (minus the notify socket: nobody listens), platform first and
  ``lxc-wait`` RUNNING, then every app and ``lxc-wait`` RUNNING; timed until
  the script ended and the sensor's console shows its first reading (what
  READY means to pvinit).

Both sides' ends are seen on inotify, not on a poll (:mod:`benchmarks.watch`).

``pvinit/`` is byte-compiled first, as on a device.  Medians of 5 runs (1 in
quick mode); runs of the three kinds alternate so a noisy neighbour hits
them alike.  The goal (issue 3): second boot / reference <= 1.2.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.context import Context, Figure, Section, fmt_s, is_root, median, ratio
from benchmarks.device import (
    BootTiming,
    ProcessMemory,
    byte_compile,
    monitors_under,
    mounts_under,
    remove_tree,
    running_device,
    unmount_under,
    wait_for_goals,
)
from benchmarks.fleet import Fleet, build_fleet
from benchmarks.watch import DirectoryWatch, contains
from pvinit.containers.lxcconf import host_has_apparmor, lxc_config, render_config
from pvinit.containers.spec import BindMount, ContainerSpec

GOAL_RATIO = 1.2
#: Extra app containers per scale step (the default state has 3 containers).
FULL_SIZES = (10, 25, 50)
QUICK_SIZES = (10,)
SENSOR_FIRST_READING = "sensor: reading 1 "
REFERENCE_TIMEOUT_S = 60

KEYS: dict[str, str] = {
    "boot.reference_s": "default state, lxc-start shell-script reference to all goals (s, median)",
    "boot.pvinit_s": "default state, pvinit second boot, from launching `pvinit --storage` "
                     "to all goals (s, median)",
    "boot.pvinit_fresh_s": "default state, pvinit first boot on blank storage incl. factory "
                           "bundle install, from launch to all goals (s, median)",
    "boot.ratio_vs_lxc_start": "boot.pvinit_s / boot.reference_s (goal <= 1.2)",
    "boot.fresh_ratio_vs_lxc_start": "boot.pvinit_fresh_s / boot.reference_s",
    "boot.handover_to_goals_s": "default state, second boot, from the launcher's hand-over "
                                "(it starts unshare, which execs PID 1) to all goals "
                                "(s, median; no dev launcher in it)",
    "boot.handover_to_goals_fresh_s": "default state, first boot, from the launcher's "
                                      "hand-over to all goals (s, median)",
    "boot.runs": "repetitions each median is taken over",
}
for _n in FULL_SIZES:
    KEYS.update({
        f"boot.apps_{_n}.containers": f"containers in the state with {_n} extra apps",
        f"boot.apps_{_n}.reference_s": f"default state + {_n} extra apps, lxc-start reference "
                                       "to all goals (s, median)",
        f"boot.apps_{_n}.pvinit_s": f"default state + {_n} extra apps, pvinit second boot "
                                    "from launch to all goals (s, median)",
        f"boot.apps_{_n}.pvinit_fresh_s": f"default state + {_n} extra apps, pvinit first boot "
                                          "incl. factory install (s, median)",
        f"boot.apps_{_n}.handover_to_goals_s": f"default state + {_n} extra apps, second boot "
                                               "from the launcher's hand-over to all goals "
                                               "(s, median)",
        f"boot.apps_{_n}.ratio_vs_lxc_start": f"boot.apps_{_n}.pvinit_s / "
                                              f"boot.apps_{_n}.reference_s (goal <= 1.2)",
    })


# --- the lxc-start reference ------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def reference_config(name: str, checkout: Path, ref: Path, apparmor: bool) -> str:
    """The LXC config pvinit would generate for ``name``, without the notify socket."""
    run = _read_json(checkout / name / "run.json")
    mounts = []
    if "data" in run.get("storage", {}):
        data = ref / "disks" / name / "data"
        data.mkdir(parents=True, exist_ok=True)
        mounts.append(BindMount(source=data, target="/storage/data"))
    for part in ("modules", "firmware"):
        mounts.append(BindMount(source=ref / "bsp" / part, target=f"/lib/{part}",
                                readonly=True, optional=True))
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


def reference_script(checkout: Path, ref: Path, groups: Sequence[Sequence[str]]) -> str:
    """The shell script that boots ``groups`` in order with plain LXC tools."""
    bsp = _read_json(checkout / "bsp" / "run.json")
    lines = [
        "#!/bin/sh",
        "set -eu",
        f"R='{ref}'",
        f"P='{ref / 'lxc'}'",
        'squash() { mkdir -p "$2"; mount -t squashfs -o loop,ro,nodev,nosuid "$1" "$2"; }',
        "root() {",
        '  mkdir -p "$R/mnt/$1/root" "$R/ov/$1/upper" "$R/ov/$1/work"',
        '  squash "$2" "$R/mnt/$1/lower"',
        '  mount -t overlay overlay -o "lowerdir=$R/mnt/$1/lower,upperdir=$R/ov/$1/upper,'
        'workdir=$R/ov/$1/work" "$R/mnt/$1/root"',
        "}",
        f"squash '{checkout / 'bsp' / bsp['modules']}' \"$R/bsp/modules\"",
        f"squash '{checkout / 'bsp' / bsp['firmware']}' \"$R/bsp/firmware\"",
    ]
    for group in groups:
        for name in group:  # mount the whole group, then start it, as pvinit does
            image = checkout / name / _read_json(checkout / name / "run.json")["root-volume"]
            lines.append(f"root {name} '{image}'")
        for name in group:
            lines.append(f'lxc-start -n {name} -P "$P"')
        for name in group:
            lines.append(f'lxc-wait -n {name} -P "$P" -s RUNNING -t {REFERENCE_TIMEOUT_S}')
    return "\n".join(lines) + "\n"


def clean_reference(ref: Path, names: Sequence[str]) -> None:
    """Stop the reference's containers (all at once: 50 one by one take long), then unmount."""
    lxcpath = ref / "lxc"
    running = [name for name in names if (lxcpath / name).is_dir()]
    stops = [subprocess.Popen(["lxc-stop", "-n", name, "-P", str(lxcpath), "-t", "10"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name in running]
    for name, proc in zip(running, stops, strict=True):
        if proc.wait() != 0:
            subprocess.run(["lxc-stop", "-n", name, "-P", str(lxcpath), "-k"],
                           capture_output=True, check=False)
    unmount_under(ref)


def _time_reference(script: Path, console: Path) -> float:
    """Seconds from starting ``script`` until it ended and ``console`` shows the first reading.

    The harness, not the script, waits for the reading, on inotify as it
    waits for pvinit's status (:mod:`benchmarks.watch`): the same precision
    on both sides of the ratio.
    """
    with DirectoryWatch() as changes:
        changes.watch(console.parent)  # before the start: no write can be missed
        started = time.monotonic()
        result = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"reference boot failed: {result.stderr.strip()[-500:]}")
        deadline = time.monotonic() + REFERENCE_TIMEOUT_S
        while not contains(console, SENSOR_FIRST_READING):
            if time.monotonic() >= deadline:
                raise RuntimeError(f"reference: no {SENSOR_FIRST_READING!r} in {console} after "
                                   f"{REFERENCE_TIMEOUT_S} s")
            changes.wait(0.01)
        return time.monotonic() - started


@dataclass(frozen=True)
class ReferenceRun:
    seconds: float
    #: The reference's ``[lxc monitor]`` processes, when asked for (``idle`` >= 0).
    monitors: tuple[ProcessMemory, ...]


def run_reference(work: Path, fleet: Fleet, *, idle: float | None = None) -> ReferenceRun:
    """Boot ``fleet`` with the lxc-start script in ``work/ref`` and tear it down.

    With ``idle`` (seconds), the LXC monitors' memory is read that long after
    the boot (the reference's side of the footprint comparison).
    """
    ref = work / "ref"
    remove_tree(ref)
    names = [name for group in fleet.groups for name in group]
    apparmor = host_has_apparmor()
    for name in names:
        (ref / "lxc" / name).mkdir(parents=True)
        (ref / "logs" / name).mkdir(parents=True)
        (ref / "lxc" / name / "config").write_text(
            reference_config(name, fleet.checkout, ref, apparmor))
    script = ref / "boot.sh"
    script.write_text(reference_script(fleet.checkout, ref, fleet.groups))
    monitors: list[ProcessMemory] = []
    try:
        seconds = _time_reference(script, ref / "logs" / "sensor" / "console.log")
        if idle is not None:
            time.sleep(idle)
            monitors = monitors_under(ref / "lxc")
    finally:
        clean_reference(ref, names)
    if mounts_under(ref):
        raise RuntimeError(f"reference mounts left under {ref}")
    remove_tree(ref)
    return ReferenceRun(round(seconds, 3), tuple(monitors))


# --- pvinit boots ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PvinitRun:
    fresh: BootTiming
    second: BootTiming


def run_pvinit(ctx: Context, fleet: Fleet, storage: Path) -> PvinitRun:
    """A fresh (factory install) boot, power-off, and a second boot of the same storage."""
    remove_tree(storage)
    log = storage.parent / f"{storage.name}.log"
    pvinit = ctx.tool("pvinit")
    with running_device(storage, factory=fleet.factory, log=log, pvinit=pvinit) as device:
        fresh = wait_for_goals(device)
    if device.launcher.returncode != 0:
        raise RuntimeError(f"pvinit did not power off cleanly (exit "
                           f"{device.launcher.returncode}); log: {log}")
    settle(ctx)
    with running_device(storage, log=log, pvinit=pvinit) as device:
        second = wait_for_goals(device)
    return PvinitRun(fresh, second)


@dataclass(frozen=True)
class Step:
    """One state size measured: medians (and every run, for the record)."""

    extra_apps: int
    containers: int
    reference: list[float]
    fresh: list[float]
    second: list[float]
    handover_second: list[float]
    handover_fresh: list[float]
    timeline: dict[str, float]

    @staticmethod
    def med(values: list[float]) -> float | None:
        return round(median(values), 3) if values else None


def settle(ctx: Context) -> None:
    """Let the last teardown finish (cgroups, loop devices, dirty pages) before timing a boot.

    Without it the first boots at 50 containers ran 2-3x slower than the
    next ones: the kernel was still tearing down the previous 50.
    """
    os.sync()
    time.sleep(0.2 if ctx.quick else 0.5)


def measure_step(ctx: Context, extra_apps: int, runs: int) -> Step:
    fleet = build_fleet(ctx.work, extra_apps, pvstate=ctx.tool("pvstate"))
    step = Step(extra_apps, len(fleet.containers), [], [], [], [], [], {})
    storage = ctx.work / f"device-{extra_apps}"
    try:
        for number in range(runs):
            # Alternate which goes first so drift on a shared machine hits both alike.
            settle(ctx)
            if number % 2 == 0:
                step.reference.append(run_reference(ctx.work, fleet).seconds)
                settle(ctx)
                pv = run_pvinit(ctx, fleet, storage)
            else:
                pv = run_pvinit(ctx, fleet, storage)
                settle(ctx)
                step.reference.append(run_reference(ctx.work, fleet).seconds)
            step.fresh.append(pv.fresh.seconds)
            step.second.append(pv.second.seconds)
            if pv.second.handover_to_goals_s is not None:
                step.handover_second.append(pv.second.handover_to_goals_s)
            if pv.fresh.handover_to_goals_s is not None:
                step.handover_fresh.append(pv.fresh.handover_to_goals_s)
            step.timeline.clear()
            step.timeline.update(pv.second.timeline)
            ctx.log(f"boot: {step.containers} containers, run {number + 1}/{runs}: reference "
                    f"{step.reference[-1]:.3f}s, pvinit fresh {pv.fresh.seconds:.3f}s, second "
                    f"{pv.second.seconds:.3f}s "
                    f"(from the hand-over {pv.second.handover_to_goals_s}s)")
    finally:
        if not ctx.keep:
            remove_tree(storage)
    return step


# --- the section ------------------------------------------------------------------------------


def _timeline_summary(timeline: dict[str, float]) -> str:
    """The milestones of a boot: PID 1 seen, status written, last STARTED/READY, RUNNING."""
    picks = {"pid1 found": "PID 1 seen", "status STARTING": "supervisor's first status"}
    parts = [f"{label} {timeline[key]:.2f} s" for key, label in picks.items() if key in timeline]
    started = [at for key, at in timeline.items() if key.endswith((" STARTED", " READY"))]
    if started:
        parts.append(f"last container at goal {max(started):.2f} s")
    return ", ".join(parts)


def build_section(ctx: Context, steps: Sequence[Step], runs: int) -> Section:
    section = Section("boot")
    figures: dict[str, Figure] = {"boot.runs": runs}
    base = steps[0]
    figures["boot.reference_s"] = Step.med(base.reference)
    figures["boot.pvinit_s"] = Step.med(base.second)
    figures["boot.pvinit_fresh_s"] = Step.med(base.fresh)
    figures["boot.ratio_vs_lxc_start"] = ratio(Step.med(base.second), Step.med(base.reference))
    figures["boot.fresh_ratio_vs_lxc_start"] = ratio(Step.med(base.fresh),
                                                     Step.med(base.reference))
    figures["boot.handover_to_goals_s"] = Step.med(base.handover_second)
    figures["boot.handover_to_goals_fresh_s"] = Step.med(base.handover_fresh)
    for step in steps[1:]:
        key = f"boot.apps_{step.extra_apps}"
        figures[f"{key}.containers"] = step.containers
        figures[f"{key}.reference_s"] = Step.med(step.reference)
        figures[f"{key}.pvinit_s"] = Step.med(step.second)
        figures[f"{key}.pvinit_fresh_s"] = Step.med(step.fresh)
        figures[f"{key}.handover_to_goals_s"] = Step.med(step.handover_second)
        figures[f"{key}.ratio_vs_lxc_start"] = ratio(Step.med(step.second),
                                                     Step.med(step.reference))
    section.figures = figures
    section.series = {
        "boot.pvinit_s_by_containers": [(s.containers, median(s.second)) for s in steps],
        "boot.pvinit_fresh_s_by_containers": [(s.containers, median(s.fresh)) for s in steps],
        "boot.handover_to_goals_s_by_containers": [
            (s.containers, median(s.handover_second)) for s in steps if s.handover_second],
        "boot.reference_s_by_containers": [(s.containers, median(s.reference)) for s in steps],
    }
    measured = {s.extra_apps for s in steps[1:]}
    skipped = [n for n in FULL_SIZES if n not in measured]
    for n in skipped:
        for suffix in ("containers", "reference_s", "pvinit_s", "pvinit_fresh_s",
                       "handover_to_goals_s", "ratio_vs_lxc_start"):
            figures[f"boot.apps_{n}.{suffix}"] = None
    if skipped:
        section.notes.append(f"boot.apps_{{{','.join(map(str, skipped))}}}.*: not measured in "
                             f"{'quick mode (only 10 extra apps)' if ctx.quick else 'this run'}")
    section.losses = losses(steps)
    section.markdown = markdown(ctx, steps, runs)
    return section


def _label(step: Step) -> str:
    if step.extra_apps == 0:
        return f"default state ({step.containers} containers)"
    return f"default + {step.extra_apps} apps ({step.containers} containers)"


def losses(steps: Sequence[Step]) -> list[str]:
    """One sentence per boot where pvinit is slower than the lxc-start reference."""
    found = []
    for step in steps:
        reference = Step.med(step.reference)
        for kind, values in (("second boot", step.second), ("fresh boot", step.fresh)):
            if step.extra_apps and kind == "fresh boot":
                continue  # the scale steps are judged on the second boot, as the goal is
            mine = Step.med(values)
            factor = ratio(mine, reference)
            if factor is None or mine is None or reference is None or factor <= 1.0:
                continue
            verdict = (f"misses the <= {GOAL_RATIO}x goal" if factor > GOAL_RATIO
                       else f"within the <= {GOAL_RATIO}x goal")
            found.append(f"Boot to all goals, {_label(step)}, {kind}: pvinit {mine:.3f} s, "
                         f"lxc-start script {reference:.3f} s ({factor:.2f}x; {verdict}).")
    return found


def markdown(ctx: Context, steps: Sequence[Step], runs: int) -> str:
    rows = []
    for step in steps:
        reference, second = Step.med(step.reference), Step.med(step.second)
        fresh = Step.med(step.fresh)
        rows.append(
            f"| {_label(step)} | {fmt_s(reference)} | {fmt_s(second)} | "
            f"{ratio(second, reference) or 'n/a'}x | {fmt_s(fresh)} | "
            f"{ratio(fresh, reference) or 'n/a'}x | {fmt_s(Step.med(step.handover_second))} |")
    base = steps[0]
    sizes = ", ".join(str(s.extra_apps) for s in steps[1:])
    return "\n".join([
        "### Boot time: pvinit vs plain lxc-start",
        "",
        "Time from power-on to every container at its status goal (platform STARTED, "
        "dashboard STARTED, sensor READY after its first reading; extra apps STARTED), "
        f"for the default state and for it with {sizes} extra app containers (each runs "
        "the dashboard's image; content addressing stores it once).",
        "",
        "- **pvinit, second boot**: `pvinit --storage DIR` on an installed storage, timed "
        "from the launch until the status document (read through the namespace's PID 1) "
        "shows every goal. *from the hand-over*: the same boot timed from the launcher's "
        "hand-over (the `CLOCK_MONOTONIC` instant it starts `unshare`, which execs PID 1; "
        "stamped in PID 1's environment), i.e. without the dev launcher a device does not have: a "
        "device's boot after its bootloader, plus making the namespace. The goal (issue 3: "
        f"<= {GOAL_RATIO}x the reference) is judged on both.",
        "- **pvinit, fresh**: a blank storage and `--factory BUNDLE`: includes copying and "
        "installing the factory bundle (35 MB) before anything starts.",
        "- **lxc-start reference**: a shell script doing the same work with plain LXC "
        "tools on the same images: loop-mounts the BSP and each root squashfs, an overlay "
        "on disk over each, `lxc-start` with the config pvinit's own generator writes, "
        "platform first (`lxc-wait` RUNNING), then every app; timed until it ended and "
        "the sensor's first reading is in its console log.",
        "- Both ends are seen on inotify (pvinit's status file replaced, the sensor's log "
        "appended), not on a timer, so neither figure moves on a poll's grid.",
        "",
        f"Medians of {runs} run(s) each; the three kinds alternate. `pvinit/` is "
        "byte-compiled first, as on a device. 2-core Debian 12 VM, real LXC.",
        "",
        "| state | lxc-start reference | pvinit second boot | ratio | pvinit fresh | "
        "ratio | second boot from the hand-over |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Where a default-state second boot spends its time (last run, seconds since the "
        f"launch): {_timeline_summary(base.timeline)}.",
        "",
    ])


def run(ctx: Context) -> Section:
    began = time.monotonic()
    if not is_root():
        section = Section("boot", figures={key: None for key in KEYS})
        section.notes.append("not run: needs root (namespaces, loop mounts, LXC)")
        section.markdown = "### Boot time: pvinit vs plain lxc-start\n\nNot measured: needs root.\n"
        return section
    ctx.work.mkdir(parents=True, exist_ok=True)
    byte_compile(ctx.repo, ctx.python)
    runs = ctx.runs(5, 1)
    steps = []
    for extra in (0, *(QUICK_SIZES if ctx.quick else FULL_SIZES)):
        steps.append(measure_step(ctx, extra, runs))
    section = build_section(ctx, steps, runs)
    if not ctx.keep:
        for path in ctx.work.glob("fleet-*"):
            remove_tree(path)
    section.seconds = round(time.monotonic() - began, 1)
    return section

"""``docs/benchmarks.md`` from one run: headline table, losses, plots, sections, keys.

The whole file is generated: rerunning ``tools/bench`` regenerates it (and
its plots) from scratch, so what it says is always what the last run
measured.  Hand-written history of earlier measurements and the decisions
they led to lives in ``docs/benchmarks-history.md``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.context import Figure, Section, fmt_bytes, fmt_s, ratio
from benchmarks.published import PUBLISHED

TIMES = "\u00d7"  # the multiplication sign of ratios


@dataclass(frozen=True)
class RunInfo:
    """How the run was made: printed atop the report."""

    mode: str
    command: str
    wall_s: float
    machine: dict[str, str | int | float]
    sections: tuple[str, ...]
    complete: bool
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Headline:
    """One row of the headline table: pvinit's figure beside its reference."""

    what: str
    ours: str
    theirs_label: str
    theirs: str | None
    ratio: str | None
    ratio_label: str
    goal: str


def _get(figures: dict[str, Figure], key: str) -> float | None:
    value = figures.get(key)
    return float(value) if isinstance(value, int | float) else None


def _x(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}{TIMES}"


def headlines(figures: dict[str, Figure]) -> list[Headline]:
    """The rows a reader looks at first; a row whose figure is missing is left out."""
    rows: list[Headline] = []

    def add(  # noqa: PLR0917 - one positional per table column
        what: str, ours: str | None, theirs_label: str, theirs: str | None,
            ratio: str | None, ratio_label: str, goal: str = "") -> None:
        if ours is not None and ours != "n/a":
            rows.append(Headline(what, ours, theirs_label, theirs, ratio, ratio_label, goal))

    g = figures.get
    add("Boot, default state (3 containers), second boot, from launching `pvinit --storage`",
        fmt_s(_get(figures, "boot.pvinit_s")) if g("boot.pvinit_s") is not None else None,
        "lxc-start shell script", fmt_s(_get(figures, "boot.reference_s")),
        _x(_get(figures, "boot.ratio_vs_lxc_start")), "pvinit / script", f"≤ 1.2{TIMES} (issue 3)")
    from_handover = _get(figures, "boot.handover_to_goals_s")
    add("Boot, default state, second boot, from the launcher's hand-over to PID 1 (a "
        "device's boot after its bootloader: no dev launcher in it)",
        fmt_s(from_handover) if from_handover is not None else None,
        "lxc-start shell script", fmt_s(_get(figures, "boot.reference_s")),
        _x(ratio(from_handover, _get(figures, "boot.reference_s"))), "pvinit / script",
        f"≤ 1.2{TIMES} (issue 3)")
    add("Boot, default state, fresh storage (factory install)",
        fmt_s(_get(figures, "boot.pvinit_fresh_s")) if g("boot.pvinit_fresh_s") is not None
        else None, "lxc-start shell script", fmt_s(_get(figures, "boot.reference_s")),
        _x(_get(figures, "boot.fresh_ratio_vs_lxc_start")), "pvinit / script")
    for n in (10, 25, 50):
        key = f"boot.apps_{n}"
        if g(f"{key}.pvinit_s") is not None:
            add(f"Boot, default state + {n} apps",
                fmt_s(_get(figures, f"{key}.pvinit_s")), "lxc-start shell script",
                fmt_s(_get(figures, f"{key}.reference_s")),
                _x(_get(figures, f"{key}.ratio_vs_lxc_start")), "pvinit / script")
    atym_idle = next(p for p in PUBLISHED if p.peer == "Atym agent" and p.what == "idle memory")
    atym_install = next(p for p in PUBLISHED if p.peer == "Atym agent" and p.what ==
                        "install size")
    device, host = _get(figures, "footprint.device_pss_mb"), _get(figures, "footprint.pss_mb")
    if device is not None:
        add("Idle memory, PID 1 + supervisor (PSS as on a device)", f"{device:.1f} MiB",
            "Atym agent, published", atym_idle.quoted, None, "", "≤ 16 MiB (issue 3)")
    add("Idle memory, PID 1 + supervisor (PSS as read on this host, where other Python "
        "processes share the interpreter's pages)" if device is not None
        else "Idle memory, PID 1 + supervisor (PSS)",
        None if host is None else f"{host:.1f} MiB",
        "Atym agent, published", atym_idle.quoted,
        None, "", "" if device is not None else "≤ 16 MiB (issue 3)")
    install = _get(figures, "footprint.install_mb")
    add("Install size, pvinit + its Python dependencies",
        None if install is None else f"{install:.1f} MiB",
        "Atym agent, published", atym_install.quoted, None, "")
    rootfs = _get(figures, "update.rootfs_mb")
    in_rootfs = f"a {rootfs:.0f} MiB rootfs" if rootfs is not None else "a rootfs"
    case_names = (("one_file", f"(a) one file in {in_rootfs}"),
                  ("library", "(b) library upgrade, ~5% of files"),
                  ("new_container", "(c) new container"), ("kernel", "(d) kernel change"))
    for case, label in case_names:
        ours = _get(figures, f"update.{case}.bytes.pvinit")
        if ours is None:
            continue
        ostree = _get(figures, f"update.{case}.bytes.ostree")
        add(f"Update size {label}", fmt_bytes(ours), "OSTree static delta", fmt_bytes(ostree),
            _x(_get(figures, f"update.{case}.ratio_pvinit_vs_ostree")), "pvinit / OSTree",
            "≤ OSTree" if case == "one_file" else "")
    for case, label in case_names:
        ours = _get(figures, f"update.{case}.apply_s")
        if ours is None:
            continue
        add(f"Update apply {label}", fmt_s(ours), "OSTree apply offline",
            fmt_s(_get(figures, f"update.{case}.ostree_apply_s")),
            _x(_get(figures, f"update.{case}.ratio_apply_vs_ostree")), "pvinit / OSTree")
    rollback = _get(figures, "update.rollback_s")
    add("Rollback of a failed try boot", None if rollback is None else fmt_s(rollback),
        "", None, None, "")
    ingest = _get(figures, "store.ingest.mb_per_s")
    add("Store ingest", None if ingest is None else f"{ingest:,.0f} MB/s", "sha256sum",
        _fmt_rate(_get(figures, "store.sha256sum.mb_per_s")),
        _x(_get(figures, "store.ingest.ratio_vs_sha256sum")), "pvinit / sha256sum",
        f"≥ 0.8{TIMES} (issue 2)")
    for what, key, peer_key, ratio_key, peer in (
        ("Store fsck", "store.fsck_s", "store.ostree.fsck_s", "store.fsck.ratio_vs_ostree",
         "ostree fsck"),
        ("Store GC", "store.gc_s", "store.ostree.prune_s", "store.gc.ratio_vs_ostree",
         "ostree prune"),
    ):
        ours = _get(figures, key)
        add(what, None if ours is None else fmt_s(ours), peer,
            fmt_s(_get(figures, peer_key)), _x(_get(figures, ratio_key)), "pvinit / OSTree")
    diff = _get(figures, "diff.diff_plan_s")
    add("Diff + update plan, 10,000 objects", None if diff is None else fmt_s(diff), "", None,
        None, "", "< 0.5 s (issue 2)")
    growth = _get(figures, "scale.supervisor.rss_growth_ratio")
    if growth is not None:
        containers = _get(figures, "scale.containers") or 0
        duration = _get(figures, "scale.duration_s") or 0
        add(f"Scale: supervisor RSS growth over {duration:.0f} s, {containers:.0f} containers",
            f"{_get(figures, 'scale.supervisor.rss_mb.end') or 0:.1f} MiB at the end",
            "same at the start", f"{_get(figures, 'scale.supervisor.rss_mb.start') or 0:.1f} MiB",
            _x(growth), "end / start", "≤ 1.05 (no leak)")
        cpu = _get(figures, "scale.supervisor.cpu_percent")
        add("Scale: supervisor CPU, one container crash-looping",
            None if cpu is None else f"{cpu:.2f} % of a core", "", None, None, "", "≤ 5 %")
    return rows


def _fmt_rate(value: float | None) -> str | None:
    return None if value is None else f"{value:,.0f} MB/s"


def _machine_line(machine: dict[str, str | int | float]) -> str:
    parts = [f"{machine.get('cores')} cores", f"{machine.get('memory_gib')} GiB",
             f"Debian {machine.get('debian')}", f"Linux {machine.get('kernel')}",
             f"Python {machine.get('python')}"]
    peers = [f"{name} {machine[name]}" for name in ("lxc", "ostree", "casync", "zstd")
             if name in machine]
    return ", ".join(parts) + "; " + ", ".join(peers)


def render_report(info: RunInfo, sections: list[Section], keys: dict[str, str],
                  plots: list[tuple[str, Path]], report_dir: Path) -> str:
    """The markdown of ``docs/benchmarks.md`` for this run."""
    figures = {k: v for s in sections for k, v in s.figures.items()}
    out: list[str] = []
    w = out.append
    w("# Benchmarks\n")
    w("<!-- Generated by tools/bench: edit benchmarks/, not this file. -->\n")
    w(f"Generated by `{info.command}` on {time.strftime('%Y-%m-%d', time.gmtime())} "
      f"({info.mode} run, {info.wall_s / 60:.1f} min) on {_machine_line(info.machine)}.\n")
    w("Every figure here was measured in that one run, against a reference or peer "
      "measured in the same run on the same machine: these machines are shared and noisy, "
      "so the ratio is the figure to compare, with the absolute value beside it. Figures "
      "that peers publish about themselves are quoted as *published* and were not measured "
      "here. Regenerate this file and its plots with `tools/bench` (full, < 20 min on 2 "
      "cores); `tools/bench --quick` is a < 3 min smoke run writing "
      "`build/bench/report.md`; `tools/bench --json FILE` writes every figure under the "
      "keys listed at the end. Earlier measurements and what they led to: "
      "[benchmarks-history.md](benchmarks-history.md).\n")
    if not info.complete:
        w(f"**Partial run**: sections {', '.join(info.sections)} only.\n")
    for name, error in info.errors.items():
        w(f"**Section `{name}` failed** in this run: `{error}`.\n")
    rows = headlines(figures)
    if rows:
        w("## Headline figures\n")
        w("| figure | pvinit | reference / peer | its value | ratio | goal |")
        w("|---|---|---|---|---|---|")
        for r in rows:
            ratio = f"{r.ratio} ({r.ratio_label})" if r.ratio else ""
            w(f"| {r.what} | **{r.ours}** | {r.theirs_label} | {r.theirs or ''} | {ratio} "
              f"| {r.goal} |")
        w("")
    losses = [loss for s in sections for loss in s.losses]
    w("## Where pvinit loses\n")
    if losses:
        w("Derived from this run's numbers, plainly:\n")
        out.extend(f"- {loss}" for loss in losses)
        w("")
    else:
        w("In this run pvinit lost on no measured figure and met every goal.\n")
    if plots:
        w("## Plots\n")
        for title, path in plots:
            rel = os.path.relpath(path, report_dir)
            w(f"![{title}]({rel})\n")
    for s in sections:
        if s.markdown.strip():
            w(s.markdown.strip() + "\n")
            w(f"*Section `{s.name}` took {s.seconds:.0f} s in this run.*\n")
        for note in s.notes:
            w(f"> {note}\n")
    w("## Keys of `tools/bench --json`\n")
    w("The JSON file has `figures` (these keys; `null` when not measured in that run), "
      "`series` (the plots' points), `sections` (time, error, losses), `machine` and "
      "`published` (the peers' own figures, not measured). Keys are stable: a key's "
      "meaning never changes; a new meaning gets a new key.\n")
    w("| key | meaning | this run |")
    w("|---|---|---|")
    for key in sorted(keys):
        value = figures.get(key)
        shown = "—" if key not in figures else ("null" if value is None else f"{value:g}")
        w(f"| `{key}` | {keys[key]} | {shown} |")
    w("")
    return "\n".join(out)

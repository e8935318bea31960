"""The report's plots, drawn from the figures and series of one run (PNG, matplotlib).

Each plot shows pvinit beside its reference or peers *of the same run*; a
plot whose figures are missing (section not run, or failed) is skipped, not
drawn empty.  Published peer figures are hatched and labelled as such.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.context import Figure, Section
from benchmarks.published import PUBLISHED

UPDATE_CASES = (("one_file", "(a) one file"), ("library", "(b) library ~5%"),
                ("new_container", "(c) new container"), ("kernel", "(d) kernel"))
PEERS = (("pvinit", "pvinit"), ("ostree", "OSTree static delta"), ("casync", "casync"),
         ("whole", "whole objects"))
COLOURS = {"pvinit": "#1f77b4", "ostree": "#ff7f0e", "casync": "#2ca02c", "whole": "#7f7f7f",
           "reference": "#ff7f0e", "published": "#bbbbbb"}


def _num(figures: dict[str, Figure], key: str) -> float | None:
    value = figures.get(key)
    return float(value) if isinstance(value, int | float) else None


def _save(plt: Any, fig: Any, out: Path) -> bool:
    """Write ``fig`` as PNG (no software stamp, so reruns differ only by their data)."""
    fig.tight_layout()
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return True


def _boot(plt: Any, figures: dict[str, Figure], series: dict[str, list[tuple[float, float]]],
          out: Path) -> bool:
    pv = series.get("boot.pvinit_s_by_containers")
    ref = series.get("boot.reference_s_by_containers")
    if not pv or not ref:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for points, label, colour in ((pv, "pvinit (second boot)", COLOURS["pvinit"]),
                                  (ref, "lxc-start shell script", COLOURS["reference"])):
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o", label=label, color=colour)
    ax.set_xlabel("containers in the state")
    ax.set_ylabel("seconds to all status goals")
    ax.set_title("Boot time by container count")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, out)


def _update_size(plt: Any, figures: dict[str, Figure],
                 series: dict[str, list[tuple[float, float]]], out: Path) -> bool:
    cases = [(key, label) for key, label in UPDATE_CASES
             if _num(figures, f"update.{key}.bytes.pvinit") is not None]
    if not cases:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.2
    for i, (peer, label) in enumerate(PEERS):
        xs, ys = [], []
        for j, (case, _) in enumerate(cases):
            value = _num(figures, f"update.{case}.bytes.{peer}")
            if value is not None:
                xs.append(j + (i - 1.5) * width)
                ys.append(value / 1024)
        ax.bar(xs, ys, width, label=label, color=COLOURS[peer])
    ax.set_xticks(range(len(cases)), [label for _, label in cases])
    ax.set_yscale("log")
    ax.set_ylabel("KiB on the wire (log scale)")
    ax.set_title("Update size: bytes a device downloads")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(plt, fig, out)


def _update_time(plt: Any, figures: dict[str, Figure],
                 series: dict[str, list[tuple[float, float]]], out: Path) -> bool:
    labels, pv, ref = [], [], []
    for case, label in UPDATE_CASES:
        apply_s = _num(figures, f"update.{case}.apply_s")
        if apply_s is None:
            continue
        labels.append(label)
        pv.append(apply_s)
        ref.append(_num(figures, f"update.{case}.ostree_apply_s") or 0.0)
    rollback = _num(figures, "update.rollback_s")
    if rollback is not None:
        labels.append("rollback")
        pv.append(rollback)
        ref.append(0.0)
    if not labels:
        return False
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], pv, 0.4, label="pvinit on a live device",
           color=COLOURS["pvinit"])
    ax.bar([x + 0.2 for x in xs], ref, 0.4, label="OSTree apply offline (no restart)",
           color=COLOURS["ostree"])
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("seconds")
    ax.set_title("Update apply and rollback time")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(plt, fig, out)


def _footprint(plt: Any, figures: dict[str, Figure],
               series: dict[str, list[tuple[float, float]]], out: Path) -> bool:
    measured = [(label, _num(figures, key)) for label, key in (
        ("pvinit idle PSS\n(PID 1 + supervisor)", "footprint.pss_mb"),
        ("pvinit idle RSS", "footprint.rss_mb"),
        ("pvinit install\n(+ Python deps)", "footprint.install_mb"),
    )]
    bars = [(label, value, False) for label, value in measured if value is not None]
    if not bars:
        return False
    bars += [(f"{p.peer}\n{p.what} (published)", p.value_mb, True) for p in PUBLISHED]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    ys = range(len(bars))
    for y, (_, value, published) in zip(ys, bars, strict=True):
        ax.barh(y, value, color=COLOURS["published" if published else "pvinit"],
                hatch="//" if published else None, edgecolor="black" if published else None)
        ax.text(value, y, f" {value:.1f}", va="center", fontsize="small")
    ax.set_yticks(list(ys), [label for label, _, _ in bars], fontsize="small")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("MiB (log scale); hatched = the peer's published figure, not measured here")
    ax.set_title("Footprint")
    return _save(plt, fig, out)


def _scale(plt: Any, figures: dict[str, Figure], series: dict[str, list[tuple[float, float]]],
           out: Path) -> bool:
    pss = series.get("scale.supervisor_pss_mb")
    cpu = series.get("scale.supervisor_cpu_percent")
    if not pss:
        return False
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    for name, label, style in (("scale.supervisor_rss_mb", "supervisor RSS", "--"),
                               ("scale.supervisor_pss_mb", "supervisor PSS", "-"),
                               ("scale.pid1_pss_mb", "PID 1 PSS", "-")):
        points = series.get(name)
        if points:
            xs, ys = zip(*points, strict=True)
            top.plot(xs, ys, style, label=label)
    top.set_ylabel("MiB")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    top.legend(fontsize="small")
    containers = _num(figures, "scale.containers")
    detail = f": {containers:.0f} containers, one crash-looping" if containers else ""
    top.set_title("Scale run" + detail)
    if cpu:
        xs, ys = zip(*cpu, strict=True)
        bottom.plot(xs, ys, color=COLOURS["reference"], label="supervisor CPU")
    bottom.set_ylabel("% of one core")
    bottom.set_xlabel("seconds since sampling started")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    return _save(plt, fig, out)


def _store(plt: Any, figures: dict[str, Figure], series: dict[str, list[tuple[float, float]]],
           out: Path) -> bool:
    pairs = [
        ("ingest MB/s", "store.ingest.mb_per_s", "store.sha256sum.mb_per_s", "sha256sum"),
        ("fsck s", "store.fsck_s", "store.ostree.fsck_s", "ostree fsck"),
        ("GC s", "store.gc_s", "store.ostree.prune_s", "ostree prune"),
    ]
    rows = [(label, _num(figures, a), _num(figures, b), peer) for label, a, b, peer in pairs]
    rows = [r for r in rows if r[1] is not None]
    if not rows:
        return False
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.8))
    axes = axes if len(rows) > 1 else [axes]
    for ax, (label, ours, theirs, peer) in zip(axes, rows, strict=True):
        names = ["pvinit", peer]
        values = [ours or 0.0, theirs or 0.0]
        ax.bar(names, values, color=[COLOURS["pvinit"], COLOURS["reference"]])
        ax.set_title(label, fontsize="medium")
        ax.tick_params(axis="x", labelsize="small")
        ax.grid(axis="y", alpha=0.3)
    objects = _num(figures, "store.objects")
    revisions = _num(figures, "store.revisions")
    if objects and revisions:
        fig.suptitle(f"Object store: {objects:,.0f} objects, {revisions:,.0f} revisions")
    return _save(plt, fig, out)


Drawer = Callable[[Any, dict[str, Figure], dict[str, list[tuple[float, float]]], Path], bool]
PLOTS: tuple[tuple[str, str, Drawer], ...] = (
    ("boot.png", "Boot time by container count", _boot),
    ("update_size.png", "Update size", _update_size),
    ("update_time.png", "Update apply and rollback time", _update_time),
    ("footprint.png", "Footprint, with the peers' published figures", _footprint),
    ("scale.png", "Scale run: supervisor memory and CPU", _scale),
    ("store.png", "Object store", _store),
)


def draw_all(sections: list[Section], out_dir: Path) -> list[tuple[str, Path]]:
    """Draw every plot the run has figures for; (title, path) of each drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {k: v for s in sections for k, v in s.figures.items()}
    series = {k: v for s in sections for k, v in s.series.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn: list[tuple[str, Path]] = []
    for filename, title, draw in PLOTS:
        path = out_dir / filename
        if draw(plt, figures, series, path):
            drawn.append((title, path))
    return drawn

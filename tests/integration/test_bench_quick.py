"""``tools/bench --quick`` end to end: the one command installs what it needs, measures every
section against its peers for real, and writes the report, the plots and the keyed JSON.

Nothing here judges a figure (a benchmark is not a timed test): the test checks
that every section ran, that each documented headline figure was measured, that
nothing undocumented was emitted, and that the report and plots were written.
"""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.__main__ import SECTIONS

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.slow]

#: Figures every quick run must have measured (not null).
MEASURED = (
    "boot.ratio_vs_lxc_start", "boot.reference_s", "boot.pvinit_s",
    "footprint.pss_mb", "footprint.rss_mb", "footprint.install_mb",
    "update.one_file.bytes.pvinit", "update.one_file.bytes.ostree",
    "update.one_file.bytes.casync", "update.one_file.bytes.whole",
    "update.library.bytes.pvinit", "update.new_container.bytes.pvinit",
    "update.one_file.apply_s", "update.rollback_s",
    "store.ingest.ratio_vs_sha256sum", "store.fsck_s", "store.gc_s", "store.ostree.fsck_s",
    "diff.diff_plan_s", "scale.supervisor.pss_mb.max", "scale.supervisor.cpu_percent",
)


def test_quick_run_measures_every_section_and_writes_report_plots_and_json(
    tmp_path: Path,
) -> None:
    figures_file, report = tmp_path / "bench.json", tmp_path / "report.md"
    proc = subprocess.run(
        [str(REPO / "tools" / "bench"), "--quick", "--json", str(figures_file),
         "--report", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    document = json.loads(figures_file.read_text())
    assert document["schema"] == 1 and document["mode"] == "quick"
    assert set(document["sections"]) == set(SECTIONS)
    assert all(s["error"] is None for s in document["sections"].values()), document["sections"]
    documented: dict[str, str] = {}
    for name in SECTIONS:
        documented.update(importlib.import_module(f"benchmarks.{name}").KEYS)
    figures = document["figures"]
    assert set(figures) <= set(documented), set(figures) - set(documented)
    missing = [key for key in MEASURED if not isinstance(figures.get(key), int | float)]
    assert not missing, missing
    text = report.read_text()
    assert "## Headline figures" in text and "## Where pvinit loses" in text
    plots = sorted((tmp_path / "benchmarks").glob("*.png"))
    assert {p.name for p in plots} >= {"boot.png", "update_size.png", "footprint.png",
                                       "scale.png", "store.png", "update_time.png"}
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"benchmarks/{plot.name}" in text

"""``tools/bench``'s report and key registry, from given figures (no measuring here)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from benchmarks.__main__ import SECTIONS, documented_keys, main
from benchmarks.context import Section, fmt_bytes, ratio
from benchmarks.published import PUBLISHED
from benchmarks.report import RunInfo, headlines, render_report

KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


def modules() -> dict[str, object]:
    return {name: importlib.import_module(f"benchmarks.{name}") for name in SECTIONS}


def test_every_section_documents_its_keys_under_its_own_prefix() -> None:
    for name, module in modules().items():
        keys: dict[str, str] = getattr(module, "KEYS")  # noqa: B009 - the contract's name
        assert keys, f"{name} documents no keys"
        prefix = {"update_size": "update.", "update_time": "update."}.get(name, f"{name}.")
        for key, meaning in keys.items():
            assert KEY.match(key), key
            assert key.startswith(prefix), f"{name} emits {key}"
            assert meaning.strip(), f"{key} has no meaning"
        assert callable(getattr(module, "run", None)), f"{name} has no run(ctx)"


def test_no_two_sections_claim_the_same_key() -> None:
    seen: dict[str, str] = {}
    for name, module in modules().items():
        for key in getattr(module, "KEYS"):  # noqa: B009
            assert key not in seen, f"{key} in {seen.get(key)} and {name}"
            seen[key] = name


def test_issue_named_keys_are_among_the_documented_ones() -> None:
    keys = documented_keys(modules())  # type: ignore[arg-type]
    for key in ("boot.ratio_vs_lxc_start", "footprint.pss_mb", "update.one_file.bytes.pvinit",
                "update.one_file.bytes.ostree", "update.kernel.bytes.casync",
                "update.rollback_s", "store.fsck_s", "store.gc_s", "scale.supervisor.cpu_percent"):
        assert key in keys


def info(**changes: object) -> RunInfo:
    base: dict[str, object] = {
        "mode": "full", "command": "tools/bench", "wall_s": 600.0,
        "machine": {"cores": 2, "memory_gib": 23.4, "debian": "12.11", "kernel": "6.1",
                    "python": "3.11.2", "lxc": "5.0.2", "ostree": "2022.7"},
        "sections": SECTIONS, "complete": True,
    }
    base.update(changes)
    return RunInfo(**base)  # type: ignore[arg-type]


def test_report_puts_headline_figures_losses_and_every_key_in_the_markdown(
    tmp_path: Path,
) -> None:
    boot = Section("boot", figures={"boot.pvinit_s": 0.3, "boot.reference_s": 0.15,
                                    "boot.ratio_vs_lxc_start": 2.0},
                   losses=["Boot: pvinit 2.00x the lxc-start script (goal 1.2x)."],
                   markdown="### Boot\n\nhow it was measured")
    size = Section("update_size", figures={"update.one_file.bytes.pvinit": 21_504,
                                           "update.one_file.bytes.ostree": 25_088,
                                           "update.one_file.ratio_pvinit_vs_ostree": 0.86,
                                           "update.kernel.bytes.pvinit": None})
    footprint = Section("footprint", figures={"footprint.pss_mb": 17.2,
                                              "footprint.install_mb": 5.5})
    keys = {"boot.pvinit_s": "second boot", "boot.reference_s": "script",
            "boot.ratio_vs_lxc_start": "ratio", "update.one_file.bytes.pvinit": "bytes",
            "update.one_file.bytes.ostree": "bytes", "update.kernel.bytes.pvinit": "bytes",
            "scale.duration_s": "not run"}
    plots = [("Boot", tmp_path / "b" / "boot.png")]
    text = render_report(info(), [boot, size, footprint], keys, plots, tmp_path)
    assert ("| Boot, default state (3 containers), second boot, from launching `pvinit --storage` "
            "| **0.300 s** |") in text
    assert "2.00\u00d7 (pvinit / script)" in text
    assert "21.0 KiB" in text and "24.5 KiB" in text
    assert "- Boot: pvinit 2.00x the lxc-start script (goal 1.2x)." in text
    assert "![Boot](b/boot.png)" in text
    assert "### Boot" in text
    assert "| `update.kernel.bytes.pvinit` | bytes | null |" in text  # measured as missing
    assert "| `scale.duration_s` | not run | \u2014 |" in text  # not in this run at all
    assert ("| Idle memory, PID 1 + supervisor (PSS) | **17.2 MiB** | Atym agent, published |"
            in text)  # a run without the device figure (not root) shows the host's
    footprint.figures["footprint.device_pss_mb"] = 20.1
    text = render_report(info(), [boot, size, footprint], keys, plots, tmp_path)
    assert ("| Idle memory, PID 1 + supervisor (PSS as on a device) | **20.1 MiB** | "
            "Atym agent, published |") in text
    assert "(PSS as read on this host, where other Python processes share" in text
    for figure in PUBLISHED:
        if figure.peer == "Atym agent":
            assert figure.quoted in text  # quoted beside ours, as published


def test_a_failed_or_partial_run_says_so_at_the_top(tmp_path: Path) -> None:
    text = render_report(info(complete=False, sections=("store",),
                              errors={"store": "RuntimeError: disk full"}),
                         [Section("store")], {}, [], tmp_path)
    head = text.split("## ")[0]
    assert "**Partial run**: sections store only." in head
    assert "**Section `store` failed** in this run: `RuntimeError: disk full`." in head


def test_a_run_without_losses_says_pvinit_lost_nothing(tmp_path: Path) -> None:
    text = render_report(info(), [Section("diff", figures={"diff.diff_plan_s": 0.01})],
                         {"diff.diff_plan_s": "s"}, [], tmp_path)
    assert "lost on no measured figure" in text


def test_headlines_leave_out_figures_not_measured() -> None:
    rows = headlines({"boot.pvinit_s": None, "store.ingest.mb_per_s": 600.0,
                      "store.sha256sum.mb_per_s": 360.0,
                      "store.ingest.ratio_vs_sha256sum": 1.67})
    assert [r.what for r in rows] == ["Store ingest"]
    assert rows[0].ratio == "1.67\u00d7"


def test_helpers_round_and_format() -> None:
    assert ratio(1.0, 3.0) == 0.33
    assert ratio(None, 3.0) is None and ratio(1.0, 0) is None
    assert fmt_bytes(512) == "512 B" and fmt_bytes(21_504) == "21.0 KiB"
    assert fmt_bytes(19_713_229) == "18.8 MiB" and fmt_bytes(None) == "n/a"


def test_unknown_section_is_refused_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--only", "boot,nonsense"]) == 2
    assert "unknown section(s) ['nonsense']" in capsys.readouterr().err

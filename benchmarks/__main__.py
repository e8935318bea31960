"""``tools/bench``: every benchmark in one run, its report, its plots, its JSON.

    tools/bench                      # full run (< 20 min on 2 cores): docs/benchmarks.md + plots
    tools/bench --quick              # smaller sizes, 1 run each (< 3 min): build/bench/report.md
    tools/bench --json FILE          # also every figure under its stable key
    tools/bench --only boot,store    # some sections only (the report then says so)

Sections run one after the other (never two at once: they time each other
otherwise), each against its reference measured in the same run.  A section
that fails is reported as failed (with its error) and the others still run;
the exit status is then 1.  See ``benchmarks/context.py`` for the contract.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

from benchmarks.context import REPO, Context, Section, is_root
from benchmarks.machine import describe_machine
from benchmarks.published import PUBLISHED

#: Run order: cheap and root-free first, the long scale run last.
SECTIONS: tuple[str, ...] = (
    "store", "diff", "update_size", "update_time", "boot", "footprint", "scale",
)
#: Sections that need root (namespaces, loop mounts, LXC).
NEEDS_ROOT = frozenset({"update_time", "boot", "footprint", "scale"})
JSON_SCHEMA = 1


def load(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.{name}")


def documented_keys(modules: dict[str, ModuleType]) -> dict[str, str]:
    """Every key any section can emit, with its meaning (the modules' ``KEYS``)."""
    keys: dict[str, str] = {}
    for module in modules.values():
        keys.update(getattr(module, "KEYS", {}))
    return keys


def run_section(name: str, module: ModuleType, ctx: Context) -> tuple[Section, str | None]:
    """Run one section; a failure becomes an error string, never an abort of the whole run."""
    started = time.monotonic()
    ctx.log(f"{name}: start ({'quick' if ctx.quick else 'full'})")
    try:
        section: Section = module.run(ctx)
        error = None
    except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others' figures
        traceback.print_exc()
        section = Section(name)
        error = f"{type(exc).__name__}: {exc}"
    section.seconds = round(time.monotonic() - started, 1)
    undocumented = sorted(set(section.figures) - set(getattr(module, "KEYS", {})))
    if undocumented:
        error = (error + "; " if error else "") + f"undocumented keys {undocumented}"
    ctx.log(f"{name}: {'FAILED ' + error if error else 'done'} in {section.seconds:.0f} s")
    if not ctx.keep:
        shutil.rmtree(ctx.work, ignore_errors=True)
    return section, error


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and one run each (< 3 min)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="write every figure under its stable key to FILE")
    parser.add_argument("--only", metavar="A,B", help=f"sections to run, of {','.join(SECTIONS)}")
    parser.add_argument("--report", type=Path, metavar="FILE",
                        help="markdown report (default: docs/benchmarks.md for a full run of "
                             "every section, build/bench/report.md otherwise)")
    parser.add_argument("--keep", action="store_true", help="keep build/bench/<section> scratch")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = SECTIONS
    if args.only:
        names = tuple(n.strip() for n in args.only.split(",") if n.strip())
        unknown = [n for n in names if n not in SECTIONS]
        if unknown:
            sys.stderr.write(f"tools/bench: unknown section(s) {unknown}; "
                             f"known: {', '.join(SECTIONS)}\n")
            return 2
    if not is_root() and NEEDS_ROOT & set(names):
        sys.stderr.write("tools/bench: sections "
                         f"{sorted(NEEDS_ROOT & set(names))} need root (LXC, namespaces)\n")
        return 2
    complete = set(names) == set(SECTIONS)
    report_path = args.report or (
        REPO / "docs" / "benchmarks.md" if complete and not args.quick
        else REPO / "build" / "bench" / "report.md")
    plots_dir = report_path.parent / "benchmarks"

    modules = {name: load(name) for name in names}
    started = time.monotonic()
    sections: list[Section] = []
    errors: dict[str, str] = {}
    python = REPO / ".venv" / "bin" / "python"
    for name in names:
        work = REPO / "build" / "bench" / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        ctx = Context(repo=REPO, work=work, quick=args.quick, python=python, keep=args.keep)
        section, error = run_section(name, modules[name], ctx)
        sections.append(section)
        if error:
            errors[name] = error
    wall = round(time.monotonic() - started, 1)

    from benchmarks.plots import draw_all
    from benchmarks.report import RunInfo, render_report

    info = RunInfo(
        mode="quick" if args.quick else "full",
        command=" ".join(["tools/bench", *(argv if argv is not None else sys.argv[1:])]),
        wall_s=wall,
        machine=describe_machine(),
        sections=names,
        complete=complete,
        errors=errors,
    )
    plots = draw_all(sections, plots_dir)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render_report(info, sections, documented_keys(modules), plots,
                                         report_path.parent))
    sys.stderr.write(f"bench: report {report_path}, {len(plots)} plot(s) in {plots_dir}\n")
    if args.json:
        document = {
            "schema": JSON_SCHEMA,
            "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mode": info.mode,
            "wall_s": wall,
            "machine": info.machine,
            "figures": {k: v for s in sections for k, v in sorted(s.figures.items())},
            "sections": {s.name: {"seconds": s.seconds, "error": errors.get(s.name),
                                  "losses": s.losses, "notes": s.notes} for s in sections},
            "series": {k: v for s in sections for k, v in s.series.items()},
            "published": [p.to_dict() for p in PUBLISHED],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        sys.stderr.write(f"bench: figures in {args.json}\n")
    sys.stderr.write(f"bench: {len(sections)} section(s) in {wall:.0f} s"
                     + (f", FAILED: {', '.join(errors)}" if errors else "") + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

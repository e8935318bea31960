"""Section "diff": parse, diff and plan an update between two 10,000-object revisions.

What a device does when an update arrives: parse and validate the new state
document, diff it against the running one, and plan the update (objects to
fetch, containers to restart, reboot or not).  Goal (issue 2): diff + plan
< 0.5 s for 10,000 objects.  Both revisions have 200 containers x 50 object
keys plus a ``run.json`` each; the new one changes 5% of the object ids
(half the keys of every tenth container).  Quick mode uses the same sizes:
the pvinit side takes milliseconds.

Reference in the same run: ``ostree diff`` between two commits of an OSTree
``bare-user`` repository holding the same 10,200-file trees (file content a
short distinct string per object, so the same 500 files differ).  It reads
both trees from the repository and includes its process start; compared with
pvinit's parse of the new state + diff, the work a device does before it
knows what changed (the running state is already in memory).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.context import (
    Context,
    Figure,
    Section,
    fmt_s,
    is_root,
    median,
    ratio,
    sh,
    timed,
)
from pvinit.state.diff import diff_states
from pvinit.state.model import State
from pvinit.state.plan import plan_update

GOAL_SECONDS = 0.5
CONTAINERS = 200
KEYS_PER_CONTAINER = 50
CHANGED_EVERY = 10

KEYS: dict[str, str] = {
    "diff.objects": "object keys per revision",
    "diff.changed": "object keys whose id differs between the two revisions",
    "diff.parse_s": "State.from_bytes of the new revision's canonical document (parse+validate), s",
    "diff.diff_s": "diff_states(old, new), s",
    "diff.plan_s": "plan_update(old, new, have), s",
    "diff.diff_plan_s": "diff + plan, s (goal < 0.5)",
    "diff.ostree.diff_s": "ostree diff between two commits of the same trees (process included), s",
    "diff.ratio_vs_ostree": "pvinit parse + diff / ostree diff (lower is better)",
}


def _oid(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _run_json(name: str, c: int) -> dict[str, Any]:
    return {"name": name, "root-volume": "f0000.squashfs", "group": "app",
            "init": ["/bin/app"], "env": {"INDEX": str(c)}}


def _version(c: int, k: int, changed: bool) -> int:
    """1 for the keys the new revision changes: even keys of every tenth container."""
    return 1 if changed and c % CHANGED_EVERY == 0 and k % 2 == 0 else 0


def make_state(changed: bool) -> dict[str, Any]:
    """The old (``changed=False``) or new revision as a state dict of pvinit's model."""
    groups = [
        {"name": "platform", "status_goal": "STARTED", "restart_policy": "system", "timeout": 30},
        {"name": "app", "status_goal": "STARTED", "restart_policy": "container", "timeout": 30},
    ]
    state: dict[str, Any] = {"#spec": "pvinit-state@1", "device.json": {"groups": groups}}
    for c in range(CONTAINERS):
        name = f"app{c:04d}"
        state[f"{name}/run.json"] = _run_json(name, c)
        for k in range(KEYS_PER_CONTAINER):
            state[f"{name}/f{k:04d}.squashfs"] = _oid(f"{name}/{k}/{_version(c, k, changed)}")
    return state


def _write_tree(tree: Path, changed: bool) -> None:
    """The keys as files (content: the string the pvinit id hashes); ``changed``: only the delta."""
    for c in range(CONTAINERS):
        name = f"app{c:04d}"
        directory = tree / name
        if not changed:
            directory.mkdir(parents=True)
            (directory / "run.json").write_text(json.dumps(_run_json(name, c), sort_keys=True))
        for k in range(KEYS_PER_CONTAINER):
            version = _version(c, k, changed)
            if changed and not version:
                continue  # unchanged file: the new commit takes it from the old one
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"f{k:04d}.squashfs").write_text(f"{name}/{k}/{version}")


@contextlib.contextmanager
def _scratch(ctx: Context) -> Iterator[Path]:
    """A tmpfs under ``ctx.work`` when root: 20,000 small files are written and deleted
    in a fraction of the seconds ext4 takes on this shared disk (the timed ``ostree diff``
    reads warm pages either way).  Falls back to ``ctx.work`` itself."""
    mount = ctx.work / "tmpfs"
    mount.mkdir(parents=True, exist_ok=True)
    mounted = is_root() and sh(["mount", "-t", "tmpfs", "-o", "size=512m,mode=0700",
                                "pvbench-diff", str(mount)], check=False).returncode == 0
    try:
        yield mount
    finally:
        if mounted:
            sh(["umount", str(mount)], check=False)
        if not ctx.keep or not mounted:
            shutil.rmtree(mount, ignore_errors=True)


def _ostree(ctx: Context, expected_changes: int) -> float:
    """Median wall time of ``ostree diff`` between commits of the old and new trees."""
    with _scratch(ctx) as scratch:
        return _ostree_in(ctx, scratch, expected_changes)


def _ostree_in(ctx: Context, scratch: Path, expected_changes: int) -> float:
    repo = scratch / "repo"
    sh(["ostree", "init", f"--repo={repo}", "--mode=bare-user"])
    commits = []
    for changed in (False, True):
        # the new commit is the old one overlaid with the changed files
        tree = scratch / ("delta" if changed else "tree")
        _write_tree(tree, changed)
        base = ["--tree=ref=bench"] if changed else []
        done = sh(["ostree", "commit", f"--repo={repo}", "--branch=bench", *base,
                   f"--tree=dir={tree}", "--subject=bench", "--fsync=false",
                   "--timestamp=2026-11-22T00:00:00Z"])
        commits.append(done.stdout.strip())
    files = sum(1 for line in sh(["ostree", "ls", "-R", f"--repo={repo}", commits[1]])
                .stdout.splitlines() if line.startswith("-"))
    if files != CONTAINERS * (KEYS_PER_CONTAINER + 1):
        raise RuntimeError(f"the new OSTree commit holds {files} files, not the state's")
    argv = ["ostree", "diff", f"--repo={repo}", *commits]
    lines = sh(argv).stdout.splitlines()
    if len(lines) != expected_changes:
        raise RuntimeError(f"ostree diff listed {len(lines)} changes, not {expected_changes}")
    return median([timed(lambda: sh(argv)) for _ in range(ctx.runs(7, 3))])


def run(ctx: Context) -> Section:
    section = Section("diff")
    started = time.perf_counter()
    figures: dict[str, Figure] = dict.fromkeys(KEYS)
    ctx.work.mkdir(parents=True, exist_ok=True)
    old = State.from_dict(make_state(False))
    new_bytes = State.from_dict(make_state(True)).canonical_bytes()
    new = State.from_bytes(new_bytes)
    have = old.object_ids().__contains__
    diff = diff_states(old, new)
    plan = plan_update(old, new, have)
    runs = ctx.runs(7, 3)
    parse_s = median([timed(lambda: State.from_bytes(new_bytes)) for _ in range(runs)])
    diff_s = median([timed(lambda: diff_states(old, new)) for _ in range(runs)])
    plan_s = median([timed(lambda: plan_update(old, new, have)) for _ in range(runs)])
    figures["diff.objects"] = len(new.objects)
    figures["diff.changed"] = len(diff.changed)
    figures["diff.parse_s"] = round(parse_s, 4)
    figures["diff.diff_s"] = round(diff_s, 4)
    figures["diff.plan_s"] = round(plan_s, 4)
    figures["diff.diff_plan_s"] = round(diff_s + plan_s, 4)
    ostree_s: float | None = None
    if shutil.which("ostree") is None:
        section.notes.append("ostree diff not measured: ostree is not installed")
    else:
        try:
            ostree_s = _ostree(ctx, len(diff.changed))
        except (OSError, RuntimeError) as error:
            section.notes.append(f"ostree diff not measured: {error}")
        finally:
            if not ctx.keep:
                shutil.rmtree(ctx.work, ignore_errors=True)
    if ostree_s is not None:
        figures["diff.ostree.diff_s"] = round(ostree_s, 4)
        figures["diff.ratio_vs_ostree"] = ratio(parse_s + diff_s, ostree_s)

    section.figures = figures
    rows = [
        "### State diff and update plan",
        "",
        f"Two revisions of {len(new.objects):,} object keys each ({CONTAINERS} containers x "
        f"{KEYS_PER_CONTAINER} keys + a `run.json` each); the new one changes "
        f"{len(diff.changed):,} object ids (half the keys of every {CHANGED_EVERY}th "
        f"container). The plan fetches {len(plan.objects_to_fetch):,} objects, restarts "
        f"{len(plan.containers_to_start)} containers, reboot: {plan.reboot}. In-process "
        f"timings, median of {runs} runs: `State.from_bytes` of the new canonical state "
        "document (parse + validate), `diff_states`, `plan_update`. Reference: `ostree diff` "
        "between two commits of a `bare-user` repository holding the same trees as files "
        "(same 10,200 paths, the same files differ), median of "
        f"{runs} runs; it loads both trees from the repository and includes its process "
        "start, so it is compared with pvinit's parse + diff.",
        "",
        "| figure | pvinit | `ostree diff` | goal |",
        "| --- | --- | --- | --- |",
        f"| parse + validate the new state | {fmt_s(parse_s)} | | |",
        f"| diff | {fmt_s(diff_s)} | | |",
        f"| plan | {fmt_s(plan_s)} | | |",
        f"| diff + plan | **{fmt_s(diff_s + plan_s)}** | | < {GOAL_SECONDS} s |",
        f"| parse + diff vs `ostree diff` | {fmt_s(parse_s + diff_s)} | {fmt_s(ostree_s)} "
        f"| ratio **{figures['diff.ratio_vs_ostree'] or 'n/a'}** |",
        "",
    ]
    rows.extend(f"- Not measured: {note}" for note in section.notes)
    section.markdown = "\n".join(rows) + ("\n" if section.notes else "")
    if diff_s + plan_s >= GOAL_SECONDS:
        section.losses.append(
            f"State diff + plan of two {len(new.objects):,}-object revisions takes "
            f"{fmt_s(diff_s + plan_s)}, goal < {GOAL_SECONDS} s missed.")
    if ostree_s is not None and parse_s + diff_s > ostree_s:
        section.losses.append(
            f"State parse + diff of {len(new.objects):,} objects: pvinit takes "
            f"{fmt_s(parse_s + diff_s)}, ostree diff {fmt_s(ostree_s)} "
            f"({(parse_s + diff_s) / ostree_s:.1f}x slower).")
    section.seconds = round(time.perf_counter() - started, 1)
    return section

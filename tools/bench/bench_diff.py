#!/usr/bin/env python3
"""Benchmark: parse, diff and plan two revisions of 10,000 object keys each.

200 containers x 50 keys (50 objects each, plus a run.json); the new revision
changes 5% of the object ids, spread over every tenth container.  Reports the
best of several runs for ``State.from_dict`` (parsing + validation of one
revision), ``diff_states`` and ``plan_update``.  Goal: diff + plan < 0.5 s.

    .venv/bin/python tools/bench/bench_diff.py [--containers 200] [--keys 50] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pvinit.state.diff import diff_states
from pvinit.state.model import State
from pvinit.state.plan import plan_update

GOAL_SECONDS = 0.5


def _oid(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_state(containers: int, keys: int, changed_every: int = 0) -> dict[str, Any]:
    """A revision of ``containers`` x ``keys`` keys; ``changed_every`` > 0 changes some ids."""
    groups = [
        {"name": "platform", "status_goal": "STARTED", "restart_policy": "system", "timeout": 30},
        {"name": "app", "status_goal": "STARTED", "restart_policy": "container", "timeout": 30},
    ]
    state: dict[str, Any] = {"#spec": "pvinit-state@1", "device.json": {"groups": groups}}
    for c in range(containers):
        name = f"app{c:04d}"
        state[f"{name}/run.json"] = {
            "name": name,
            "root-volume": "f0000.squashfs",
            "group": "app",
            "init": ["/bin/app"],
            "env": {"INDEX": str(c)},
        }
        for k in range(keys):
            version = 1 if changed_every and c % changed_every == 0 and k % 2 == 0 else 0
            state[f"{name}/f{k:04d}.squashfs"] = _oid(f"{name}/{k}/{version}")
    return state


def best_of(runs: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--keys", type=int, default=50, help="object keys per container")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)

    old_dict = make_state(args.containers, args.keys)
    new_dict = make_state(args.containers, args.keys, changed_every=10)
    old = State.from_dict(old_dict)
    new = State.from_dict(new_dict)
    have = old.object_ids().__contains__

    diff = diff_states(old, new)
    plan = plan_update(old, new, have)
    parse_s = best_of(args.runs, lambda: State.from_dict(new_dict))
    diff_s = best_of(args.runs, lambda: diff_states(old, new))
    plan_s = best_of(args.runs, lambda: plan_update(old, new, have))
    results = {
        "benchmark": "state diff + plan",
        "keys_per_state": len(new.objects),
        "containers": len(new.containers),
        "changed_keys": len(diff.changed),
        "objects_to_fetch": len(plan.objects_to_fetch),
        "containers_restarted": len(plan.containers_to_start),
        "reboot": plan.reboot,
        "parse_seconds": round(parse_s, 4),
        "diff_seconds": round(diff_s, 4),
        "plan_seconds": round(plan_s, 4),
        "diff_plus_plan_seconds": round(diff_s + plan_s, 4),
        "goal_seconds": GOAL_SECONDS,
        "python": sys.version.split()[0],
    }
    for name, value in results.items():
        print(f"{name:24} {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0 if diff_s + plan_s < GOAL_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark the disk object store against ``sha256sum`` on the same machine, same run.

    python tools/bench/bench_store.py [--size-mib 1024] [--objects 10000] [--json FILE]

Ingest of one big file (the squashfs images a release engineer adds) is
compared with ``sha256sum`` reading the same file: the target is a ratio of
at least 0.8, i.e. storing durably costs little more than hashing.  Each side
is the best of ``--repeat`` runs, each ``add_file`` into a fresh store so the
object is new and pays its fsync.  Then ``--objects`` small objects are added,
fsck'd and half of them collected.  Page cache is not dropped: both sides read
a warm file, which is what makes them comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pvinit.objects import DiskObjectStore

MIB = 1 << 20


def best_of(repeat: int, run: Callable[[], object]) -> tuple[float, object]:
    """Fastest wall time of ``repeat`` runs, and the last run's result."""
    best = float("inf")
    result: object = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def make_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        left = size
        while left:
            chunk = min(left, 16 * MIB)
            handle.write(os.urandom(chunk))
            left -= chunk


def bench_ingest(work: Path, size_mib: int, repeat: int) -> dict[str, float | str]:
    source = work / "input.bin"
    make_random_file(source, size_mib * MIB)

    def sha256sum() -> str:
        done = subprocess.run(["sha256sum", str(source)], check=True,
                              capture_output=True, text=True)
        return done.stdout.split()[0]

    def add_new() -> str:
        root = work / "store"
        if root.exists():
            shutil.rmtree(root)
        return DiskObjectStore.create(root).add_file(source)

    sha_time, sha_id = best_of(repeat, sha256sum)
    add_time, add_id = best_of(repeat, add_new)
    assert sha_id == add_id, f"ids differ: sha256sum {sha_id}, store {add_id}"
    store = DiskObjectStore(work / "store")
    readd_time, _ = best_of(repeat, lambda: store.add_file(source))
    shutil.rmtree(work / "store")
    source.unlink()
    mb = size_mib * MIB / 1e6
    return {
        "size_mib": size_mib,
        "sha256sum_s": sha_time,
        "sha256sum_mb_s": mb / sha_time,
        "add_file_s": add_time,
        "add_file_mb_s": mb / add_time,
        "ratio": sha_time / add_time,
        "readd_existing_s": readd_time,
        "object_id": str(add_id),
    }


def bench_many(work: Path, count: int) -> dict[str, float | str]:
    store = DiskObjectStore.create(work / "many")
    payloads = [os.urandom(4096) for _ in range(count)]
    started = time.perf_counter()
    ids = [store.add_bytes(data) for data in payloads]
    add_time = time.perf_counter() - started
    fsck_time, report = best_of(1, store.fsck)
    assert getattr(report, "clean", False), report
    gc_time, gc_report = best_of(1, lambda: store.gc(ids[: count // 2]))
    assert store.stats().count == count // 2, gc_report
    shutil.rmtree(work / "many")
    return {
        "objects": count,
        "add_small_s": add_time,
        "add_small_per_s": count / add_time,
        "fsck_s": fsck_time,
        "gc_half_s": gc_time,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--objects", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to work (default: a new temp dir; pick the store's filesystem)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if shutil.which("sha256sum") is None:
        print("sha256sum not found (coreutils)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    try:
        ingest = bench_ingest(work, args.size_mib, args.repeat)
        many = bench_many(work, args.objects)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"| store ingest {ingest['size_mib']} MiB | sha256sum {ingest['sha256sum_mb_s']:.0f} MB/s"
        f" | add_file {ingest['add_file_mb_s']:.0f} MB/s | ratio {ingest['ratio']:.2f}"
        f" (target >= 0.80) | re-add existing {ingest['readd_existing_s']:.2f} s |"
    )
    print(
        f"| store {many['objects']} x 4 KiB objects | add {many['add_small_per_s']:.0f}/s"
        f" | fsck {many['fsck_s']:.2f} s | gc half {many['gc_half_s']:.2f} s |"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"ingest": ingest, "many": many}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

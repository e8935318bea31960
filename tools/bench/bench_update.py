#!/usr/bin/env python3
"""Benchmark (issue 4): bytes on the wire for an update, pvinit vs OSTree vs casync.

Builds a deterministic ~48 MB root filesystem (busybox, real shared
libraries from /usr/lib, seeded random and text files) and variants of it:

(a) ONE file changed; (b) ~5% of the files changed (a "library upgrade":
bytes patched and shifted); (c) a new container added (the device has
none of it; pvinit ships the whole new squashfs compressed).

For each, it measures what a device holding the old version downloads:

- pvinit: the zstd patch-from delta between the two squashfs images
  (exactly what ``pvstate publish`` writes to ``deltas/``), or for (c) the
  zstd frame of the new squashfs (``objects/<id>``);
- the whole new squashfs, raw and zstd-compressed (no delta at all);
- OSTree: ``static-delta generate --from A --to B`` of two commits in an
  archive repository (size of the delta directory);
- casync with 64 KiB average chunks: the chunks of B's store not already
  in A's, plus B's index.

Goals: pvinit <= ostree, and whole squashfs / pvinit >= 100 for (a).
Needs ``mksquashfs``, ``ostree`` and ``casync`` (apt-get install
squashfs-tools ostree casync)::

    .venv/bin/python tools/bench/bench_update.py [--size-mb 48] [--json FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zstandard

from pvinit.build.squashfs import make_squashfs
from pvinit.remote.delta import make_delta

SEED = 4
LIB_DIR = Path("/usr/lib/x86_64-linux-gnu")
WORDS = [
    "device", "sensor", "update", "revision", "container", "object", "delta", "state", "kernel",
    "module", "firmware", "rollback", "commit", "signature", "channel", "network", "volume",
    "config", "service", "log", "error", "warning", "info", "debug", "timeout", "retry", "value",
    "table", "index",
]


# -- building the trees ---------------------------------------------------------
def _real_libraries(budget: int, *, from_end: bool = False) -> list[Path]:
    """Regular .so files from /usr/lib, sorted by name (or from the end), until ``budget``."""
    chosen, total = [], 0
    for path in sorted(LIB_DIR.rglob("*.so*"), reverse=from_end):
        if path.is_symlink() or not path.is_file():
            continue
        size = path.stat().st_size
        if size > 4 << 20 or size < 4096:
            continue
        chosen.append(path)
        total += size
        if total >= budget:
            break
    return chosen


def _text(rng: random.Random, size: int) -> bytes:
    lines, total = [], 0
    while total < size:
        line = f"{rng.randrange(100000):05} " + " ".join(rng.choice(WORDS) for _ in range(9))
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()


def build_tree(root: Path, size_mb: int, rng: random.Random, *, prefix: str = "") -> None:
    """busybox + ~45% real libraries + ~15% random + ~35% text files."""
    budget = size_mb << 20
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "usr/lib", "usr/share/doc",
              "var/lib/data"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "ls", "cat", "sleep", "mount"):
        (root / "bin" / applet).symlink_to("busybox")
    libs = _real_libraries(budget * 45 // 100, from_end=bool(prefix))
    for lib in libs:
        shutil.copy(lib, root / "usr/lib" / f"{prefix}{lib.name}")
    used = sum((root / "usr/lib" / f"{prefix}{lib.name}").stat().st_size for lib in libs)
    random_budget = budget * 15 // 100
    done = 0
    i = 0
    while done < random_budget:
        size = rng.randrange(4 << 10, 256 << 10)
        (root / "var/lib/data" / f"{prefix}blob{i:04}.bin").write_bytes(rng.randbytes(size))
        done += size
        i += 1
    text_budget = max(0, budget - used - done)
    done, i = 0, 0
    while done < text_budget:
        size = rng.randrange(1 << 10, 64 << 10)
        (root / "usr/share/doc" / f"{prefix}doc{i:04}.txt").write_bytes(_text(rng, size))
        done += size
        i += 1
    (root / "etc" / "hostname").write_text("device\n")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def change_one_file(root: Path) -> str:
    """Edit one mid-size text file: one line replaced (a config or script update)."""
    docs = sorted((root / "usr/share/doc").iterdir())
    target = docs[len(docs) // 2]
    lines = target.read_bytes().split(b"\n")
    lines[len(lines) // 2] = b"00000 this line was changed by the update"
    target.write_bytes(b"\n".join(lines))
    return str(target.relative_to(root))


def change_many_files(root: Path, rng: random.Random, fraction: float = 0.05) -> int:
    """A "library upgrade": ~5% of files get patched regions and a shifting insertion."""
    files = [p for p in _files(root) if p.name != "busybox"]
    chosen = rng.sample(files, max(1, int(len(files) * fraction)))
    for path in chosen:
        data = bytearray(path.read_bytes())
        for offset in range(0, len(data), 64 << 10):
            at = offset + rng.randrange(0, max(1, min(64 << 10, len(data) - offset)))
            data[at:at + 256] = rng.randbytes(min(256, len(data) - at))
        insert_at = rng.randrange(0, max(1, len(data)))
        data[insert_at:insert_at] = rng.randbytes(rng.randrange(16, 512))
        path.write_bytes(bytes(data))
    return len(chosen)


# -- measuring ------------------------------------------------------------------
def _run(argv: list[str], **kwargs: Any) -> str:
    result = subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)
    return str(result.stdout)


def dir_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def zstd_size(path: Path) -> int:
    cctx = zstandard.ZstdCompressor(level=19, write_content_size=True)
    return len(cctx.compress(path.read_bytes()))


def ostree_delta(work: Path, old: Path, new: Path, name: str) -> int:
    repo = work / f"ostree-{name}"
    _run(["ostree", "init", f"--repo={repo}", "--mode=archive"])
    commits = []
    for label, tree in (("old", old), ("new", new)):
        out = _run(["ostree", "commit", f"--repo={repo}", f"--branch={label}",
                    "--owner-uid=0", "--owner-gid=0", "--timestamp=2024-01-01T00:00:00Z",
                    f"--subject={label}", f"--tree=dir={tree}"])
        commits.append(out.strip())
    _run(["ostree", "static-delta", "generate", f"--repo={repo}",
          f"--from={commits[0]}", f"--to={commits[1]}"])
    return dir_bytes(repo / "deltas")


def casync_bytes(work: Path, old: Path, new: Path, name: str) -> int:
    store = work / f"casync-{name}.castr"
    chunk = "--chunk-size=65536"
    _run(["casync", "make", chunk, f"--store={store}", str(work / f"{name}-old.caidx"), str(old)])
    before = {p.name: p.stat().st_size for p in store.rglob("*.cacnk")}
    index = work / f"{name}-new.caidx"
    _run(["casync", "make", chunk, f"--store={store}", str(index), str(new)])
    after = {p.name: p.stat().st_size for p in store.rglob("*.cacnk")}
    return sum(size for chunk_id, size in after.items() if chunk_id not in before) + \
        index.stat().st_size


def measure(work: Path, name: str, old: Path | None, new: Path) -> dict[str, Any]:
    """Every contender's bytes for moving a device from ``old`` (None: nothing) to ``new``."""
    started = time.monotonic()
    new_sq = work / f"{name}-new.squashfs"
    make_squashfs(new, new_sq)
    row: dict[str, Any] = {"scenario": name, "squashfs_raw": new_sq.stat().st_size,
                           "squashfs_zstd": zstd_size(new_sq)}
    if old is None:
        empty = work / f"{name}-empty"
        empty.mkdir()
        row["pvinit"] = row["squashfs_zstd"]
        row["pvinit_how"] = "whole object (zstd)"
        old = empty
    else:
        old_sq = work / f"{name}-old.squashfs"
        make_squashfs(old, old_sq)
        delta = make_delta(old_sq.read_bytes(), new_sq.read_bytes())
        row["pvinit"] = min(len(delta), row["squashfs_zstd"])
        row["pvinit_how"] = "delta" if len(delta) < row["squashfs_zstd"] else "whole object"
    row["ostree"] = ostree_delta(work, old, new, name)
    row["casync"] = casync_bytes(work, old, new, name)
    row["seconds"] = round(time.monotonic() - started, 1)
    return row


def _fmt(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 10 << 20 else f"{n / (1 << 20):,.1f} MiB"


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ("scenario", "pvinit", "ostree", "casync", "squashfs_zstd", "squashfs_raw")
    print("| " + " | ".join(cols) + " | squashfs/pvinit | ostree/pvinit |")
    print("|" + "---|" * (len(cols) + 2))
    for row in rows:
        cells = [row["scenario"]] + [_fmt(row[c]) for c in cols[1:]]
        cells += [f"{row['squashfs_raw'] / row['pvinit']:.0f}x",
                  f"{row['ostree'] / row['pvinit']:.2f}"]
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=48, help="size of the rootfs tree")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args(argv)
    for tool in ("mksquashfs", "ostree", "casync"):
        if shutil.which(tool) is None and not Path(f"/usr/bin/{tool}").exists():
            print(f"needs {tool} (apt-get install squashfs-tools ostree casync)", file=sys.stderr)
            return 10
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-update-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rng = random.Random(SEED)  # noqa: S311 - deterministic benchmark data, not secrets
        tree_a = work / "treeA"
        build_tree(tree_a, args.size_mb, rng)
        tree_b = work / "treeB"
        shutil.copytree(tree_a, tree_b, symlinks=True)
        changed = change_one_file(tree_b)
        tree_b2 = work / "treeB2"
        shutil.copytree(tree_a, tree_b2, symlinks=True)
        many = change_many_files(tree_b2, rng)
        tree_c = work / "treeC"
        build_tree(tree_c, max(4, args.size_mb // 3), rng, prefix="new-")
        rows = [
            {**measure(work, "a-one-file", tree_a, tree_b), "changed": changed},
            {**measure(work, "b-5pct-files", tree_a, tree_b2), "changed": f"{many} files"},
            {**measure(work, "c-new-container", None, tree_c), "changed": "new container"},
        ]
        tree_bytes = dir_bytes(tree_a)
        print(f"tree A: {_fmt(tree_bytes)} in {len(_files(tree_a))} files; "
              f"kernel scenario (d) skipped (no kernel image pair to compare cheaply)")
        print_table(rows)
        first = rows[0]
        goals = {"pvinit_le_ostree": first["pvinit"] <= first["ostree"],
                 "squashfs_over_pvinit_ge_100": first["squashfs_raw"] / first["pvinit"] >= 100}
        print(f"goals (a): pvinit <= ostree: {goals['pvinit_le_ostree']}; "
              f"whole squashfs / pvinit >= 100: {goals['squashfs_over_pvinit_ge_100']}")
        if args.json is not None:
            args.json.write_text(json.dumps(
                {"size_mb": args.size_mb, "tree_bytes": tree_bytes, "seed": SEED,
                 "rows": rows, "goals": goals}, indent=2, sort_keys=True) + "\n")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

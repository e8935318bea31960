"""Update size: bytes a device downloads for four kinds of update, pvinit vs OSTree vs casync.

The cases (built by :mod:`benchmarks.trees`):

- ``one_file``: one line of one text file of a ~50 MiB container rootfs changes;
- ``library``: a library upgrade, ~5% of that rootfs' files patched and shifted;
- ``new_container``: a second container (a third of the size) is added;
- ``kernel``: the BSP moves between two real consecutive Debian cloud kernels
  (kernel image + modules squashfs + firmware squashfs, as ``bsp/gather.py``
  builds them).

pvinit's figure is what its own code ships: a real ``pvstate`` checkout
commits and signs both revisions, ``pvstate publish`` writes them to a
repository directory (objects as zstd frames, ``deltas/`` where a zstd
patch-from delta is smaller), and pvinit's device-side fetcher
(:class:`pvinit.transport.remote.RemoteRepository` over a ``FileFetcher``)
brings a store holding the old revision's objects to the new revision,
counting ``bytes_on_wire`` exactly as the update engine journals it; the
channel envelope and the compressed state object the device reads first are
added.  "whole" is the same download without ``deltas/``: the changed
objects' zstd frames plus the same metadata, what a content-addressed store
without deltas ships.

OSTree and casync get the same change as file trees (a container is its
rootfs directory under ``containers/<name>/``, the BSP is ``boot/vmlinuz-*``
+ ``lib/modules`` + ``lib/firmware``): OSTree's figure is the
``static-delta generate --from OLD --to NEW`` directory of an archive repo;
casync's is the chunks (64 KiB average) of the new index that the old
store lacks, plus the new index.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pvinit.checkout.checkout import Checkout
from pvinit.objects.disk import DiskObjectStore
from pvinit.remote import layout
from pvinit.transport.fetcher import FileFetcher
from pvinit.transport.remote import ObjectWant, RemoteRepository

from . import trees
from .context import Context, Figure, Section, fmt_bytes, ratio, sh

SECTION = "update_size"
CASES = ("one_file", "library", "new_container", "kernel")
CONTENDERS = ("pvinit", "ostree", "casync", "whole")
SEED = 4
CASYNC_CHUNK = 65536

KEYS: dict[str, str] = {}
for _case in CASES:
    KEYS[f"update.{_case}.bytes.pvinit"] = (
        f"{_case}: bytes pvinit's fetcher downloads from a `pvstate publish` repository "
        "(deltas where published, else zstd objects; + channel envelope and state), bytes")
    KEYS[f"update.{_case}.bytes.ostree"] = (
        f"{_case}: size of the OSTree static delta old->new commit (archive repo), bytes")
    KEYS[f"update.{_case}.bytes.casync"] = (
        f"{_case}: casync chunks (64 KiB avg) of the new index missing from the old store "
        "+ the new index, bytes")
    KEYS[f"update.{_case}.bytes.whole"] = (
        f"{_case}: the changed objects' zstd frames + the same metadata, no deltas, bytes")
    KEYS[f"update.{_case}.ratio_whole_vs_pvinit"] = (
        f"{_case}: bytes.whole / bytes.pvinit (what deltas save; >1 is better)")
    KEYS[f"update.{_case}.ratio_pvinit_vs_ostree"] = (
        f"{_case}: bytes.pvinit / bytes.ostree (<1: pvinit ships less)")
KEYS["update.rootfs_mb"] = "size of the container rootfs tree of cases one_file/library, MiB"

LABELS = {
    "one_file": "(a) one file changed",
    "library": "(b) library upgrade, ~5% of files",
    "new_container": "(c) new container added",
    "kernel": "(d) kernel update (BSP)",
}


@dataclass
class Inputs:
    """The trees every contender is given (see :mod:`benchmarks.trees`)."""

    size_mb: float
    #: Container rootfs: A (old), B (one file changed), B2 (library upgrade), C (new container).
    a: Path
    b: Path
    b2: Path
    c: Path
    #: What changed, for the table: file name of (a), "N of M files" for (b).
    changes: dict[str, str]
    files: int
    #: File trees for the peers: "old", one per case, "kernel-old", "kernel-new".
    dev: dict[str, Path]
    kernels: tuple[trees.KernelBsp, trees.KernelBsp] | None = None


# -- pvinit: a real checkout, a real publish, the device's own fetcher --------------
@dataclass
class Shipped:
    """What a device on the old revision downloads to reach the new one."""

    pvinit: int
    whole: int
    metadata: int
    #: Per fetched object: (key, raw size, bytes on the wire, via a delta?).
    objects: list[tuple[str, int, int, bool]] = field(default_factory=list)


class Release:
    """A ``pvstate`` checkout with a signing key; revisions are published by ``pvstate``."""

    def __init__(self, ctx: Context, top: Path) -> None:
        self.ctx = ctx
        self.top = top
        self.co = top / "state"
        top.mkdir(parents=True, exist_ok=True)
        self.pvstate("init", str(self.co), "--objects", str(top / "objects"))
        self.pvstate("keygen", str(top / "release"))
        self.key = top / "release.key"

    def pvstate(self, *argv: str) -> str:
        return sh([self.ctx.tool("pvstate"), *argv]).stdout

    def edit(self, *argv: str) -> None:
        self.pvstate("-C", str(self.co), *argv)

    def commit(self, message: str) -> int:
        self.edit("commit", "-m", message, "--allow-empty")
        number = max(Checkout(self.co).revisions.numbers())
        self.edit("sign", str(number), "--key", str(self.key))
        return number

    def publish(self, number: int, repo: Path, *, level: int | None = None) -> None:
        """``pvstate publish``; ``level`` only for revisions the device already holds."""
        extra = [] if level is None else ["--level", str(level)]
        self.edit("publish", str(number), "--to", str(repo), "--channel", "stable", *extra)

    def shipped(self, repo: Path, old: int, new: int, scratch: Path) -> Shipped:
        """Fetch revision ``new`` from ``repo`` into a store holding revision ``old``'s objects.

        Uses the device's fetcher (delta against the object at the same key,
        whole object when no delta was published) and checks the result: a
        delta that did not rebuild its object would fall back to the whole
        object and be counted as such, as on a device.
        """
        checkout = Checkout(self.co)
        old_rev, new_rev = checkout.revisions.load(old), checkout.revisions.load(new)
        store = DiskObjectStore.create(scratch / "objects")
        for object_id in old_rev.state.object_ids():
            with checkout.store.open(object_id) as stream:
                store.add_stream(stream, expected_id=object_id)
        remote = RemoteRepository(str(repo), FileFetcher())
        envelope_bytes = remote.channel("stable")
        state_frame = (repo / layout.object_path(new_rev.envelope.state)).stat().st_size
        metadata = len(envelope_bytes) + state_frame
        result = Shipped(pvinit=metadata, whole=metadata, metadata=metadata)
        seen: set[str] = set()
        for key, object_id in sorted(new_rev.state.objects.items()):
            if store.contains(object_id) or object_id in seen:
                continue
            seen.add(object_id)
            want = ObjectWant(id=object_id, size=new_rev.envelope.sizes[object_id],
                              base_id=old_rev.state.objects.get(key))
            got = remote.fetch_object(want, store, workdir=scratch / "downloads")
            assert store.contains(object_id)
            full = (repo / layout.object_path(object_id)).stat().st_size
            result.pvinit += got.bytes_on_wire
            result.whole += full
            result.objects.append((key, want.size, got.bytes_on_wire, got.via_delta))
        shutil.rmtree(scratch, ignore_errors=True)
        return result


def pvinit_containers(ctx: Context, work: Path, inputs: Inputs) -> dict[str, Shipped]:
    """Cases (a)(b)(c) from one checkout, each published to its own repository.

    Revision 1 (container ``app`` = tree A) goes to three repositories; then
    each case's revision is published to its own one, so its deltas are
    against revision 1 only, the revision the device holds.  Revision 1 is
    published at zstd level 1 (the device already has it: nothing of it is
    counted); the measured revisions use ``pvstate publish``'s default level.
    """
    a, b, b2, c = inputs.a, inputs.b, inputs.b2, inputs.c
    rel = Release(ctx, work / "pv-containers")
    rel.edit("container", "add", "app", "--from", str(a), "--init", "/bin/sh")
    one = rel.commit("one")
    repos = {case: work / f"repo-{case}" for case in ("one_file", "library", "new_container")}
    for repo in repos.values():
        rel.publish(one, repo, level=1)
    out: dict[str, Shipped] = {}
    rel.edit("container", "add", "app", "--from", str(b), "--init", "/bin/sh", "--replace")
    two = rel.commit("one file changed")
    rel.publish(two, repos["one_file"])
    out["one_file"] = rel.shipped(repos["one_file"], one, two, work / "fetch-one_file")
    rel.edit("container", "add", "app", "--from", str(b2), "--init", "/bin/sh", "--replace")
    three = rel.commit("library upgrade")
    rel.publish(three, repos["library"])
    out["library"] = rel.shipped(repos["library"], one, three, work / "fetch-library")
    rel.edit("checkout", str(one))
    rel.edit("container", "add", "new", "--from", str(c), "--init", "/bin/sh")
    four = rel.commit("new container")
    rel.publish(four, repos["new_container"])
    out["new_container"] = rel.shipped(repos["new_container"], one, four,
                                       work / "fetch-new_container")
    return out


def pvinit_kernel(ctx: Context, work: Path, old: trees.KernelBsp,
                  new: trees.KernelBsp) -> Shipped:
    """Case (d): a checkout whose revisions differ in the BSP only (``pvstate bsp set``)."""
    rel = Release(ctx, work / "pv-kernel")
    repo = work / "repo-kernel"

    def bsp(k: trees.KernelBsp) -> None:
        parts = k.objects()
        rel.edit("bsp", "set", "--kernel", str(parts["kernel.img"]),
                 "--modules", str(parts["modules.squashfs"]),
                 "--firmware", str(parts["firmware.squashfs"]))

    bsp(old)
    one = rel.commit(old.label)
    rel.publish(one, repo, level=1)
    bsp(new)
    two = rel.commit(new.label)
    rel.publish(two, repo)
    return rel.shipped(repo, one, two, work / "fetch-kernel")


# -- peers ---------------------------------------------------------------------------
def ostree_bytes(work: Path, name: str, old: Path, news: dict[str, Path]) -> dict[str, int]:
    """Size of the OSTree static delta from a commit of ``old`` to a commit of each new tree.

    One archive repository per call, so ``old`` is committed once; each
    delta is generated into its own directory under ``deltas/``, and its size
    is what that directory grew by.
    """
    repo = work / f"ostree-{name}"
    sh(["ostree", "init", f"--repo={repo}", "--mode=archive"])

    def commit(label: str, tree: Path) -> str:
        return sh(["ostree", "commit", f"--repo={repo}", f"--branch={label}",
                   "--owner-uid=0", "--owner-gid=0", "--timestamp=2024-01-01T00:00:00Z",
                   f"--subject={label}", f"--tree=dir={tree}"]).stdout.strip()

    base = commit("old", old)
    sizes: dict[str, int] = {}
    for label, tree in news.items():
        target = commit(label, tree)
        before = trees.dir_bytes(repo / "deltas") if (repo / "deltas").exists() else 0
        sh(["ostree", "static-delta", "generate", f"--repo={repo}",
            f"--from={base}", f"--to={target}"])
        sizes[label] = trees.dir_bytes(repo / "deltas") - before
    return sizes


def casync_bytes(work: Path, name: str, old: Path, new: Path) -> int:
    """casync chunks of ``new`` that a store made from ``old`` lacks, plus ``new``'s index."""
    store = work / f"casync-{name}.castr"
    chunk = f"--chunk-size={CASYNC_CHUNK}"
    sh(["casync", "make", chunk, f"--store={store}", str(work / f"casync-{name}-old.caidx"),
        str(old)])
    before = {p.name for p in store.rglob("*.cacnk")}
    index = work / f"casync-{name}-new.caidx"
    sh(["casync", "make", chunk, f"--store={store}", str(index), str(new)])
    after = {p.name: p.stat().st_size for p in store.rglob("*.cacnk")}
    return sum(size for chunk_id, size in after.items() if chunk_id not in before) + \
        index.stat().st_size


# -- the section ---------------------------------------------------------------------
def _device_tree(root: Path, containers: dict[str, Path]) -> Path:
    """``root/containers/<name>`` hard-linked to each rootfs (a device's files, for peers)."""
    (root / "containers").mkdir(parents=True)
    for name, tree in containers.items():
        subprocess.run(["cp", "-al", str(tree), str(root / "containers" / name)], check=True)
    return root


def _missing_tools() -> list[str]:
    return [tool for tool in ("mksquashfs", "ostree", "casync")
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]


def build_inputs(ctx: Context, section: Section) -> Inputs:
    """The four changes, as container rootfs trees, device file trees and two real kernels."""
    size_mb = 10.0 if ctx.quick else 50.0
    ctx.log(f"{SECTION}: building {size_mb:.0f} MiB rootfs trees")
    rng = random.Random(SEED)  # noqa: S311 - deterministic benchmark data, not secrets
    src = ctx.work / "src"
    a = src / "a"
    trees.build_tree(a, size_mb, rng)
    b = src / "b"
    trees.copy_tree(a, b)
    changed = trees.change_one_file(b)
    b2 = src / "b2"
    trees.copy_tree(a, b2)
    many = trees.change_many_files(b2, rng)
    c = src / "c"
    trees.build_tree(c, size_mb / 3, rng, prefix="new-")
    files = len(trees.regular_files(a))
    dev = ctx.work / "dev"
    inputs = Inputs(
        size_mb=size_mb, a=a, b=b, b2=b2, c=c, files=files,
        changes={"one_file": changed, "library": f"{many} of {files} files"},
        dev={"old": _device_tree(dev / "old", {"app": a}),
             "one_file": _device_tree(dev / "one_file", {"app": b}),
             "library": _device_tree(dev / "library", {"app": b2}),
             "new_container": _device_tree(dev / "new_container", {"app": a, "new": c})})
    if ctx.quick:
        section.notes.append(
            "--quick: the kernel case (d) is not measured (pvinit's level-19 deltas of a "
            "13.5 MiB kernel and a 19.3 MiB modules image alone take ~30 s, OSTree's bsdiff of "
            "~1,100 modules ~45 s); the full run measures it.")
        return inputs
    try:
        ctx.log(f"{SECTION}: finding and gathering two real cloud kernels")
        kernels = trees.kernel_pair()
        for label, kernel in zip(("kernel-old", "kernel-new"), kernels, strict=True):
            kernel.link_tree(dev / label)
            inputs.dev[label] = dev / label
        inputs.kernels = kernels
    except Exception as error:  # noqa: BLE001 - no kernels (no apt, no network) is a note
        section.notes.append(f"kernel case not measured: {error}")
    return inputs


def run(ctx: Context) -> Section:
    started = time.monotonic()
    section = Section(name=SECTION)
    figures = section.figures
    for key in KEYS:
        figures[key] = None
    missing = _missing_tools()
    if missing:
        section.notes.append(f"not measured: {', '.join(missing)} not installed")
        section.markdown = "### Update size: bytes on the wire\n\n" + \
            f"Not measured: {', '.join(missing)} not installed.\n"
        return section
    ctx.work.mkdir(parents=True, exist_ok=True)
    try:
        inputs = build_inputs(ctx, section)
        figures["update.rootfs_mb"] = round(trees.dir_bytes(inputs.a) / (1 << 20), 1)
        results, shipped = _measure(ctx, section, inputs)
        for case, row in results.items():
            for contender, value in row.items():
                figures[f"update.{case}.bytes.{contender}"] = value
            figures[f"update.{case}.ratio_whole_vs_pvinit"] = ratio(row.get("whole"),
                                                                    row.get("pvinit"))
            figures[f"update.{case}.ratio_pvinit_vs_ostree"] = ratio(row.get("pvinit"),
                                                                     row.get("ostree"))
        _losses(section)
        section.markdown = _markdown(ctx, section, inputs, shipped)
    finally:
        if not ctx.keep:
            shutil.rmtree(ctx.work, ignore_errors=True)
    section.seconds = round(time.monotonic() - started, 1)
    return section


Results = dict[str, dict[str, int | None]]


def _measure(ctx: Context, section: Section, inputs: Inputs) -> tuple[Results, dict[str, Shipped]]:
    """Run every contender, two at a time (2 cores), longest first: bytes per case."""
    work, dev, kernels = ctx.work, inputs.dev, inputs.kernels
    results: Results = {case: {} for case in CASES}
    shipped: dict[str, Shipped] = {}

    def casync(case: str, old: str, new: str) -> Callable[[], None]:
        def go() -> None:
            results[case]["casync"] = casync_bytes(work, case, dev[old], dev[new])
        return go

    def ostree(name: str, old: str, cases: dict[str, str]) -> Callable[[], None]:
        def go() -> None:
            sizes = ostree_bytes(work, name, dev[old], {c: dev[t] for c, t in cases.items()})
            for case, size in sizes.items():
                results[case]["ostree"] = size
        return go

    def pv_kernel() -> None:
        assert kernels is not None
        shipped["kernel"] = pvinit_kernel(ctx, work, kernels[0], kernels[1])

    def pv_containers() -> None:
        shipped.update(pvinit_containers(ctx, work, inputs))

    # Longest first, so the two workers end together: OSTree's bsdiff of the kernel
    # modules (~45 s), pvinit's level-19 deltas of the kernel objects (~30 s), ...
    jobs: list[tuple[str, Callable[[], None]]] = []
    if kernels is not None:
        jobs.append(("ostree kernel", ostree("kernel", "kernel-old", {"kernel": "kernel-new"})))
        jobs.append(("pvinit kernel", pv_kernel))
    jobs.append(("pvinit containers", pv_containers))
    live = ("one_file", "library", "new_container")
    jobs.append(("ostree containers", ostree("containers", "old", {c: c for c in live})))
    for case in live:
        jobs.append((f"casync {case}", casync(case, "old", case)))
    if kernels is not None:
        jobs.append(("casync kernel", casync("kernel", "kernel-old", "kernel-new")))

    def logged(name: str, job: Callable[[], None]) -> Callable[[], None]:
        def go() -> None:
            began = time.monotonic()
            job()
            ctx.log(f"{SECTION}: {name} done in {time.monotonic() - began:.1f} s")
        return go

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures: list[tuple[str, Future[None]]] = [
            (name, pool.submit(logged(name, job))) for name, job in jobs]
        for name, future in futures:
            error = future.exception()
            if error is not None:
                section.notes.append(f"{name} failed: {error}")
    for case, got in shipped.items():
        results[case]["pvinit"] = got.pvinit
        results[case]["whole"] = got.whole
    return results, shipped


#: Issue 4's goal: a one-file change ships at least this many times less than the whole object.
GOAL_ONE_FILE_RATIO = 100


def _losses(section: Section) -> None:
    f = section.figures
    saved = f["update.one_file.ratio_whole_vs_pvinit"]
    if saved is not None and saved < GOAL_ONE_FILE_RATIO:
        section.losses.append(
            f"Update size (a) one file changed: the whole object is only {saved:.0f}x what "
            f"pvinit ships (goal: >= {GOAL_ONE_FILE_RATIO}x).")
    for case in CASES:
        pv = f[f"update.{case}.bytes.pvinit"]
        for peer, label in (("ostree", "OSTree"), ("casync", "casync")):
            other = f[f"update.{case}.bytes.{peer}"]
            if pv is None or other is None or pv <= other:
                continue
            section.losses.append(
                f"Update size {LABELS[case]}: pvinit ships {fmt_bytes(pv)}, {label} "
                f"{fmt_bytes(other)} ({pv / other:.1f}x more).")


def _cell(value: Figure) -> str:
    return fmt_bytes(value) if value is not None else "n/a"


def _markdown(ctx: Context, section: Section, inputs: Inputs,
              shipped: dict[str, Shipped]) -> str:
    f = section.figures
    lines = [
        "### Update size: bytes on the wire",
        "",
        "What a device holding the old revision downloads to reach the new one, for four "
        "kinds of update. **pvinit**: a real `pvstate` checkout commits and signs both "
        "revisions, `pvstate publish` writes them to a repository directory (each changed "
        "object as a zstd frame, plus a zstd *patch-from* delta against the object at the "
        "same key when that is smaller), and pvinit's own device fetcher "
        "(`RemoteRepository` over a `FileFetcher`) brings a store holding the old objects "
        "to the new revision; the figure is its `bytes_on_wire` plus the channel envelope "
        "and the compressed state object it reads first. **whole**: the same download "
        "without `deltas/` (the changed objects' zstd frames + the same metadata): what a "
        "content-addressed store without deltas ships. **OSTree**: both versions committed "
        "as file trees to an archive repository, size of "
        "`ostree static-delta generate --from OLD --to NEW`. **casync**: `casync make` of "
        f"both trees ({CASYNC_CHUNK // 1024} KiB average chunks) into one store; the new "
        "index plus the chunks the old tree did not have. OSTree and casync see files "
        "(`containers/<name>/...`; the BSP as `boot/vmlinuz-*`, `lib/modules`, "
        "`lib/firmware`), pvinit sees its objects (squashfs images, the kernel image). The "
        "old revision is published too (at zstd level 1, so that publish has a base to make "
        "deltas against; the device already holds it and nothing of it is counted); the new "
        "one with `pvstate publish`'s defaults (level 19, deltas against the last 3 "
        "revisions). Goal (issue 4): whole / pvinit >= "
        f"{GOAL_ONE_FILE_RATIO} for (a).",
        "",
        f"The rootfs is {f['update.rootfs_mb']} MiB in {inputs.files} files (busybox, "
        "real shared libraries copied from this machine, seeded random blobs and text; "
        f"seed {SEED}{'; `--quick` size' if ctx.quick else ''}).",
        "",
        "| case | change | pvinit | OSTree | casync | whole | whole / pvinit "
        "| pvinit / OSTree |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    kernels = inputs.kernels
    descriptions = {
        "one_file": f"one line of `{inputs.changes['one_file']}`",
        "library": f"{inputs.changes['library']} patched + shifted",
        "new_container": f"a {inputs.size_mb / 3:.0f} MiB rootfs sharing no file",
        "kernel": "n/a" if kernels is None else
        f"`{kernels[0].package.version}` -> `{kernels[1].package.version}`",
    }
    for case in CASES:
        ratio_w = f[f"update.{case}.ratio_whole_vs_pvinit"]
        ratio_o = f[f"update.{case}.ratio_pvinit_vs_ostree"]
        lines.append(
            f"| {LABELS[case]} | {descriptions[case]} "
            f"| {_cell(f[f'update.{case}.bytes.pvinit'])} "
            f"| {_cell(f[f'update.{case}.bytes.ostree'])} "
            f"| {_cell(f[f'update.{case}.bytes.casync'])} "
            f"| {_cell(f[f'update.{case}.bytes.whole'])} "
            f"| {'n/a' if ratio_w is None else f'{ratio_w:,.1f}x'} "
            f"| {'n/a' if ratio_o is None else f'{ratio_o:.2f}'} |")
    lines += ["", "How pvinit shipped each object (raw size -> bytes on the wire):", ""]
    for case in CASES:
        if case not in shipped:
            continue
        parts = [f"`{key}` {fmt_bytes(raw)} -> {fmt_bytes(wire)} "
                 f"({'delta' if delta else 'whole object'})"
                 for key, raw, wire, delta in shipped[case].objects]
        lines.append(f"- {LABELS[case]}: {'; '.join(parts) or 'nothing'}; metadata "
                     f"{fmt_bytes(shipped[case].metadata)}.")
    if kernels is not None:
        old, new = kernels
        lines += [
            "",
            f"The kernel case is a real Debian security update of the cloud kernel: "
            f"`{old.label}` (kernel {old.release}) to `{new.label}` (kernel {new.release}), "
            "the two newest ABIs in this machine's apt sources; the newer one is what "
            "`linux-image-cloud-amd64` depends on, i.e. what `bsp/gather.py` ships. Both are "
            "gathered exactly like `bsp/gather.py` does (`dpkg-deb -x`, `depmod`, "
            "reproducible squashfs; `.deb`s checked against apt's SHA256 and cached under "
            "`build/cache/kernels`). An ABI bump renames `lib/modules/<release>` and "
            "rewrites the version string in every module, so every compressed squashfs "
            "block of `modules.squashfs` changes, while OSTree bsdiffs each module file "
            "uncompressed.",
        ]
    if any(" OSTree " in loss for loss in section.losses):
        lines += [
            "",
            "Why the peers can ship less: OSTree's static delta diffs (bsdiff) and compresses "
            "(LZMA) *files*, before any compression, while pvinit's objects are squashfs "
            "images whose blocks mksquashfs already compressed with zstd: a changed file "
            "changes its compressed blocks wholesale and zstd -19 cannot shrink them further "
            "(which is also why a new container costs about its squashfs size). pvinit pays "
            "for shipping whole images in bytes here; in return the device verifies and "
            "mounts exactly the signed image, with no file tree to assemble.",
        ]
    lines += [f"\nNote: {note}" for note in section.notes]
    return "\n".join(lines) + "\n"

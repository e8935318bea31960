"""Update time: how long a dev device takes to apply four kinds of update, and to roll back.

Each run boots a fresh dev device (``pvinit --storage``: launcher + PID 1 +
supervisor + real LXC) on revision 1 of a real ``pvstate`` checkout, built
with the integration tests' own builders
(``tests/integration/test_update_remote.Release``,
``tests/integration/test_update_device.Updater``), then drops a signed
bundle per update into the inbox, each one once the previous is committed:

- (a) ``one_file``: one line of one file of the app's rootfs changes (live update);
- (b) ``library``: ~5% of the app's files are patched and shifted (live update);
- (c) ``new_container``: a second app container is added (live update);
- (d) ``kernel``: the BSP moves between two real Debian cloud kernels
  (a reboot update: try boot into the new revision);
- rollback: the platform container is changed to an init that exits at
  start; timed from the verdict (journal ``ERROR``) to the device running
  the previous revision again (reboot, bootloader rule, every group started).

An apply is timed from the bundle's rename into the inbox to the new
revision ``RUNNING`` with the changed or new container started under a new
pid ((a)-(c)), or to the new revision ``RUNNING`` after the try boot ((d)):
inbox notice, signature and hash checks, install, and the container restart
or the reboot are all inside.  Medians of ``ctx.runs(3, 1)`` device boots.

The reference, timed in the same run on the same trees: OSTree applying the
same change offline, ``ostree static-delta apply-offline`` into a bare repo
holding the old commit, then ``ostree checkout`` of the new commit.  It
restarts nothing and verifies no signature.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the integration builders import pytest and lxc: loaded only to run
    from pvinit.supervisor.status import StatusDocument
    from tests.integration.test_update_device import Updater

from . import trees
from .context import Context, Section, fmt_bytes, fmt_s, is_root, median, ratio, sh

SECTION = "update_time"
CASES = ("one_file", "library", "new_container", "kernel")
LIVE = ("one_file", "library", "new_container")
SEED = 7
#: Pause after the factory boot before the first drop, for the update worker to be watching.
SETTLE_S = 1.0
POLL = 0.02
#: Every container's auto_recovery.stable_timeout (pvstate's default is 30 s): how long an
#: update waits to be committed; not part of any timed figure, only of the run's length.
STABLE_TIMEOUT = 1

KEYS: dict[str, str] = {}
for _case in CASES:
    KEYS[f"update.{_case}.apply_s"] = (
        f"{_case}: pvinit dev device, bundle renamed into the inbox -> new revision RUNNING "
        "with the changed container restarted (reboot update for kernel), median, s")
    KEYS[f"update.{_case}.ostree_apply_s"] = (
        f"{_case}: ostree static-delta apply-offline + ostree checkout of the same change, "
        "median, s")
    KEYS[f"update.{_case}.ratio_apply_vs_ostree"] = (
        f"{_case}: apply_s / ostree_apply_s (<1: pvinit is faster)")
KEYS["update.memory.after_boot_mb"] = (
    "supervisor PSS once idle after the factory boot, as it logs it (host figure, median, MiB)")
KEYS["update.memory.after_live_mb"] = (
    "supervisor PSS once idle after the three live updates committed, as it logs it "
    "(host figure, median, MiB)")
KEYS["update.rollback_s"] = (
    "pvinit dev device: verdict on a failing reboot update (journal ERROR) -> previous "
    "revision RUNNING again, median, s")

LABELS = {
    "one_file": "(a) one file changed",
    "library": "(b) library upgrade, ~5% of files",
    "new_container": "(c) new container added",
    "kernel": "(d) kernel update (BSP, reboot)",
}


# -- the release: revisions 1..6 as bundles --------------------------------------------
@dataclass
class Plan:
    """The bundles a run drops, and the trees the OSTree reference commits."""

    top: Path
    factory: Path
    #: Revision number -> bundle with only the objects revision N-1 lacks.
    bundles: dict[int, Path]
    #: Per live case: (old device tree, new device tree) for OSTree.
    ostree_trees: dict[str, tuple[Path, Path]]
    trust: bytes
    bundle_bytes: dict[int, int] = field(default_factory=dict)
    kernel_label: str = ""
    size_mb: float = 0.0
    files: int = 0


def _quiet(call: Callable[[], object]) -> None:
    """Run a builder that prints (pvstate's CLI) without filling the bench's output."""
    with contextlib.redirect_stdout(io.StringIO()):
        call()


def _set_stable_timeout(checkout: Path, name: str) -> None:
    """Lower one container's stable_timeout so commits follow quickly (see STABLE_TIMEOUT)."""
    path = checkout / name / "run.json"
    doc = json.loads(path.read_text())
    recovery = dict(doc.get("auto_recovery") or {})
    recovery["stable_timeout"] = STABLE_TIMEOUT
    doc["auto_recovery"] = recovery
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _device_tree(root: Path, containers: dict[str, Path]) -> Path:
    (root / "containers").mkdir(parents=True)
    for name, tree in containers.items():
        subprocess.run(["cp", "-al", str(tree), str(root / "containers" / name)], check=True)
    return root


def build_plan(ctx: Context, section: Section, top: Path) -> Plan:
    """A signed release with revisions 1..6, exported as bundles (see the module docstring)."""
    from tests.integration.test_containers_support import compile_pvnotify
    from tests.integration.test_update_remote import Release

    (top / "pvnotify").mkdir(parents=True)
    pvnotify = compile_pvnotify(top / "pvnotify")
    release: Release | None = None

    def make() -> None:
        nonlocal release
        release = Release(top, pvnotify)

    _quiet(make)
    assert release is not None
    rel = release
    size_mb = 10.0 if ctx.quick else 50.0
    rng = random.Random(SEED)  # noqa: S311 - deterministic benchmark data, not secrets
    trees_dir = top / "trees"
    a, b, b2, c = (trees_dir / n for n in ("a", "b", "b2", "c"))
    trees.copy_tree(rel.rootfs, a)
    trees.build_tree(a, size_mb, rng)
    trees.copy_tree(a, b)
    trees.change_one_file(b)
    trees.copy_tree(b, b2)
    trees.change_many_files(b2, rng)
    trees.copy_tree(rel.platform_rootfs, c)
    trees.build_tree(c, size_mb / 3, rng, prefix="new-")

    kernels: tuple[trees.KernelBsp, trees.KernelBsp] | None = None
    try:
        kernels = trees.kernel_pair()
    except Exception as error:  # noqa: BLE001 - no kernels (no apt, no network): a stand-in
        section.notes.append(f"no real kernel pair ({error}); (d) uses a 4 MiB random "
                             "kernel.img whose last 64 KiB change")
    fake = top / "fake-kernel"

    def bsp(which: int) -> None:
        if kernels is not None:
            parts = kernels[which].objects()
            rel_args = ["--kernel", str(parts["kernel.img"]),
                        "--modules", str(parts["modules.squashfs"]),
                        "--firmware", str(parts["firmware.squashfs"])]
        else:
            fake.mkdir(exist_ok=True)
            blob = random.Random(0).randbytes(4 << 20)  # noqa: S311 - test data
            if which:
                blob = blob[: -(64 << 10)] + random.Random(99).randbytes(64 << 10)  # noqa: S311
            (fake / f"kernel-{which}.img").write_bytes(blob)
            rel_args = ["--kernel", str(fake / f"kernel-{which}.img")]
        from tests.integration.test_update_remote import pvstate
        pvstate("-C", str(rel.co), "bsp", "set", *rel_args)

    def app(tree: Path, name: str = "app") -> None:
        rel.container(name, "app", "/bin/run.sh", tree)
        _set_stable_timeout(rel.co, name)

    def platform(init: str) -> None:
        rel.container("platform", "platform", init, rel.platform_rootfs)
        _set_stable_timeout(rel.co, "platform")

    def revisions() -> None:
        platform("/bin/run.sh")
        app(a)
        bsp(0)
        rel.commit("1: factory")
        app(b)
        rel.commit("2: one file of the app changes")
        app(b2)
        rel.commit("3: library upgrade in the app")
        app(c, "extra")
        rel.commit("4: a new container")
        bsp(1)
        rel.commit("5: kernel update")
        platform("/bin/crash.sh")
        rel.commit("6: the platform exits at start")

    ctx.log(f"{SECTION}: building revisions 1..6 ({size_mb:.0f} MiB app rootfs)")
    _quiet(revisions)
    bundles: dict[int, Path] = {}

    def export() -> None:
        from tests.integration.test_update_remote import pvstate
        for number in range(2, 7):
            out = top / f"r{number}.pvb"
            pvstate("-C", str(rel.co), "export", str(number), "-o", str(out),
                    "--base", str(number - 1))
            bundles[number] = out

    factory = top / "factory.pvb"
    _quiet(lambda: rel.export(1, factory))
    _quiet(export)
    dev = top / "dev"
    plan = Plan(
        top=top, factory=factory, bundles=bundles,
        trust=rel.policy(rel.key).to_json(),
        ostree_trees={
            "one_file": (_device_tree(dev / "a", {"app": a}), _device_tree(dev / "b", {"app": b})),
            "library": (dev / "b", _device_tree(dev / "b2", {"app": b2})),
            "new_container": (dev / "b2", _device_tree(dev / "c", {"app": b2, "extra": c})),
        },
        size_mb=size_mb, files=len(trees.regular_files(a)),
        kernel_label="a 4 MiB stand-in kernel.img" if kernels is None else
        f"`{kernels[0].label}` -> `{kernels[1].label}` (kernel image + modules squashfs)")
    plan.bundle_bytes = {n: p.stat().st_size for n, p in bundles.items()}
    return plan


# -- one device run ----------------------------------------------------------------------
class Watch:
    """Reads a booted dev device's status document and journals, polling."""

    def __init__(self, updater: Updater) -> None:
        self.u = updater

    def status(self) -> StatusDocument | None:
        from pvinit.pid1.locate import status_path
        from pvinit.supervisor.status import read_status
        from tests.integration.test_update_device import _descendants

        proc = self.u.proc
        for pid in _descendants(proc.pid) if proc is not None else []:
            document = read_status(status_path(pid, self.u.dev.storage))
            if document is not None:
                return document
        return None

    def running(self) -> int | None:
        """The revision the supervisor reports RUNNING (every group reached its goal)."""
        document = self.status()
        if document is not None and document.phase.value == "RUNNING":
            return document.revision
        return None

    def pid(self, name: str) -> int | None:
        """A container's init pid while it is STARTED or READY."""
        document = self.status()
        if document is None:
            return None
        for c in document.containers:
            if c.name == name and c.status.value in ("STARTED", "READY"):
                return c.pid
        return None

    def wait(self, what: str, condition: Callable[[], bool], limit: float = 120) -> float:
        """Poll until ``condition()``; the monotonic time it first held."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if condition():
                return time.monotonic()
            proc = self.u.proc
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(POLL)
        raise RuntimeError(f"never saw {what}\n{''.join(self.u.err)[-2000:]}\n"
                           f"{self.u.dev.log_text()[-2000:]}")

    def drop(self, bundle: Path) -> float:
        """Copy the bundle beside the inbox, rename it in: the moment it arrives."""
        inbox = self.u.dev.storage / "inbox"
        inbox.mkdir(exist_ok=True)
        tmp = inbox / f".{bundle.name}.tmp"
        shutil.copyfile(bundle, tmp)
        arrived = time.monotonic()
        tmp.rename(inbox / bundle.name)
        return arrived


def _live_update(w: Watch, bundle: Path, number: int, container: str) -> float:
    """Seconds from the drop to revision ``number`` RUNNING with ``container`` (re)started.

    Then waits for the commit (not timed), so the next update starts from a settled device.
    """
    old_pid = w.pid(container)
    start = w.drop(bundle)
    done = w.wait(f"revision {number} running, {container} (re)started",
                  lambda: w.running() == number and w.pid(container) not in (None, old_pid))
    w.wait(f"revision {number} UPDATED", lambda: w.u.journal_state(number) == "UPDATED")
    return done - start


IDLE_LINE = re.compile(r"memory once idle: PID 1 [\d.]+ MiB \+ supervisor ([\d.]+) MiB")


def _idle_reports(w: Watch) -> list[float]:
    """The supervisor's "memory once idle" figures so far (it logs one REPORT_AFTER s into
    RUNNING and one after each live commit)."""
    return [float(m.group(1)) for m in IDLE_LINE.finditer(w.u.dev.log_text())]


def one_run(plan: Plan, log: Callable[[str], None]) -> dict[str, float]:
    """Boot a fresh device on revision 1, apply 2..5, roll 6 back; seconds per step."""
    from tests.integration.test_supervisor_support import Device
    from tests.integration.test_update_device import Updater

    image = plan.top / "unused.squashfs"  # Device wants an image; the bundles carry their own
    image.touch()
    device = Device(image)
    u = Updater(device)
    w = Watch(u)
    out: dict[str, float] = {}
    try:
        (device.storage / "config" / "trust.json").write_bytes(plan.trust)
        (device.storage / "config" / "pvinit.json").write_text(json.dumps({"commit_delay": 0}))
        u.boot(plan.factory)
        w.wait("revision 1 running", lambda: w.running() == 1 and u.env().get("pv_rev") == "1")
        # A bundle that lands while the update worker is still starting (before its inotify
        # watch exists) is found by the settle scan ~2 s later: start from a settled device.
        w.wait("the inbox", (device.storage / "inbox").is_dir)
        time.sleep(SETTLE_S)
        # Its report REPORT_AFTER s into RUNNING, before a live commit schedules the next one.
        w.wait("the boot's memory report", lambda: len(_idle_reports(w)) >= 1, limit=60)
        log("revision 1 running")
        for number, case in ((2, "one_file"), (3, "library"), (4, "new_container")):
            out[case] = _live_update(w, plan.bundles[number], number,
                                     "extra" if case == "new_container" else "app")
            log(f"revision {number} ({case}) applied in {out[case]:.3f} s and committed")
        # The update modules ran in the worker's forks: the supervisor should idle as lean
        # as after its boot.  Its own report comes REPORT_AFTER s after the last commit (a
        # commit reschedules the report an earlier one had pending).
        seen = len(_idle_reports(w))
        w.wait("a memory report after the live updates",
               lambda: len(_idle_reports(w)) > seen, limit=60)
        reports = _idle_reports(w)
        out["memory_after_boot"], out["memory_after_live"] = reports[0], reports[-1]
        log(f"supervisor once idle: {reports[0]:.1f} MiB after boot, "
            f"{reports[-1]:.1f} MiB after three live updates")
        start = w.drop(plan.bundles[5])
        done = w.wait("revision 5 running after the try boot", lambda: w.running() == 5)
        out["kernel"] = done - start
        log(f"revision 5 (kernel) running in {out['kernel']:.3f} s")
        w.wait("revision 5 DONE", lambda: u.journal_state(5) == "DONE")
        log("revision 5 committed")
        w.drop(plan.bundles[6])
        verdict = w.wait("revision 6 ERROR", lambda: u.journal_state(6) == "ERROR")
        back = w.wait("revision 5 running again", lambda: w.running() == 5 and
                      u.env().get("pv_rev") == "5" and "pv_try" not in u.env())
        out["rollback"] = back - verdict
        log(f"revision 6 rolled back in {out['rollback']:.3f} s")
        return out
    finally:
        u.poweroff()
        device.cleanup()


# -- the OSTree reference ------------------------------------------------------------------
def ostree_apply(work: Path, name: str, old: Path, new: Path, runs: int) -> list[float]:
    """Seconds for ``static-delta apply-offline`` + ``checkout`` into a bare repo holding ``old``.

    The delta is generated once (not timed), as a single self-contained
    file; each run starts from a fresh bare repository into which the old
    commit was pulled (not timed).
    """
    src = work / f"ostree-src-{name}"
    sh(["ostree", "init", f"--repo={src}", "--mode=archive"])
    commits = []
    for label, tree in (("old", old), ("new", new)):
        out = sh(["ostree", "commit", f"--repo={src}", f"--branch={label}",
                  "--owner-uid=0", "--owner-gid=0", "--timestamp=2024-01-01T00:00:00Z",
                  f"--subject={label}", f"--tree=dir={tree}"]).stdout
        commits.append(out.strip())
    delta = work / f"ostree-{name}.delta"
    sh(["ostree", "static-delta", "generate", f"--repo={src}", f"--from={commits[0]}",
        f"--to={commits[1]}", "--inline", f"--filename={delta}"])
    seconds: list[float] = []
    for i in range(runs):
        dst = work / f"ostree-dst-{name}-{i}"
        sh(["ostree", "init", f"--repo={dst}", "--mode=bare"])
        sh(["ostree", "pull-local", f"--repo={dst}", str(src), commits[0]])
        began = time.perf_counter()
        sh(["ostree", "static-delta", "apply-offline", f"--repo={dst}", str(delta)])
        sh(["ostree", "checkout", f"--repo={dst}", commits[1], str(dst / "deploy")])
        seconds.append(time.perf_counter() - began)
        if not (dst / "deploy" / "containers").is_dir():
            raise RuntimeError(f"ostree checkout of {name} is empty")
        shutil.rmtree(dst)
    return seconds


# -- the section ---------------------------------------------------------------------------
def _unavailable(section: Section, why: str) -> Section:
    section.notes.append(f"not measured: {why}")
    section.markdown = f"### Update time: apply and rollback\n\nNot measured: {why}.\n"
    return section


def run(ctx: Context) -> Section:
    started = time.monotonic()
    section = Section(name=SECTION)
    for key in KEYS:
        section.figures[key] = None
    if not is_root():
        return _unavailable(section, "needs root (LXC, loop mounts, namespaces)")
    missing = [t for t in ("ostree", "mksquashfs", "gcc", "lxc-start") if shutil.which(t) is None
               and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        return _unavailable(section, f"{', '.join(missing)} not installed")
    try:
        import lxc  # noqa: F401
        import pytest  # noqa: F401 - the integration builders import it
    except ImportError as error:
        return _unavailable(section, f"cannot import {error.name}")
    ctx.work.mkdir(parents=True, exist_ok=True)
    runs = ctx.runs(3, 1)
    top = ctx.work / "release"
    try:
        plan = build_plan(ctx, section, top)
        ostree: dict[str, list[float]] = {}
        for case in LIVE:
            old, new = plan.ostree_trees[case]
            ctx.log(f"{SECTION}: OSTree apply-offline reference, {case}")
            ostree[case] = ostree_apply(ctx.work, case, old, new, runs)
        section.notes.append(
            "OSTree reference for (d) not measured: generating the static delta between the "
            "two kernels' file trees (bsdiff of ~1,100 modules) alone takes ~45 s; see "
            "update_size for its size")
        results: list[dict[str, float]] = []
        for i in range(runs):
            ctx.log(f"{SECTION}: device run {i + 1}/{runs}")
            try:
                results.append(one_run(plan, lambda m: ctx.log(f"{SECTION}:   {m}")))
            except RuntimeError as error:  # a hung device: the other runs still count
                section.notes.append(f"device run {i + 1} failed: {str(error)[:300]}")
        if not results:
            return _unavailable(section, "every device run failed: " + "; ".join(section.notes))
        _figures(section, results, ostree)
        section.markdown = _markdown(ctx, section, plan, results, ostree)
    finally:
        if not ctx.keep:
            subprocess.run(["rm", "-rf", "--one-file-system", str(ctx.work)], check=False)
    section.seconds = round(time.monotonic() - started, 1)
    return section


def _figures(section: Section, results: list[dict[str, float]],
             ostree: dict[str, list[float]]) -> None:
    f = section.figures
    for case in CASES:
        apply = round(median([r[case] for r in results]), 3)
        f[f"update.{case}.apply_s"] = apply
        if case in ostree:
            ref = round(median(ostree[case]), 3)
            f[f"update.{case}.ostree_apply_s"] = ref
            f[f"update.{case}.ratio_apply_vs_ostree"] = ratio(apply, ref)
            if apply > ref:
                section.losses.append(
                    f"Update time {LABELS[case]}: pvinit applies it in {fmt_s(apply)} "
                    f"(inbox to container restarted), OSTree apply-offline + checkout in "
                    f"{fmt_s(ref)} ({apply / ref:.1f}x slower; OSTree restarts nothing).")
    f["update.rollback_s"] = round(median([r["rollback"] for r in results]), 3)
    f["update.memory.after_boot_mb"] = round(median([r["memory_after_boot"] for r in results]), 1)
    f["update.memory.after_live_mb"] = round(median([r["memory_after_live"] for r in results]), 1)


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    return f" (min {min(values):.3f}, max {max(values):.3f}, sd {statistics.stdev(values):.3f})"


def _markdown(ctx: Context, section: Section, plan: Plan, results: list[dict[str, float]],
              ostree: dict[str, list[float]]) -> str:
    f = section.figures
    n = len(results)
    bundle_of = {"one_file": 2, "library": 3, "new_container": 4, "kernel": 5}
    lines = [
        "### Update time: apply and rollback",
        "",
        f"A real dev device (`pvinit --storage`: launcher, PID 1, supervisor, LXC containers) "
        f"boots a signed factory bundle and is given four updates as signed bundles dropped "
        f"into its inbox, each once the previous one is committed (`commit_delay` 0, the "
        f"containers' `stable_timeout` {STABLE_TIMEOUT} s: neither is inside a timed "
        f"figure). The app rootfs is {plan.size_mb:.0f} MiB in {plan.files} files"
        f"{' (`--quick` size)' if ctx.quick else ''}; the revisions come from a real `pvstate` "
        "checkout (the integration tests' `Release` builder) and each update bundle carries "
        "the objects the previous revision lacks (`pvstate export N --base N-1`). "
        f"Medians of {n} device boot(s).",
        "",
        "**pvinit's figure** runs from the bundle's rename into the inbox to the new revision "
        "`RUNNING` in the supervisor's status with the changed container restarted under a "
        "new pid, or the new container started ((a)-(c), live updates), or to the new "
        "revision `RUNNING` after the try boot ((d), a reboot update): inbox notice "
        "(inotify), signature and hash checks, install into the store, stopping and starting "
        "the container or the reboot (new PID 1, BSP squashfs mounted, every group started). "
        f"(d) is {plan.kernel_label}. **OSTree's figure** "
        "is `ostree static-delta apply-offline` of the same change (a self-contained delta "
        "generated beforehand, not timed) into a bare repository holding the old commit, "
        "plus `ostree checkout` of the new commit: it restarts nothing, verifies no "
        "signature and boots nothing.",
        "",
        "| update | bundle | pvinit apply | OSTree apply-offline + checkout | pvinit / OSTree |",
        "|---|---:|---:|---:|---:|",
    ]
    for case in CASES:
        r = f[f"update.{case}.ratio_apply_vs_ostree"]
        lines.append(
            f"| {LABELS[case]} | {fmt_bytes(plan.bundle_bytes.get(bundle_of[case]))} "
            f"| {fmt_s(f[f'update.{case}.apply_s'])} "
            f"| {fmt_s(f[f'update.{case}.ostree_apply_s'])} "
            f"| {'n/a' if r is None else f'{r:.2f}'} |")
    lines.append(f"| rollback (verdict -> previous revision running) | "
                 f"{fmt_bytes(plan.bundle_bytes.get(6))} | {fmt_s(f['update.rollback_s'])} "
                 "| n/a | n/a |")
    lines += ["", "Spread over the runs:", ""]
    for case in (*CASES, "rollback"):
        values = [r[case] for r in results]
        line = f"- {case}: pvinit {', '.join(f'{v:.3f}' for v in values)} s{_spread(values)}"
        if case in ostree:
            line += f"; OSTree {', '.join(f'{v:.3f}' for v in ostree[case])} s"
        lines.append(line)
    lines += [
        "",
        f"Memory: the supervisor logs its PSS {10:.0f} s after every group started and again "
        f"after each live commit. Once idle after the factory boot it held "
        f"{f['update.memory.after_boot_mb']} MiB, after the three live updates "
        f"{f['update.memory.after_live_mb']} MiB (medians, as read on this host: pages "
        "shared with other Python processes count less than on a device). Each update was "
        "prepared in a short-lived fork, so its modules (`cryptography`, `zstandard`, the "
        "bundle reader) never entered the supervisor.",
        "",
        "Rollback: revision 6 changes the platform container (restart policy `system`, so a "
        "reboot update) to an init that exits at start; the figure runs from the verdict "
        "(journal `ERROR`, written when the supervisor reaps the exited container) to the "
        "device running revision 5 again (reboot, bootloader rule, every group started).",
    ]
    lines += [f"\nNote: {note}" for note in section.notes]
    return "\n".join(lines) + "\n"

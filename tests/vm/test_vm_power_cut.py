"""Power cuts in the VM: QEMU SIGKILLed at random moments of a reboot update (issue 4).

Each cycle boots a device whose inbox holds a signed revision 2 (a reboot
update) and kills QEMU (SIGKILL: a faithful power cut) after a random delay
within ``WINDOW`` seconds, which spans download, install, reboot, testing
and commit of one update under TCG here.  After EACH kill:

- the disk is read as the bootloader reads it (journal replayed with
  ``e2fsck -p``, the U-Boot image with ``fw_printenv``): ``pv_rev`` names
  revision 1 or 2 and that revision's trail (``.pv/boot.json``) exists;
  revision 2's progress journal agrees (``pv_rev=2``: TESTING or DONE, as
  the environment is the commit point; ``pv_rev=1``: never DONE);
- the object store, copied out with ``debugfs rdump``, checks clean with
  pvinit's own ``DiskObjectStore.fsck`` (no object whose content does not
  hash to its name; a dead writer's temp file is reported, not a failure);
- the device is booted again through the bootloader logic; that boot (or,
  when it is cut too, the last boot of the chain) must reach every group's
  goal on a committed revision (a try counts once it commits).

A cut counts only when the launcher saw QEMU killed (``guest ended:
killed``): a QEMU that had just exited for a reboot does not die of the
signal, and the machine would boot on.

Every cycle starts from a provisioned device (the built disk booted once:
factory revision 1 committed, then shut down in order) with revision 2 put
in its inbox.  Kills are chained: the boot after a cut must settle on a
committed revision and is then the next cut's victim, until revision 2 is
committed or rolled back (a device does not try it again); the next cycle
then starts from a fresh copy.  With chance ``CHAIN`` the boot after a cut
is cut too before it settles (a cut during recovery: a rollback's journal
and environment writes, a resumed download); the disk is checked after
every cut and the last boot of every chain must settle.  An update that
ends before its cut counts no kill.  ``PVINIT_VM_KILLS`` sets the count (default 30),
``PVINIT_VM_SEED`` the random seed (printed, so a failure can be replayed),
``PVINIT_VM_WINDOW`` the window.
"""

from __future__ import annotations

import collections
import os
import random
import re
import subprocess
import time
from pathlib import Path

import pytest

from pvinit.objects.disk import DiskObjectStore
from tests.vm.ota import (
    COMMITTED,
    EVERY_GROUP,
    boot,
    device_with_update,
    env_of,
    journal_state,
    ota_image,
)
from tests.vm.support import VmRun, fresh_disk

pytestmark = [pytest.mark.root, pytest.mark.slow]

KILLS = int(os.environ.get("PVINIT_VM_KILLS", "30"))
SEED = int(os.environ.get("PVINIT_VM_SEED", "20261122"))
WINDOW = float(os.environ.get("PVINIT_VM_WINDOW", "34"))
"""Seconds after a boot starts (or the boot after a cut settles) in which a cut lands.

A whole update from a provisioned device takes ~35 s here under TCG (boot
~15 s, install, reboot, try boot ~13 s, testing until the stable timeout
and commit delay passed); an update over before its cut counts no kill.
"""
STABLE_TIMEOUT = 5
"""Revision 2's containers' stable_timeout: a try's testing lasts seconds, not the state's 30."""
DEADLINE = 900.0
FINISHED = r"pvinit: revision 2: committed|pvinit: update 2: (ERROR|WONTGO)"
"""The update is over: committed, or rolled back / refused (a device does not try it again)."""

PHASES = (
    (r"revision 2: committed", "after-commit"),
    (r"update 2: DONE", "commit"),
    (r"revision 2: try boot", "testing"),
    (r"-> revision 2 \(try\)", "try-kernel"),
    (r"vm: guest ended: reboot|rebooting into the try", "reboot"),
    (r"update 2: INSTALLING", "install"),
    (r"update 2: (QUEUED|DOWNLOADING)", "download"),
)
CHAIN = 0.5
"""Chance that the boot after a cut is cut again before it settles (a cut during recovery)."""


def phase_of(console: str) -> str:
    for pattern, name in PHASES:
        if re.search(pattern, console):
            return name
    return "boot"


def check_disk(disk: Path, work: Path) -> tuple[int, str | None]:
    """The invariants a power cut must keep; returns pv_rev and revision 2's journal state."""
    env = env_of(disk)  # replays the ext4 journal first, like the next mount would
    rev = env.get("pv_rev")
    assert rev in ("1", "2"), f"pv_rev is {rev!r}: no committed revision ({env})"
    # The boot environment is the commit point; the journal follows it (a cut in between
    # leaves TESTING, which the next boot finishes), never the other way round.
    journal = journal_state(disk, 2)
    if rev == "2":
        assert journal in ("TESTING", "DONE"), f"pv_rev=2 but revision 2 is {journal} ({env})"
    else:
        assert journal != "DONE", f"revision 2 is DONE but pv_rev=1 ({env})"
    stat = subprocess.run(["debugfs", "-R", f"stat /storage/trails/{rev}/.pv/boot.json",
                           str(disk)], capture_output=True, text=True, check=True)  # fmt: skip
    assert "Inode:" in stat.stdout, f"pv_rev={rev} but its trail is missing"
    copy = work / "store"
    subprocess.run(["rm", "-rf", str(copy)], check=True)
    copy.mkdir(parents=True)
    subprocess.run(["debugfs", "-R", f"rdump /storage/objects {copy}", str(disk)],
                   capture_output=True, check=True)  # fmt: skip
    report = DiskObjectStore(copy / "objects").fsck()
    corrupt = [p for p in report.problems if p.kind == "corrupt"]
    assert not corrupt, f"object store: {[p.to_dict() for p in corrupt]}"
    assert report.checked > 0
    return int(rev), journal


def keep_console(run: VmRun, work: Path, count: int) -> None:
    """Each launcher's console in the work directory: a failure's story, read afterwards."""
    (work / f"console-{count:03d}.log").write_text(run.text + "\n")


def settle(run: VmRun) -> int:
    """Wait until the device runs a committed revision; returns it."""
    seen = 0
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        run.wait_for(EVERY_GROUP, DEADLINE)
        lines = run.lines[:]
        groups = [(i, m.group(1)) for i, line in enumerate(lines)
                  if (m := re.search(EVERY_GROUP, line))]  # fmt: skip
        index, revision = groups[-1]
        if len(groups) == seen:
            if run.proc.poll() is not None:
                raise AssertionError(f"the VM ended before it settled:\n{run.text}")
            time.sleep(1)
            continue
        seen = len(groups)
        verdicts = [line for line in lines[:index] if line.startswith("vm: bootloader: ")
                    and " -> " in line]  # fmt: skip
        if verdicts and "(try)" in verdicts[-1]:
            # A try runs: committed, or rolled back to a later boot (loop again).
            try:
                run.wait_for(COMMITTED.replace(r"(\d+)", revision), 300)
                return int(revision)
            except AssertionError:
                continue
        return int(revision)
    raise AssertionError(f"the device never settled:\n{run.text}")


def provisioned_device(built: Path, work: Path) -> Path:
    """The built disk after its first boot (factory revision 1 committed), shut down in order.

    Every cycle starts from a copy of it: cuts land in the update, not in
    the factory install of a blank device (another story: no ``pv_rev`` yet).
    """
    disk = fresh_disk(built, work / "provisioned.img")
    run = boot(disk)
    try:
        run.wait_for(EVERY_GROUP, DEADLINE)
        run.shutdown()
        run.finish(300)
    finally:
        run.kill()
    assert env_of(disk).get("pv_rev") == "1", run.text
    return disk


def wait_or_finish(run: VmRun, delay: float) -> bool:
    """Sleep ``delay`` s while the VM runs; True as soon as the update is over instead."""
    start = time.monotonic()
    while time.monotonic() - start < delay and run.proc.poll() is None:
        if re.search(FINISHED, run.text):
            return True
        time.sleep(0.1)
    return bool(re.search(FINISHED, run.text))


def cut_power(run: VmRun) -> int | None:
    """SIGKILL the running QEMU; returns its pid once the launcher saw it killed.

    Between two boots (QEMU exited, the bootloader runs) the cut waits for the
    next QEMU: a QEMU that exited but was not yet reaped takes the signal
    without dying (a zombie), and the machine would go on booting, so a cut
    counts only when the launcher reports ``guest ended: killed``.
    """
    deadline = time.monotonic() + 120
    while run.proc.poll() is None and time.monotonic() < deadline:
        before = len(ends_of(run))
        pid = run.power_cut()
        if pid is None:
            time.sleep(0.2)
            continue
        wait_end = time.monotonic() + 60
        while len(ends_of(run)) == before and time.monotonic() < wait_end:
            time.sleep(0.1)
        ended = ends_of(run)[before:]
        if ended and ended[0].startswith("vm: guest ended: killed"):
            return pid
    return None


def ends_of(run: VmRun) -> list[str]:
    return [line for line in run.lines[:] if line.startswith("vm: guest ended: ")]


def test_power_cuts_at_random_moments_always_leave_a_committed_revision(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    work = tmp_path_factory.mktemp("vmcut")
    built, bundle = ota_image(work, stable_timeout=STABLE_TIMEOUT)
    golden = provisioned_device(built, work)
    rng = random.Random(SEED)  # noqa: S311 - timing, not secrets
    print(f"\npower cuts: {KILLS} with seed {SEED} (PVINIT_VM_SEED={SEED} replays)")
    phases: collections.Counter[str] = collections.Counter()
    outcomes: collections.Counter[str] = collections.Counter()
    survived = 0
    disk = work / "disk.img"
    run: VmRun | None = None
    fresh = 0
    recovering = False
    consoles = 0
    started = time.monotonic()
    try:
        while survived < KILLS:
            if run is None:
                fresh += 1
                recovering = False
                device_with_update(golden, bundle, disk)
                run = boot(disk)
            delay = rng.uniform(0.0, WINDOW)
            if wait_or_finish(run, delay):
                # Revision 2 committed or was rolled back before the cut: settle, next device.
                print(f"no cut: update over {run.seconds_to(FINISHED) or 0:.0f}s after its boot "
                      f"started (cut was due at {delay:.1f}s)", flush=True)  # fmt: skip
                running = settle(run)
                outcomes["committed" if running == 2 else "rolled back"] += 1
                run.kill()
                consoles += 1
                keep_console(run, work, consoles)
                run = None
                continue
            phase = phase_of(run.text) + (" (recovery boot)" if recovering else "")
            pid = cut_power(run)
            run.finish(60)
            consoles += 1
            keep_console(run, work, consoles)
            rev, journal = check_disk(disk, work)
            if pid is not None:
                survived += 1
                phases[phase] += 1
                print(f"cut {survived}: SIGKILL after {delay:.1f}s in {phase}; pv_rev={rev}, "
                      f"revision 2 {journal or 'not queued'} (console-{consoles:03d}.log)",
                      flush=True)  # fmt: skip
            run = boot(disk)
            recovering = rng.random() < CHAIN
            if recovering:
                continue  # this boot is cut too, before it settles; the chain's last one settles
            # The boot after the cut must reach a committed revision; it is the next victim.
            running = settle(run)
            assert running in (1, 2)
            if running == 2 or re.search(FINISHED, run.text):
                # Committed (now or before the cut), or rolled back: nothing left to cut.
                outcomes["committed" if running == 2 else "rolled back"] += 1
                run.kill()
                consoles += 1
                keep_console(run, work, consoles)
                run = None
            recovering = False
    finally:
        if run is not None:
            run.kill()
    minutes = (time.monotonic() - started) / 60
    print(f"power cuts survived: {survived} (seed {SEED}, {fresh} devices, {minutes:.1f} min); "
          f"by phase: {dict(sorted(phases.items()))}; updates: {dict(sorted(outcomes.items()))}")
    assert survived == KILLS

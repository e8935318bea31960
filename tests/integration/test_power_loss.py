"""Power loss at every persistence point of the update path (issue 4, "Power-loss safety").

The update path is driven in-process exactly as the device drives it: the
update worker takes a signed bundle from the inbox (``UpdateEngine.prepare``),
the supervisor's coordinator begins the try (or applies it live), the dev
launcher plays the bootloader (``dev_choose_boot``), the coordinator
reconciles at boot (``on_boot``/``booted``) and commits once the revision is
healthy.  Only the containers are left out: a fake loop reports them
healthy, which is all the update path asks of them.

A dry run records every persistence point passed (``durable.seen_points``)
from the moment the bundle lands to the commit.  Then, for each occurrence
of each point, a fresh device runs the same path with the power cut there
(:class:`pvinit.durable.SimulatedCrash`), restarts (bootloader, boot
reconciliation, the worker resuming what it would resume) and must be on a
committed revision with consistent refs, boot environment and journal, and a
clean object store; finally the update is let run to its end, and revision 2
is either committed or refused/rolled back with a reason — never stuck.

The test ids are the point names with their occurrence (``journal.rename#3``),
so ``pytest -v`` lists every point covered.
"""

from __future__ import annotations

import io
import json
import queue
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pvinit import durable
from pvinit.boot.env import FileBootEnv
from pvinit.boot.rule import parse_revision
from pvinit.bundle.writer import write_bundle
from pvinit.objects.disk import DiskObjectStore
from pvinit.objects.memory import MemoryObjectStore
from pvinit.signing.envelope import Envelope
from pvinit.signing.keys import SigningKey
from pvinit.signing.trust import TrustPolicy, sign_envelope
from pvinit.state.canonical import canonical_bytes
from pvinit.supervisor.log import SupervisorLog
from pvinit.supervisor.loop import choose_revision
from pvinit.supervisor.updates import Health, UpdateCoordinator
from pvinit.supervisor.worker import UpdateWorker
from pvinit.trails.install import install_revision, load_trail
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import move_ref, read_ref
from pvinit.update.bootloader import dev_choose_boot
from pvinit.update.journal import read_journal
from pvinit.update.machine import COMMITTED, TERMINAL, UpdateState
from pvinit.update.trying import Prepared
from tests.integration.test_supervisor_support import container, group

#: Boot groups of the factory revision; a reboot update changes a timeout (device.json).
GROUPS = [group("platform", policy="system", timeout=10), group("app", timeout=10)]
REBOOT_GROUPS = [group("platform", policy="system", timeout=12), group("app", timeout=10)]
#: More rounds than any update needs (prepare, try, reboot, commit): a loop that
#: never settles is a bug, not a slow machine.
MAX_TURNS = 12


# -- building the device and the update ------------------------------------------------------

def _state(groups: list[dict[str, Any]], images: dict[str, str], app_env: str) -> bytes:
    app = container("app", "app", "/bin/run.sh")
    app["env"] = {"VERSION": app_env}
    entries: dict[str, Any] = {"#spec": "pvinit-state@1", "device.json": {"groups": groups}}
    for doc in (container("platform", "platform", "/bin/run.sh"), app):
        entries[f"{doc['name']}/run.json"] = doc
        entries[f"{doc['name']}/root.squashfs"] = images[doc["name"]]
    return canonical_bytes(entries)


def _envelope(revision: int, state_bytes: bytes, store: MemoryObjectStore,
              images: dict[str, str]) -> Envelope:
    return Envelope.create(
        revision=revision, parent=None, state_bytes=state_bytes,
        sizes={i: store.size(i) for i in set(images.values())},
        created=datetime(2026, 1, 1, tzinfo=UTC), message=f"revision {revision}",
    )  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """What revision 2 changes: a reboot update (device.json) or a live one (one app)."""

    name: str
    reboot: bool


SCENARIOS = [Scenario("reboot", reboot=True), Scenario("live", reboot=False)]


def make_device(top: Path, scenario: Scenario) -> Path:
    """A device on committed factory revision 1 with a signed bundle of revision 2 in its inbox.

    Returns the storage directory.  Objects are plain bytes (nothing mounts
    them here); revision 2 brings two new objects so object writes are on the path.
    """
    storage = top / "storage"
    layout = StorageLayout(storage)
    key = SigningKey.generate()
    config = storage / "config"
    config.mkdir(parents=True)
    trust = TrustPolicy.from_keys([(key.public, "release")], threshold=1)
    (config / "trust.json").write_bytes(trust.to_json())
    (config / "pvinit.json").write_text(json.dumps({"commit_delay": 0}))

    scratch = MemoryObjectStore()
    v1 = {"platform": scratch.add_bytes(b"platform image 1\n" * 64),
          "app": scratch.add_bytes(b"app image 1\n" * 64)}
    v2 = {"platform": scratch.add_bytes(b"platform image 2\n" * 64) if scenario.reboot
          else v1["platform"],
          "app": scratch.add_bytes(b"app image 2\n" * 64)}
    state1 = _state(GROUPS, v1, "1")
    state2 = _state(REBOOT_GROUPS if scenario.reboot else GROUPS, v2, "2")

    store = DiskObjectStore.create(layout.objects)
    for object_id in set(v1.values()):
        store.add_bytes(scratch.read_bytes(object_id), expected_id=object_id)
    envelope1 = sign_envelope(_envelope(1, state1, scratch, v1), key)
    install_revision(layout, state_bytes=state1, envelope=envelope1)
    move_ref(layout, "factory", 1, expect=None)

    envelope2 = sign_envelope(_envelope(2, state2, scratch, v2), key)
    inbox = storage / "inbox"
    inbox.mkdir()
    write_bundle(inbox / "r2.pvb", envelope=envelope2, state_bytes=state2, store=scratch,
                 object_ids=sorted(envelope2.sizes))
    # first boot: the launcher finds a blank environment, the supervisor adopts revision 1
    Device(storage).boot()
    return storage


# -- the device, in-process --------------------------------------------------------------------

class FakeLoop:
    """The supervisor loop's side of :class:`LoopHooks`: containers are always healthy."""

    def __init__(self) -> None:
        self.coordinator: UpdateCoordinator | None = None
        self.reboot_requested = ""
        self.running: int | None = None

    def wake(self) -> None:
        pass

    def request_stop(self, *, reboot: bool, why: str) -> None:
        assert reboot, why
        self.reboot_requested = why

    def apply_live(self, prepared: Prepared) -> None:
        # the loop restarts the changed containers, then tells the coordinator
        assert self.coordinator is not None
        load_trail(self.coordinator.layout, prepared.revision)
        self.running = prepared.revision
        self.coordinator.booted(prepared.revision)

    def health(self) -> Health:
        return Health(all_groups_done=True, timed_out_groups=(), failed_containers=(),
                      restarts={}, unstable_until=0.0)


class Device:
    """One power-on of the device: bootloader, supervisor boot, worker passes, loop ticks."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.layout = StorageLayout(storage)
        self.console = io.StringIO()
        self.log = SupervisorLog(console=self.console)
        self.loop = FakeLoop()
        self.coordinator: UpdateCoordinator | None = None
        self.worker: UpdateWorker | None = None
        self.delivered: queue.Queue[Prepared] = queue.Queue()
        #: (number of points passed, phase) at the start of each phase, for the dry run
        self.phases: list[tuple[int, str]] = []

    def _phase(self, name: str) -> None:
        self.phases.append((len(durable.seen_points()), name))

    def boot(self) -> int:
        """The launcher's bootloader rule, then what ``Supervisor._boot_revision`` and start do."""
        self._phase("boot")
        environ = dev_choose_boot(self.storage)
        self.loop = FakeLoop()
        coordinator = UpdateCoordinator(self.layout, self.loop, log=self.log,
                                        environ=environ)
        self.loop.coordinator = coordinator
        plan = coordinator.on_boot()
        planned = plan.run
        if planned is not None and self.layout.trail(planned).is_dir():
            revision = planned
        else:
            revision = choose_revision(self.layout, None, self.log)
        load_trail(self.layout, revision)
        self.loop.running = revision
        coordinator.booted(revision)
        self.coordinator = coordinator
        self.worker = UpdateWorker(self.layout, coordinator.bootenv, coordinator.settings,
                                   log=self.log, deliver=self.delivered.put)
        coordinator.worker = self.worker
        return revision

    @property
    def running(self) -> int | None:
        """The revision the supervisor runs now (a live update switches it without a boot)."""
        return self.loop.running

    def worker_pass(self) -> None:
        """One poll of the update worker thread (inbox, then remote), run in this thread."""
        assert self.worker is not None and self.coordinator is not None
        if not self.worker.idle.is_set():
            return  # busy with a delivered update until the loop commits or fails it
        self._phase("prepare")
        self.worker._once()
        while not self.delivered.empty():
            self.coordinator.deliver(self.delivered.get())

    def run(self) -> None:
        """Run until nothing is left to do, rebooting when the supervisor asks to."""
        for _ in range(MAX_TURNS):
            assert self.coordinator is not None
            self.worker_pass()
            self._phase("begin" if self.coordinator.testing is None else "commit")
            self.coordinator.tick()
            if self.loop.reboot_requested:
                self.boot()
                continue
            idle = self.coordinator.testing is None and not self.coordinator.has_pending
            inbox = self.storage / "inbox"
            if idle and not list(inbox.glob("*.pvb")):
                return
        raise AssertionError("the update never settled:\n" + self.console.getvalue()[-3000:])


# -- what must hold after any restart ----------------------------------------------------------

def check_consistent(storage: Path, running: int | None) -> None:
    layout = StorageLayout(storage)
    env = FileBootEnv(storage / "boot" / "env").read()
    pv_rev = parse_revision(env.get("pv_rev"))
    pv_try = parse_revision(env.get("pv_try"))
    assert pv_rev in (1, 2), f"boot environment names no committed revision: {env}"
    load_trail(layout, pv_rev)
    if pv_try is not None:
        assert layout.trail(pv_try).is_dir(), f"pv_try {pv_try} has no trail: {env}"
    assert running is not None
    # the device runs a committed revision, or the one it is legitimately trying
    journal2 = read_journal(layout, 2)
    if running != pv_rev:
        assert running == pv_try == 2 and journal2 is not None \
            and journal2.state is UpdateState.TESTING, (running, env, journal2)
    current = read_ref(layout, "current")
    assert current == running
    load_trail(layout, current)
    done = read_ref(layout, "done")
    assert done is not None
    load_trail(layout, done)
    if journal2 is not None:
        if journal2.state in (UpdateState.WONTGO, UpdateState.ERROR):
            assert journal2.reason, journal2
        if journal2.state in COMMITTED:
            assert pv_rev == 2 and done == 2, (journal2.state, env, done)
        if pv_rev == 2 and pv_try is None:
            assert journal2.state in COMMITTED, (journal2.state, env)
    report = DiskObjectStore(layout.objects).fsck()
    assert report.problems == (), report.problems


# -- the dry run and the parametrization --------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """One persistence point passed on the update path: its name, occurrence and phase."""

    name: str
    occurrence: int
    phase: str
    """prepare (worker), begin (try or live), boot (bootloader + reconciliation), commit."""

    @property
    def id(self) -> str:
        return f"{self.phase}/{self.name}#{self.occurrence}"


def update_path(storage: Path) -> Device:
    """The whole update from the inbox to the commit, on a device already booted once."""
    device = Device(storage)
    device.boot()
    device.run()
    return device


def dry_run(scenario: Scenario) -> list[Point]:
    """Every persistence point of the update path, in order, with occurrence and phase."""
    top = Path(tempfile.mkdtemp(prefix="pvpl"))
    try:
        storage = make_device(top, scenario)
        durable.arm_crash(None)
        device = update_path(storage)
        names = durable.seen_points()
        journal = read_journal(device.layout, 2)
        assert journal is not None and journal.state in COMMITTED, journal
    finally:
        durable.arm_crash(None)
        shutil.rmtree(top, ignore_errors=True)
    counted: dict[str, int] = {}
    points = []
    for index, name in enumerate(names):
        counted[name] = counted.get(name, 0) + 1
        phase = [p for start, p in device.phases if start <= index][-1]
        points.append(Point(name, counted[name], phase))
    return points


_POINTS = {s.name: dry_run(s) for s in SCENARIOS}

def after_commit_point(point: Point) -> bool:
    """Points of the commit phase that come after its boot-environment write (the commit point)."""
    return point.phase == "commit" and point.name.startswith(
        ("journal.", "ref.current.", "ref.done."))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "crash_at" not in metafunc.fixturenames:
        return
    only_after_commit = "after_the_commit_point" in metafunc.function.__name__
    metafunc.parametrize("scenario,crash_at", [
        pytest.param(s, p, id=f"{s.name}:{p.id}")
        for s in SCENARIOS for p in _POINTS[s.name]
        if not only_after_commit or after_commit_point(p)
    ])


@pytest.fixture
def scratch() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="pvpl"))
    try:
        yield top
    finally:
        durable.arm_crash(None)
        shutil.rmtree(top, ignore_errors=True)


# -- the tests --------------------------------------------------------------------------------

def test_the_update_path_passes_every_kind_of_persistence_point() -> None:
    """Guard the coverage itself: a refactor that loses a kind of point fails here."""
    reboot = {p.name for p in _POINTS["reboot"]}
    live = {p.name for p in _POINTS["live"]}
    for needed in ("journal.write", "journal.rename", "object.write", "object.rename",
                   "trail.doc.write", "trail.boot.rename", "trail.envelope.write",
                   "trail.state.rename", "trail.rename", "bootenv.write", "bootenv.rename",
                   "ref.try.write", "ref.current.rename", "ref.done.write", "ref.try.unlink"):
        assert needed in reboot, needed
    assert "ref.try.write" not in live
    assert {"journal.write", "object.write", "bootenv.rename", "ref.done.write"} <= live
    phases = {p.phase for p in _POINTS["reboot"]}
    assert phases == {"prepare", "begin", "boot", "commit"}, phases


def cut_and_restart(storage: Path, crash_at: Point) -> Device:
    """Cut the power at ``crash_at`` during the update, then power on again."""
    durable.arm_crash(crash_at.name, crash_at.occurrence)
    with pytest.raises(durable.SimulatedCrash):
        update_path(storage)
    durable.arm_crash(None)  # the power comes back
    device = Device(storage)
    device.boot()
    device.worker_pass()  # the worker resumes a bundle still in the inbox
    return device


def check_update_ends(device: Device) -> None:
    """Left to run, the update ends committed, or refused/rolled back with a reason."""
    device.run()
    check_consistent(device.storage, device.running)
    journal = read_journal(device.layout, 2)
    assert journal is not None and journal.state in TERMINAL, journal
    env = FileBootEnv(device.storage / "boot" / "env").read()
    if journal.state in COMMITTED:
        assert device.running == 2 and env.get("pv_rev") == "2"
    else:
        assert journal.reason and device.running == 1 and env.get("pv_rev") == "1"
    assert "pv_try" not in env and read_ref(device.layout, "try") is None


def test_power_cut_at_a_persistence_point_recovers_to_a_committed_revision(
    scratch: Path, scenario: Scenario, crash_at: Point,
) -> None:
    storage = make_device(scratch, scenario)
    device = cut_and_restart(storage, crash_at)
    check_consistent(storage, device.running)
    check_update_ends(device)


def test_power_cut_after_the_commit_point_is_settled_at_boot(
    scratch: Path, scenario: Scenario, crash_at: Point,
) -> None:
    """A cut after the boot environment committed: boot finishes the journal and the refs."""
    storage = make_device(scratch, scenario)
    device = cut_and_restart(storage, crash_at)
    check_consistent(storage, device.running)
    assert device.running == 2  # past the commit point, the new revision stays
    check_update_ends(device)

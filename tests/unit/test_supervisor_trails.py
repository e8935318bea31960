"""Device storage: refs by compare-and-swap, trails installed whole or not at all."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pvinit import durable
from pvinit.bundle.writer import write_bundle
from pvinit.errors import (
    BundleFormatError,
    ConflictError,
    IntegrityError,
    ObjectNotFoundError,
    RevisionNotFoundError,
)
from pvinit.objects.disk import DiskObjectStore
from pvinit.signing.envelope import Envelope
from pvinit.state.canonical import canonical_bytes, parse_json
from pvinit.trails.install import install_bundle, install_revision, load_trail
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import move_ref, read_ref

ROOT_BYTES = b"pretend squashfs"
KERNEL_BYTES = b"pretend kernel"


def revision(
    store: DiskObjectStore, number: int = 1, message: str = "one"
) -> tuple[bytes, Envelope]:
    root = store.add_bytes(ROOT_BYTES)
    kernel = store.add_bytes(KERNEL_BYTES)
    entries = {
        "#spec": "pvinit-state@1",
        "device.json": {"groups": [{"name": "app", "status_goal": "STARTED",
                                    "restart_policy": "container", "timeout": 5}]},
        "bsp/run.json": {"linux": "kernel.img"},
        "bsp/kernel.img": kernel,
        "app/run.json": {"name": "app", "group": "app", "root-volume": "root.squashfs"},
        "app/root.squashfs": root,
    }  # fmt: skip
    state = canonical_bytes(entries)
    envelope = Envelope.create(
        revision=number, parent=None, state_bytes=state,
        sizes={root: len(ROOT_BYTES), kernel: len(KERNEL_BYTES)},
        created=datetime(2026, 1, 1, tzinfo=UTC), message=message,
    )  # fmt: skip
    return state, envelope


@pytest.fixture
def layout(tmp_path: Path) -> StorageLayout:
    return StorageLayout(tmp_path / "storage")


@pytest.fixture
def store(layout: StorageLayout) -> DiskObjectStore:
    return DiskObjectStore.create(layout.objects)


def test_a_ref_moves_only_from_the_expected_value(layout: StorageLayout) -> None:
    assert read_ref(layout, "current") is None
    move_ref(layout, "current", 1, expect=None)
    move_ref(layout, "current", 2, expect=1)
    with pytest.raises(ConflictError) as caught:
        move_ref(layout, "current", 3, expect=1)
    assert caught.value.where == "refs/current"
    assert read_ref(layout, "current") == 2
    move_ref(layout, "current", None, expect=2)
    assert read_ref(layout, "current") is None


def test_installed_trail_hard_links_objects_and_writes_documents(
    layout: StorageLayout, store: DiskObjectStore
) -> None:
    state, envelope = revision(store)
    installed = install_revision(layout, state_bytes=state, envelope=envelope)
    trail = layout.trail(1)
    root_id = installed.state.objects["app/root.squashfs"]
    assert (trail / "app/root.squashfs").stat().st_ino == store.path(root_id).stat().st_ino
    run = parse_json((trail / "app/run.json").read_bytes(), where="x")
    assert isinstance(run, dict) and run["name"] == "app"
    assert (trail / "state.json").read_bytes() == state
    boot = parse_json(layout.boot_record(1).read_bytes(), where="boot.json")
    assert boot == {"revision": 1, "linux": str(trail / "bsp/kernel.img"),
                    "initrd": None, "dtb": None}  # fmt: skip
    assert load_trail(layout, 1).envelope == envelope


def test_installing_the_same_revision_twice_is_a_noop(
    layout: StorageLayout, store: DiskObjectStore
) -> None:
    state, envelope = revision(store)
    install_revision(layout, state_bytes=state, envelope=envelope)
    before = (layout.trail(1) / "state.json").stat().st_mtime_ns
    install_revision(layout, state_bytes=state, envelope=envelope)
    assert (layout.trail(1) / "state.json").stat().st_mtime_ns == before


def test_a_revision_number_taken_by_other_content_is_a_conflict(
    layout: StorageLayout, store: DiskObjectStore
) -> None:
    state, envelope = revision(store)
    install_revision(layout, state_bytes=state, envelope=envelope)
    state2, envelope2 = revision(store, message="other")
    with pytest.raises(ConflictError):
        install_revision(layout, state_bytes=state2, envelope=envelope2)


def test_a_trail_cut_off_by_a_power_loss_is_redone(
    layout: StorageLayout, store: DiskObjectStore
) -> None:
    state, envelope = revision(store)
    durable.arm_crash("trail.rename")
    try:
        with pytest.raises(durable.SimulatedCrash):
            install_revision(layout, state_bytes=state, envelope=envelope)
    finally:
        durable.arm_crash(None)
    assert not layout.trail(1).exists()
    assert layout.partial_trail(1).exists()
    install_revision(layout, state_bytes=state, envelope=envelope)
    assert not layout.partial_trail(1).exists()
    assert load_trail(layout, 1).revision == 1


def test_a_revision_whose_object_is_missing_is_refused_and_nothing_installed(
    layout: StorageLayout, store: DiskObjectStore
) -> None:
    state, envelope = revision(store)
    store.remove(store.add_bytes(ROOT_BYTES))
    with pytest.raises(ObjectNotFoundError) as caught:
        install_revision(layout, state_bytes=state, envelope=envelope)
    assert "app/root.squashfs" in caught.value.message
    assert not layout.trail(1).exists()
    assert not layout.partial_trail(1).exists()


def test_state_bytes_not_matching_the_envelope_are_refused(
    layout: StorageLayout, store: DiskObjectStore
) -> None:
    state, envelope = revision(store)
    with pytest.raises(IntegrityError):
        install_revision(layout, state_bytes=state + b" ", envelope=envelope)


def test_loading_an_uninstalled_revision_names_it(layout: StorageLayout) -> None:
    with pytest.raises(RevisionNotFoundError):
        load_trail(layout, 9)


def test_install_bundle_imports_objects_then_installs_the_trail(
    tmp_path: Path, layout: StorageLayout
) -> None:
    source = DiskObjectStore.create(tmp_path / "source")
    state, envelope = revision(source)
    bundle = tmp_path / "r1.pvb"
    write_bundle(bundle, envelope=envelope, state_bytes=state, store=source,
                 object_ids=sorted(envelope.sizes))  # fmt: skip
    installed = install_bundle(layout, bundle)
    assert installed.revision == 1
    assert sorted(DiskObjectStore(layout.objects).ids()) == sorted(envelope.sizes)
    assert install_bundle(layout, bundle).revision == 1  # idempotent


def test_a_truncated_bundle_changes_nothing(tmp_path: Path, layout: StorageLayout) -> None:
    source = DiskObjectStore.create(tmp_path / "source")
    state, envelope = revision(source)
    bundle = tmp_path / "r1.pvb"
    write_bundle(bundle, envelope=envelope, state_bytes=state, store=source,
                 object_ids=sorted(envelope.sizes))  # fmt: skip
    bundle.write_bytes(bundle.read_bytes()[:-5])
    with pytest.raises(BundleFormatError):
        install_bundle(layout, bundle)
    assert not layout.root.exists()

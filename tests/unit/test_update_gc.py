"""Device GC: the revisions refs point at stay bootable, everything else is reclaimed."""

from __future__ import annotations

from pathlib import Path

from pvinit.objects.disk import DiskObjectStore
from pvinit.trails.install import install_revision, load_trail
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import move_ref
from pvinit.update.gc import collect_garbage
from tests.unit.test_supervisor_trails import revision


def test_gc_keeps_referenced_trails_and_removes_old_and_partial_ones(tmp_path: Path) -> None:
    layout = StorageLayout(tmp_path / "storage")
    store = DiskObjectStore.create(layout.objects)
    for number in (1, 2, 3):
        state, envelope = revision(store, number, message=f"r{number}")
        install_revision(layout, state_bytes=state, envelope=envelope)
    move_ref(layout, "factory", 1, expect=None)
    move_ref(layout, "current", 3, expect=None)
    partial = layout.partial_trail(4)
    (partial / "app").mkdir(parents=True)
    (partial / "app" / "leftover").write_bytes(b"a power cut's half-installed trail")
    (layout.trail(2) / "app" / "linked").symlink_to(layout.objects)  # must not be followed
    objects_before = sorted(p.name for p in layout.objects.rglob("*") if p.is_file())
    logged: list[str] = []

    report = collect_garbage(layout, store, log=logged.append)

    assert layout.trail(1).is_dir() and layout.trail(3).is_dir()
    assert not layout.trail(2).exists()
    assert not partial.exists()
    assert load_trail(layout, 3).envelope.message == "r3"
    # Every object is still referenced by revision 1 or 3 (all three share them).
    assert sorted(p.name for p in layout.objects.rglob("*") if p.is_file()) == objects_before
    assert report.removed == ()
    assert "removed 2 trail(s)" in logged[-1]

"""What only the disk store promises: layout, read-only objects, crash safety, fsck of files."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvinit import durable
from pvinit.errors import IntegrityError, NoSpaceError, NotFoundError, ObjectNotFoundError
from pvinit.objects import DiskObjectStore


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DiskObjectStore]:
    yield DiskObjectStore.create(tmp_path / "objects")
    durable.arm_crash(None)


def temp_files(store: DiskObjectStore) -> list[str]:
    return sorted(path.name for path in store.tmp_dir.iterdir())


# -- creating and opening ------------------------------------------------------

def test_opening_a_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist") as caught:
        DiskObjectStore(tmp_path / "nope")
    assert caught.value.where == str(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_opening_a_file_as_store_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotFoundError, match="not a directory"):
        DiskObjectStore(tmp_path / "file")


def test_create_makes_the_directories_and_keeps_an_existing_store(tmp_path: Path) -> None:
    first = DiskObjectStore.create(tmp_path / "a" / "objects")
    object_id = first.add_bytes(b"kept")
    again = DiskObjectStore.create(tmp_path / "a" / "objects")
    assert again.read_bytes(object_id) == b"kept"
    assert (tmp_path / "a" / "objects" / "tmp").is_dir()


# -- layout and files -------------------------------------------------------------

def test_object_lives_at_fanout_path_and_is_read_only(store: DiskObjectStore) -> None:
    object_id = store.add_bytes(b"layout")
    path = store.path(object_id)
    assert path == store.root / object_id[:2] / object_id[2:]
    assert path.read_bytes() == b"layout"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


def test_object_is_read_only_whatever_the_umask(store: DiskObjectStore) -> None:
    old = os.umask(0o277)
    try:
        object_id = store.add_bytes(b"umask")
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.path(object_id).stat().st_mode) == 0o444


def test_object_file_can_be_hard_linked(store: DiskObjectStore, tmp_path: Path) -> None:
    object_id = store.add_bytes(b"linked into a trail")
    os.link(store.path(object_id), tmp_path / "trail-file")
    assert (tmp_path / "trail-file").read_bytes() == b"linked into a trail"
    assert store.fsck().clean


def test_path_of_missing_object_is_not_found(store: DiskObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.path(sha(b"absent"))


def test_no_temp_file_is_left_after_adds_and_failures(store: DiskObjectStore) -> None:
    store.add_bytes(b"new")
    store.add_bytes(b"new")
    with pytest.raises(IntegrityError):
        store.add_bytes(b"new", expected_id=sha(b"other"))
    with pytest.raises(IntegrityError):
        store.add_bytes(b"too big", max_size=3)
    assert temp_files(store) == []


def test_adding_an_existing_object_skips_the_fsync(store: DiskObjectStore) -> None:
    durable.arm_crash(None)
    store.add_bytes(b"once")
    assert durable.seen_points() == ["object.write", "object.rename"]
    durable.arm_crash(None)
    store.add_bytes(b"once")
    assert durable.seen_points() == []


def test_symlink_at_an_object_path_is_never_followed(
    store: DiskObjectStore, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the store")
    object_id = sha(b"outside the store")
    (store.root / object_id[:2]).mkdir()
    (store.root / object_id[:2] / object_id[2:]).symlink_to(secret)
    assert not store.contains(object_id)
    with pytest.raises(ObjectNotFoundError):
        store.open(object_id)
    with pytest.raises(ObjectNotFoundError):
        store.size(object_id)
    assert list(store.ids()) == []


def test_a_file_where_a_fanout_directory_belongs_is_an_integrity_error(
    store: DiskObjectStore,
) -> None:
    object_id = sha(b"blocked")
    (store.root / object_id[:2]).write_bytes(b"in the way")
    assert not store.contains(object_id)
    with pytest.raises(IntegrityError, match="fan-out") as caught:
        store.add_bytes(b"blocked")
    assert caught.value.where == str(store.root / object_id[:2])
    assert temp_files(store) == []
    store.fsck(repair=True)
    assert store.add_bytes(b"blocked") == object_id


# -- power cuts ---------------------------------------------------------------------

@pytest.mark.parametrize("crash_point", ["object.write", "object.rename"])
def test_crash_before_publishing_leaves_no_object_and_fsck_cleans_the_temp(
    store: DiskObjectStore, crash_point: str
) -> None:
    durable.arm_crash(crash_point)
    with pytest.raises(durable.SimulatedCrash):
        store.add_bytes(b"interrupted")
    durable.arm_crash(None)
    object_id = sha(b"interrupted")
    assert not store.contains(object_id)
    assert list(store.ids()) == []
    assert len(temp_files(store)) == 1

    report = store.fsck()
    assert [problem.kind for problem in report.problems] == ["temp"]
    repaired = store.fsck(repair=True)
    assert len(repaired.repaired) == 1
    assert temp_files(store) == []
    assert store.fsck().clean
    assert store.add_bytes(b"interrupted") == object_id


def test_fsck_leaves_a_temp_file_a_live_writer_holds(store: DiskObjectStore) -> None:
    in_progress = store.tmp_dir / "writer.tmp"
    with open(in_progress, "wb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        assert store.fsck(repair=True).clean
        assert in_progress.exists()
    report = store.fsck()
    assert [problem.path for problem in report.problems] == [str(in_progress)]


# -- fsck of stray files ----------------------------------------------------------------

def test_fsck_finds_stray_files_and_repair_quarantines_them(
    store: DiskObjectStore, tmp_path: Path
) -> None:
    good = store.add_bytes(b"good object")
    full_id = sha(b"at the wrong level")
    strays = {
        "junk": b"junk at the top",
        full_id: b"at the wrong level",
        "AB/" + "c" * 62: b"uppercase fan-out",
        good[:2] + "/" + "d" * 61: b"short name",
        good[:2] + "/" + "E" * 62: b"uppercase name",
        good[:2] + "/" + "f" * 62 + ".old": b"suffix",
    }
    for relative, data in strays.items():
        (store.root / relative).parent.mkdir(exist_ok=True)
        (store.root / relative).write_bytes(data)
    (store.root / good[:2] / ("0" * 62)).mkdir()  # a directory where an object would be
    (store.root / good[:2] / ("1" * 62)).symlink_to(tmp_path / "nowhere")
    (store.root / "README.md").write_text("this directory is an object store\n")

    report = store.fsck()
    stray_paths = sorted(p.path for p in report.problems if p.kind == "stray")
    expected = sorted(
        [str(store.root / name) for name in ("junk", full_id, "AB")]
        + [str(store.root / good[:2] / rest) for rest in (
            "d" * 61, "E" * 62, "f" * 62 + ".old", "0" * 62, "1" * 62)]
    )
    assert stray_paths == expected
    assert report.checked == 1

    repaired = store.fsck(repair=True)
    assert len(repaired.repaired) == len(expected)
    quarantine = store.root / "quarantine" / "1"
    assert (quarantine / "junk").read_bytes() == b"junk at the top"
    assert (quarantine / "AB" / ("c" * 62)).read_bytes() == b"uppercase fan-out"
    assert (quarantine / good[:2] / ("E" * 62)).read_bytes() == b"uppercase name"
    assert (quarantine / good[:2] / ("1" * 62)).is_symlink()
    assert store.fsck().clean
    assert store.read_bytes(good) == b"good object"
    assert (store.root / "README.md").exists()


def test_each_repair_gets_its_own_quarantine(store: DiskObjectStore) -> None:
    for round_number in (1, 2):
        (store.root / "junk").write_bytes(f"round {round_number}".encode())
        store.fsck(repair=True)
    assert (store.root / "quarantine" / "1" / "junk").read_bytes() == b"round 1"
    assert (store.root / "quarantine" / "2" / "junk").read_bytes() == b"round 2"


def test_corrupt_object_is_quarantined_with_its_bytes(store: DiskObjectStore) -> None:
    object_id = store.add_bytes(b"original")
    path = store.path(object_id)
    path.chmod(0o644)
    path.write_bytes(b"bit rot!")
    report = store.fsck(repair=True)
    assert [problem.kind for problem in report.problems] == ["corrupt"]
    moved = store.root / "quarantine" / "1" / object_id[:2] / object_id[2:]
    assert moved.read_bytes() == b"bit rot!"
    assert not store.contains(object_id)


def test_gc_removes_files_and_keeps_reachable(store: DiskObjectStore) -> None:
    keep = store.add_bytes(b"keep")
    drop = store.add_bytes(b"drop")
    store.gc([keep])
    assert store.path(keep).exists()
    assert not (store.root / drop[:2] / drop[2:]).exists()


# -- running out of space (a real, tiny tmpfs) ----------------------------------

@pytest.mark.root
def test_full_filesystem_is_no_space_and_leaves_no_temp(tmp_path: Path) -> None:
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
                   check=True)
    try:
        store = DiskObjectStore.create(mountpoint / "objects")
        with pytest.raises(NoSpaceError) as caught:
            store.add_bytes(os.urandom(2 << 20))
        assert caught.value.where == str(store.root)
        assert temp_files(store) == []
        assert list(store.ids()) == []
        assert store.add_bytes(b"small still fits") == sha(b"small still fits")
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", str(mountpoint)], check=True)

"""The ObjectStore contract: one suite, run against every backend.

Whatever code tests against :class:`MemoryObjectStore` must behave the same
on a device's :class:`DiskObjectStore`; this suite is what makes that true.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvinit.errors import (
    BadInputError,
    IntegrityError,
    InvalidObjectIdError,
    NotFoundError,
    ObjectNotFoundError,
)
from pvinit.objects import DiskObjectStore, MemoryObjectStore, ObjectStore

BACKENDS = ["disk", "memory"]


def make_store(kind: str, root: Path) -> ObjectStore:
    if kind == "disk":
        return DiskObjectStore.create(root / "objects")
    return MemoryObjectStore()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    return make_store(request.param, tmp_path)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(tmp_path: Path) -> list[tuple[str, int]]:
    """Every path under tmp_path with its size: to prove nothing on disk changed."""
    return sorted(
        (str(p.relative_to(tmp_path)), p.stat().st_size if p.is_file() else -1)
        for p in tmp_path.rglob("*")
    )


# -- adding -------------------------------------------------------------------

def test_add_bytes_returns_the_sha256_and_reads_back(store: ObjectStore) -> None:
    object_id = store.add_bytes(b"hello objects")
    assert object_id == sha(b"hello objects")
    assert store.read_bytes(object_id) == b"hello objects"
    assert store.contains(object_id)
    assert object_id in store
    assert store.size(object_id) == len(b"hello objects")


def test_add_file_stores_the_file_content(store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"tail"  # more than one read chunk
    source = tmp_path / "input.bin"
    source.write_bytes(data)
    object_id = store.add_file(source)
    assert object_id == sha(data)
    assert store.read_bytes(object_id) == data


def test_add_stream_reads_a_stream_to_its_end(store: ObjectStore) -> None:
    data = b"x" * 100_000
    assert store.add_stream(io.BytesIO(data)) == sha(data)
    assert store.read_bytes(sha(data)) == data


def test_empty_object_is_a_valid_object(store: ObjectStore) -> None:
    object_id = store.add_bytes(b"")
    assert object_id == sha(b"")
    assert store.read_bytes(object_id) == b""
    assert store.size(object_id) == 0


def test_adding_existing_object_is_a_noop(store: ObjectStore) -> None:
    first = store.add_bytes(b"same")
    second = store.add_bytes(b"same", expected_id=first)
    assert first == second
    assert list(store.ids()) == [first]
    assert store.stats().count == 1


def test_expected_id_mismatch_raises_and_stores_nothing(
    store: ObjectStore, tmp_path: Path
) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(IntegrityError) as caught:
        store.add_bytes(b"actual", expected_id=sha(b"claimed"))
    assert caught.value.where == sha(b"claimed")
    assert list(store.ids()) == []
    assert snapshot(tmp_path) == before


def test_content_over_max_size_raises_and_stores_nothing(
    store: ObjectStore, tmp_path: Path
) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(IntegrityError, match="larger than the allowed 9 bytes"):
        store.add_stream(io.BytesIO(b"0123456789"), max_size=9)
    assert list(store.ids()) == []
    assert snapshot(tmp_path) == before


def test_content_of_exactly_max_size_is_accepted(store: ObjectStore) -> None:
    assert store.add_stream(io.BytesIO(b"0123456789"), max_size=10) == sha(b"0123456789")


def test_negative_max_size_is_bad_input(store: ObjectStore) -> None:
    with pytest.raises(BadInputError, match="max_size"):
        store.add_bytes(b"x", max_size=-1)


def test_stream_without_readinto_is_accepted(store: ObjectStore) -> None:
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def read(self, size: int = -1) -> bytes:
            return self._inner.read(min(size, 7))  # short reads, as a socket gives

    assert store.add_stream(ReadOnly(b"a" * 50)) == sha(b"a" * 50)  # type: ignore[arg-type]


# -- ids are validated before anything is touched ------------------------------

BAD_IDS: list[object] = [
    "../x",
    "../" + "a" * 61,
    "A" * 64,
    "a" * 63,
    "a" * 65,
    "ab/" + "c" * 61,
    "",
    None,
    42,
    b"a" * 64,
]


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
@pytest.mark.parametrize(
    "operation",
    ["contains", "open", "size", "verify", "remove", "read_bytes"],
)
def test_invalid_ids_are_rejected_before_touching_disk(
    store: ObjectStore, tmp_path: Path, bad_id: object, operation: str
) -> None:
    store.add_bytes(b"present")
    before = snapshot(tmp_path)
    method: Callable[[object], object] = getattr(store, operation)
    with pytest.raises(InvalidObjectIdError):
        method(bad_id)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("bad_id", [i for i in BAD_IDS if i is not None], ids=repr)
def test_invalid_expected_id_is_rejected_before_reading(
    store: ObjectStore, tmp_path: Path, bad_id: object
) -> None:
    before = snapshot(tmp_path)
    stream = io.BytesIO(b"data")
    with pytest.raises(InvalidObjectIdError):
        store.add_stream(stream, expected_id=bad_id)  # type: ignore[arg-type]
    assert stream.tell() == 0
    assert snapshot(tmp_path) == before


def test_non_str_is_never_contained(store: ObjectStore) -> None:
    assert 42 not in store
    assert None not in store


# -- missing objects ------------------------------------------------------------

@pytest.mark.parametrize("operation", ["open", "size", "verify", "remove", "read_bytes"])
def test_missing_object_error_names_the_id(store: ObjectStore, operation: str) -> None:
    missing = sha(b"never added")
    with pytest.raises(ObjectNotFoundError) as caught:
        getattr(store, operation)(missing)
    assert caught.value.where == missing
    assert not store.contains(missing)


# -- gc, stats, verify, fsck ----------------------------------------------------

def test_gc_keeps_reachable_and_removes_the_rest(store: ObjectStore) -> None:
    keep = store.add_bytes(b"reachable")
    drop_a = store.add_bytes(b"garbage one")
    drop_b = store.add_bytes(b"garbage two!")
    report = store.gc([keep])
    assert report.removed == tuple(sorted([drop_a, drop_b]))
    assert report.reclaimed_bytes == len(b"garbage one") + len(b"garbage two!")
    assert report.kept == 1
    assert list(store.ids()) == [keep]
    assert store.read_bytes(keep) == b"reachable"


def test_gc_with_an_invalid_id_in_keep_removes_nothing(store: ObjectStore) -> None:
    store.add_bytes(b"one")
    store.add_bytes(b"two")
    with pytest.raises(InvalidObjectIdError):
        store.gc(["../etc"])
    assert store.stats().count == 2


def test_remove_returns_the_bytes_freed(store: ObjectStore) -> None:
    object_id = store.add_bytes(b"12345")
    assert store.remove(object_id) == 5
    assert not store.contains(object_id)


def test_stats_count_objects_and_bytes(store: ObjectStore) -> None:
    assert store.stats().to_dict() == {"count": 0, "total_bytes": 0}
    store.add_bytes(b"abc")
    store.add_bytes(b"defgh")
    store.add_bytes(b"abc")
    assert store.stats().to_dict() == {"count": 2, "total_bytes": 8}


def corrupt(store: ObjectStore, object_id: str, data: bytes) -> None:
    """Change a stored object's bytes behind the store's back."""
    if isinstance(store, MemoryObjectStore):
        store._corrupt_for_test(object_id, data)
        return
    path = store.path(object_id)
    assert path is not None
    path.chmod(0o644)
    path.write_bytes(data)


def test_verify_detects_corruption(store: ObjectStore) -> None:
    good = store.add_bytes(b"good")
    bad = store.add_bytes(b"soon bad")
    corrupt(store, bad, b"soon bat")
    assert store.verify(good)
    assert not store.verify(bad)


def test_fsck_of_a_healthy_store_is_clean(store: ObjectStore) -> None:
    for index in range(5):
        store.add_bytes(f"object {index}".encode())
    report = store.fsck()
    assert report.clean
    assert report.checked == 5


def test_fsck_reports_corrupt_objects_and_repair_takes_them_out(store: ObjectStore) -> None:
    good = store.add_bytes(b"good")
    bad = store.add_bytes(b"soon bad")
    corrupt(store, bad, b"tampered")
    report = store.fsck()
    assert [problem.kind for problem in report.problems] == ["corrupt"]
    assert report.problems[0].path.replace("/", "").endswith(bad)  # a disk path or the id
    assert store.contains(bad)  # no repair: nothing moved

    repaired = store.fsck(repair=True)
    assert len(repaired.repaired) == 1
    assert not store.contains(bad)
    assert store.contains(good)
    assert store.fsck().clean
    assert store.add_bytes(b"soon bad") == bad  # it can be fetched again
    assert store.verify(bad)


def test_fsck_report_serialises(store: ObjectStore) -> None:
    store.add_bytes(b"x")
    assert store.fsck().to_dict() == {"checked": 1, "clean": True, "problems": [], "repaired": []}


# -- property ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", BACKENDS)
def test_added_bytes_read_back_identical_under_their_sha256(
    kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = make_store(kind, tmp_path_factory.mktemp(kind))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.binary(max_size=5000))
    def add_then_read(data: bytes) -> None:
        object_id = store.add_bytes(data)
        assert object_id == sha(data)
        assert store.read_bytes(object_id) == data
        assert store.verify(object_id)

    add_then_read()


def test_adding_a_missing_file_is_not_found_naming_it(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as caught:
        store.add_file(tmp_path / "missing.bin")
    assert caught.value.where == str(tmp_path / "missing.bin")


def test_adding_a_directory_is_bad_input(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="directory"):
        store.add_file(tmp_path)

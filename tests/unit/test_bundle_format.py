from __future__ import annotations

import hashlib
import struct
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvinit.bundle.format import MAGIC, MAX_HEADER, BundleEntry, BundleHeader
from pvinit.bundle.reader import BundleReader
from pvinit.bundle.writer import write_bundle
from pvinit.errors import (
    BadInputError,
    BundleFormatError,
    IntegrityError,
    InvalidStateError,
    NotFoundError,
)
from pvinit.objects.disk import DiskObjectStore
from pvinit.objects.memory import MemoryObjectStore
from pvinit.signing.envelope import Envelope

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
STATE = b'{"#spec":"pvinit-state@1"}'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def envelope_for(sizes: dict[str, int], state: bytes = STATE) -> Envelope:
    return Envelope.create(revision=1, parent=None, state_bytes=state, sizes=sizes, created=NOW)


def fill(store: MemoryObjectStore | DiskObjectStore, *blobs: bytes) -> dict[str, int]:
    return {store.add_bytes(blob): len(blob) for blob in blobs}


def raw_bundle(
    path: Path, objects: list[tuple[str, int, bytes]], *, state: bytes = STATE,
    envelope_state: bytes | None = None,
) -> Path:
    """Write a bundle by hand: (id, declared size, frame bytes) may lie on purpose."""
    sizes = {object_id: size for object_id, size, _ in objects}
    envelope = envelope_for(sizes, envelope_state if envelope_state is not None else state)
    header = BundleHeader(
        envelope=envelope, state=state,
        objects=tuple(BundleEntry(i, s, len(f)) for i, s, f in objects),
    )
    path.write_bytes(header.encode() + b"".join(f for _, _, f in objects))
    return path


def frame(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


@pytest.fixture
def disk_store(tmp_path: Path) -> DiskObjectStore:
    return DiskObjectStore.create(tmp_path / "objects")


def write_simple(tmp_path: Path, store: DiskObjectStore | MemoryObjectStore,
                 *blobs: bytes) -> tuple[Path, Envelope]:
    sizes = fill(store, *blobs)
    envelope = envelope_for(sizes)
    out = tmp_path / "update.pvb"
    write_bundle(out, envelope=envelope, state_bytes=STATE, store=store, object_ids=list(sizes))
    return out, envelope


# -- round trip ---------------------------------------------------------------


def test_bundle_round_trips_from_disk_store_to_memory_store(
    tmp_path: Path, disk_store: DiskObjectStore
) -> None:
    blobs = [b"kernel" * 1000, b"", b"squashfs" * 50000]
    out, envelope = write_simple(tmp_path, disk_store, *blobs)
    target = MemoryObjectStore()
    with BundleReader(out) as reader:
        assert reader.header.envelope == envelope
        assert reader.header.state == STATE
        reader.verify()
        report = reader.import_into(target)
    assert sorted(report.added) == sorted(sha(b) for b in blobs)
    assert report.bytes_added == sum(len(b) for b in blobs)
    for blob in blobs:
        assert target.read_bytes(sha(blob)) == blob


def test_import_skips_objects_the_store_already_has(
    tmp_path: Path, disk_store: DiskObjectStore
) -> None:
    out, _ = write_simple(tmp_path, disk_store, b"one", b"two")
    target = MemoryObjectStore()
    target.add_bytes(b"one")
    with BundleReader(out) as reader:
        report = reader.import_into(target)
    assert report.added == (sha(b"two"),)
    assert report.already_present == (sha(b"one"),)


def test_import_into_a_disk_store(tmp_path: Path) -> None:
    source = MemoryObjectStore()
    out, _ = write_simple(tmp_path, source, b"alpha" * 999, b"beta")
    target = DiskObjectStore.create(tmp_path / "device-objects")
    with BundleReader(out) as reader:
        reader.import_into(target)
    assert sorted(target.ids()) == sorted([sha(b"alpha" * 999), sha(b"beta")])
    assert target.verify(sha(b"beta"))


def test_progress_reports_uncompressed_bytes_up_to_the_total(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    store = MemoryObjectStore()
    sizes = fill(store, b"x" * (3 << 20), b"y" * 10)
    write_bundle(tmp_path / "b.pvb", envelope=envelope_for(sizes), state_bytes=STATE,
                 store=store, object_ids=list(sizes), progress=lambda d, t: seen.append((d, t)))
    total = (3 << 20) + 10
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_delta_bundle_with_a_base_may_carry_a_subset(tmp_path: Path) -> None:
    store = MemoryObjectStore()
    sizes = fill(store, b"old", b"new")
    envelope = envelope_for(sizes)
    out = tmp_path / "delta.pvb"
    write_bundle(out, envelope=envelope, state_bytes=STATE, store=store,
                 object_ids=[sha(b"new")], base="aa" * 32)
    with BundleReader(out) as reader:
        assert reader.header.base == "aa" * 32
        assert [e.object_id for e in reader.header.objects] == [sha(b"new")]
        reader.verify()


# -- writer refusals (nothing written) -----------------------------------------


def test_writer_refuses_a_full_bundle_missing_an_object(tmp_path: Path) -> None:
    store = MemoryObjectStore()
    sizes = fill(store, b"a", b"b")
    out = tmp_path / "b.pvb"
    with pytest.raises(BundleFormatError, match="lacks 1 object"):
        write_bundle(out, envelope=envelope_for(sizes), state_bytes=STATE, store=store,
                     object_ids=[sha(b"a")])
    assert not out.exists()


def test_writer_refuses_state_bytes_not_matching_the_envelope(tmp_path: Path) -> None:
    store = MemoryObjectStore()
    with pytest.raises(IntegrityError, match="state bytes"):
        write_bundle(tmp_path / "b.pvb", envelope=envelope_for({}), state_bytes=b"{}",
                     store=store, object_ids=[])


def test_writer_refuses_an_object_the_envelope_does_not_reference(tmp_path: Path) -> None:
    store = MemoryObjectStore()
    stray = store.add_bytes(b"stray")
    with pytest.raises(BadInputError) as caught:
        write_bundle(tmp_path / "b.pvb", envelope=envelope_for({}), state_bytes=STATE,
                     store=store, object_ids=[stray])
    assert caught.value.where == stray


def test_writer_refuses_a_corrupt_object_and_leaves_no_file(tmp_path: Path) -> None:
    store = MemoryObjectStore()
    sizes = fill(store, b"good bytes")
    object_id = next(iter(sizes))
    store._corrupt_for_test(object_id, b"evil bytes")
    out = tmp_path / "b.pvb"
    with pytest.raises(IntegrityError) as caught:
        write_bundle(out, envelope=envelope_for(sizes), state_bytes=STATE, store=store,
                     object_ids=[object_id])
    assert caught.value.where == object_id
    assert list(tmp_path.iterdir()) == []


# -- reader refusals -----------------------------------------------------------


def test_truncated_bundle_is_refused_on_open(tmp_path: Path) -> None:
    out, _ = write_simple(tmp_path, MemoryObjectStore(), b"payload" * 100)
    out.write_bytes(out.read_bytes()[:-1])
    with pytest.raises(BundleFormatError, match="truncated") as caught:
        BundleReader(out)
    assert caught.value.where == str(out)


def test_bundle_cut_inside_the_header_is_refused(tmp_path: Path) -> None:
    out, _ = write_simple(tmp_path, MemoryObjectStore(), b"payload")
    out.write_bytes(out.read_bytes()[:20])
    with pytest.raises(BundleFormatError, match="truncated: header declares"):
        BundleReader(out)


def test_bad_magic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.pvb"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(BundleFormatError, match="not a pvinit bundle") as caught:
        BundleReader(path)
    assert caught.value.where == str(path)


def test_future_bundle_version_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.pvb"
    path.write_bytes(MAGIC[:-1] + b"\x02" + b"\x00" * 100)
    with pytest.raises(BundleFormatError, match="unsupported bundle version 2"):
        BundleReader(path)


def test_header_length_over_the_cap_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "x.pvb"
    path.write_bytes(MAGIC + struct.pack(">I", MAX_HEADER + 1))
    with pytest.raises(BundleFormatError, match="exceeds the 67108864 byte limit"):
        BundleReader(path)


def test_header_that_is_not_msgpack_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.pvb"
    path.write_bytes(MAGIC + struct.pack(">I", 3) + b"\xc1\xc1\xc1")
    with pytest.raises(BundleFormatError, match="not valid msgpack"):
        BundleReader(path)


def test_trailing_bytes_after_the_last_frame_are_refused(tmp_path: Path) -> None:
    out, _ = write_simple(tmp_path, MemoryObjectStore(), b"payload")
    out.write_bytes(out.read_bytes() + b"junk")
    with pytest.raises(BundleFormatError, match="4 unexpected bytes"):
        BundleReader(out)


def test_bad_envelope_in_header_is_named(tmp_path: Path) -> None:
    out, _ = write_simple(tmp_path, MemoryObjectStore(), b"payload")
    data = bytearray(out.read_bytes())
    index = data.index(b"pvinit-envelope@1")
    data[index : index + 17] = b"pvinit-envelope@9"
    out.write_bytes(bytes(data))
    with pytest.raises(InvalidStateError) as caught:
        BundleReader(out)
    assert str(out) in str(caught.value.where)


def test_corrupted_object_frame_names_the_object_and_offset(tmp_path: Path) -> None:
    blob = b"content" * 100
    path = raw_bundle(tmp_path / "x.pvb", [(sha(blob), len(blob), frame(blob))])
    data = bytearray(path.read_bytes())
    with BundleReader(path) as reader:
        offset = reader.data_offset
    data[offset : offset + 4] = b"\x00\x00\x00\x00"  # destroy the zstd frame magic
    path.write_bytes(bytes(data))
    with BundleReader(path) as reader, pytest.raises(BundleFormatError) as caught:
        reader.verify()
    assert sha(blob) in caught.value.message
    assert f"byte offset {offset}" in caught.value.message


def test_object_whose_content_does_not_match_its_id_is_refused(tmp_path: Path) -> None:
    claimed = sha(b"the real thing")
    path = raw_bundle(tmp_path / "x.pvb", [(claimed, 14, frame(b"a forged thing"))])
    with BundleReader(path) as reader, pytest.raises(IntegrityError, match="hashes to") as caught:
        reader.verify()
    assert claimed in caught.value.message


def test_declared_size_smaller_than_the_real_content_is_refused(tmp_path: Path) -> None:
    blob = b"0123456789" * 10
    path = raw_bundle(tmp_path / "x.pvb", [(sha(blob), 50, frame(blob))])
    with BundleReader(path) as reader, pytest.raises(
        IntegrityError, match="more than the declared 50 bytes"
    ) as caught:
        reader.verify()
    assert sha(blob) in caught.value.message


def test_declared_size_larger_than_the_real_content_is_cut_off(tmp_path: Path) -> None:
    blob = b"short"
    path = raw_bundle(tmp_path / "x.pvb", [(sha(blob), 500, frame(blob))])
    with BundleReader(path) as reader, pytest.raises(IntegrityError, match="cut off, 5 of"):
        reader.verify()


def test_decompression_bomb_stops_at_the_declared_size(tmp_path: Path) -> None:
    bomb = frame(bytes(256 << 20))  # 256 MiB of zeros in a few KiB
    path = raw_bundle(tmp_path / "x.pvb", [("ab" * 32, 10, bomb)])
    with BundleReader(path) as reader, pytest.raises(IntegrityError, match="declared 10"):
        reader.verify()


def test_state_bytes_not_matching_the_envelope_are_refused(tmp_path: Path) -> None:
    path = raw_bundle(tmp_path / "x.pvb", [], state=b'{"evil":1}', envelope_state=STATE)
    with BundleReader(path) as reader, pytest.raises(IntegrityError, match="state bytes"):
        reader.verify()


@pytest.mark.parametrize("store_kind", ["memory", "disk"])
def test_bad_bundle_changes_nothing_in_the_store(tmp_path: Path, store_kind: str) -> None:
    good, bad = b"good object", b"bad object"
    path = raw_bundle(
        tmp_path / "x.pvb",
        [(sha(good), len(good), frame(good)), (sha(bad), len(bad), frame(b"BAD object"))],
    )
    store = MemoryObjectStore() if store_kind == "memory" else DiskObjectStore.create(
        tmp_path / "objects"
    )
    with BundleReader(path) as reader, pytest.raises(IntegrityError):
        reader.import_into(store)
    assert list(store.ids()) == []


def test_missing_bundle_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        BundleReader(tmp_path / "nope.pvb")


def test_open_object_streams_one_verified_object(tmp_path: Path) -> None:
    out, _ = write_simple(tmp_path, MemoryObjectStore(), b"first", b"second")
    with BundleReader(out) as reader, reader.open_object(sha(b"second")) as stream:
        assert stream.read() == b"second"


# -- property -------------------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=4096), max_size=6), st.integers(1, 9))
def test_any_objects_round_trip_through_a_bundle(blobs: list[bytes], level: int) -> None:
    source = MemoryObjectStore()
    sizes = fill(source, *blobs)
    envelope = envelope_for(sizes)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "b.pvb"
        header = write_bundle(out, envelope=envelope, state_bytes=STATE, store=source,
                              object_ids=list(sizes), level=level)
        target = MemoryObjectStore()
        with BundleReader(out) as reader:
            assert reader.header == header
            reader.import_into(target)
    assert sorted(target.ids()) == sorted(sizes)
    for blob in blobs:
        assert target.read_bytes(sha(blob)) == blob


def test_directory_given_as_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleFormatError, match="is a directory") as caught:
        BundleReader(tmp_path)
    assert caught.value.where == str(tmp_path)

"""RemoteRepository over a hand-written remote layout on disk (file fetcher, disk store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvinit.errors import BadInputError, IntegrityError, InvalidObjectIdError, TransportError
from pvinit.objects.disk import DiskObjectStore
from pvinit.objects.memory import MemoryObjectStore
from pvinit.remote import layout
from pvinit.signing.envelope import Envelope
from pvinit.transport.fetcher import FileFetcher, RemoteNotFoundError
from pvinit.transport.remote import RemoteRepository
from pvinit.transport.wants import FetchedObject, FetchReport, ObjectWant, plan_wants
from tests.unit.test_transport_support import RemoteBuilder, blob, frame, sha


@pytest.fixture
def remote(tmp_path: Path) -> RemoteBuilder:
    return RemoteBuilder(tmp_path / "remote")


@pytest.fixture
def repo(remote: RemoteBuilder) -> RemoteRepository:
    return RemoteRepository(str(remote.root), FileFetcher())


@pytest.fixture
def store(tmp_path: Path) -> DiskObjectStore:
    return DiskObjectStore.create(tmp_path / "store")


def test_full_object_is_stored_verified_and_the_partial_removed(
        remote: RemoteBuilder, repo: RemoteRepository, store: DiskObjectStore,
        tmp_path: Path) -> None:
    data = blob(1)
    object_id = remote.add_object(data)
    work = tmp_path / "work"
    fetched = repo.fetch_object(ObjectWant(object_id, len(data)), store, workdir=work)
    assert fetched == FetchedObject(object_id, len(frame(data)), via_delta=False)
    assert store.read_bytes(object_id) == data
    assert list(work.iterdir()) == []


def test_delta_is_used_when_the_base_is_present(remote: RemoteBuilder, repo: RemoteRepository,
                                                store: DiskObjectStore, tmp_path: Path) -> None:
    old = blob(2, 256 << 10)
    new = old[:1000] + b"changed!" + old[1008:]
    base_id = store.add_bytes(old)
    remote.add_object(new)
    delta = remote.add_delta(old, new)
    fetched = repo.fetch_object(ObjectWant(sha(new), len(new), base_id), store,
                                workdir=tmp_path / "w")
    assert fetched.via_delta
    assert fetched.bytes_on_wire == delta.stat().st_size < len(frame(new))
    assert store.read_bytes(sha(new)) == new


def test_delta_is_skipped_when_the_base_is_absent(remote: RemoteBuilder,
                                                  repo: RemoteRepository,
                                                  store: DiskObjectStore,
                                                  tmp_path: Path) -> None:
    old, new = blob(3), blob(4)
    remote.add_object(new)
    remote.add_delta(old, new)
    fetched = repo.fetch_object(ObjectWant(sha(new), len(new), sha(old)), store,
                                workdir=tmp_path / "w")
    assert not fetched.via_delta
    assert store.contains(sha(new))


def test_missing_delta_falls_back_to_the_whole_object(remote: RemoteBuilder,
                                                      repo: RemoteRepository,
                                                      store: DiskObjectStore,
                                                      tmp_path: Path) -> None:
    old, new = blob(5), blob(6)
    base_id = store.add_bytes(old)
    remote.add_object(new)
    fetched = repo.fetch_object(ObjectWant(sha(new), len(new), base_id), store,
                                workdir=tmp_path / "w")
    assert not fetched.via_delta
    assert store.read_bytes(sha(new)) == new


def test_a_delta_that_does_not_rebuild_the_object_falls_back(remote: RemoteBuilder,
                                                             repo: RemoteRepository,
                                                             store: DiskObjectStore,
                                                             tmp_path: Path) -> None:
    old, new, other = blob(7), blob(8), blob(9)
    base_id = store.add_bytes(old)
    remote.add_object(new)
    remote.put_raw_delta(base_id, sha(new), (remote.root / layout.object_path(
        remote.add_object(other))).read_bytes())
    fetched = repo.fetch_object(ObjectWant(sha(new), len(new), base_id), store,
                                workdir=tmp_path / "w")
    assert not fetched.via_delta
    assert store.read_bytes(sha(new)) == new
    assert not store.contains(sha(other))
    assert list((tmp_path / "w").iterdir()) == []


def test_an_object_larger_than_signed_is_refused_and_nothing_stored(
        remote: RemoteBuilder, repo: RemoteRepository, store: DiskObjectStore,
        tmp_path: Path) -> None:
    data = blob(10)
    object_id = remote.add_object(data)
    with pytest.raises(IntegrityError) as caught:
        repo.fetch_object(ObjectWant(object_id, len(data) - 1), store, workdir=tmp_path / "w")
    assert object_id in str(caught.value)
    assert list(store.ids()) == []
    assert list((tmp_path / "w").iterdir()) == []


def test_a_wire_file_past_the_compressed_bound_is_cut_off(remote: RemoteBuilder,
                                                          repo: RemoteRepository,
                                                          store: DiskObjectStore,
                                                          tmp_path: Path) -> None:
    data = b"tiny"
    remote.put_raw_object(sha(data), frame(data) + b"\0" * (1 << 20))
    with pytest.raises(IntegrityError, match="more than the allowed"):
        repo.fetch_object(ObjectWant(sha(data), len(data)), store, workdir=tmp_path / "w")
    assert list(store.ids()) == []


def test_content_that_does_not_hash_to_the_id_is_refused(remote: RemoteBuilder,
                                                         repo: RemoteRepository,
                                                         store: DiskObjectStore,
                                                         tmp_path: Path) -> None:
    good, evil = blob(11), blob(12)
    remote.put_raw_object(sha(good), frame(evil))
    with pytest.raises(IntegrityError, match="hashes to") as caught:
        repo.fetch_object(ObjectWant(sha(good), len(good)), store, workdir=tmp_path / "w")
    assert caught.value.where == repo.url(layout.object_path(sha(good)))
    assert list(store.ids()) == []
    assert store.fsck().clean


def test_bytes_that_are_not_zstd_are_refused(remote: RemoteBuilder, repo: RemoteRepository,
                                             store: DiskObjectStore, tmp_path: Path) -> None:
    data = blob(13)
    remote.put_raw_object(sha(data), b"not zstd at all" * 10)
    with pytest.raises(IntegrityError, match=r"zstd|hashes"):
        repo.fetch_object(ObjectWant(sha(data), len(data)), store, workdir=tmp_path / "w")
    assert list(store.ids()) == []


def test_a_missing_object_is_remote_not_found(repo: RemoteRepository, store: DiskObjectStore,
                                              tmp_path: Path) -> None:
    with pytest.raises(RemoteNotFoundError):
        repo.fetch_object(ObjectWant(sha(b"x"), 1), store, workdir=tmp_path / "w")


def test_a_partial_download_is_resumed_by_the_next_call(remote: RemoteBuilder,
                                                        repo: RemoteRepository,
                                                        store: DiskObjectStore,
                                                        tmp_path: Path) -> None:
    data = blob(14, 200 << 10)
    object_id = remote.add_object(data)
    wire = frame(data)
    work = tmp_path / "w"
    work.mkdir()
    (work / f"{object_id}.zst").write_bytes(wire[:1000])
    fetched = repo.fetch_object(ObjectWant(object_id, len(data)), store, workdir=work)
    assert fetched.bytes_on_wire == len(wire) - 1000
    assert store.read_bytes(object_id) == data


def test_fetch_objects_skips_present_and_reports_totals(remote: RemoteBuilder,
                                                       repo: RemoteRepository,
                                                       store: DiskObjectStore,
                                                       tmp_path: Path) -> None:
    blobs = [blob(100 + i, 8 << 10) for i in range(6)]
    for data in blobs:
        remote.add_object(data)
    store.add_bytes(blobs[0])
    wants = [ObjectWant(sha(d), len(d)) for d in blobs] + [ObjectWant(sha(blobs[1]),
                                                                      len(blobs[1]))]
    seen: list[tuple[int, int]] = []
    report = repo.fetch_objects(wants, store, workdir=tmp_path / "w", parallel=3,
                                progress=lambda done, total: seen.append((done, total)))
    assert report.skipped_present == (sha(blobs[0]),)
    assert [item.id for item in report.objects] == [sha(d) for d in blobs[1:]]
    assert report.bytes_on_wire == sum(len(frame(d)) for d in blobs[1:])
    assert report.deltas_used == 0
    assert seen[-1] == (sum(len(d) for d in blobs[1:]),) * 2
    assert all(store.contains(sha(d)) for d in blobs)


def test_fetch_objects_raises_the_first_error_and_keeps_verified_objects(
        remote: RemoteBuilder, repo: RemoteRepository, store: DiskObjectStore,
        tmp_path: Path) -> None:
    good = blob(200)
    remote.add_object(good)
    evil_id = sha(b"signed content")
    remote.put_raw_object(evil_id, frame(b"other content!"))
    wants = [ObjectWant(sha(good), len(good)), ObjectWant(evil_id, 14)]
    with pytest.raises(IntegrityError):
        repo.fetch_objects(wants, store, workdir=tmp_path / "w", parallel=1)
    assert not store.contains(evil_id)
    assert store.fsck().clean


def test_fetch_objects_with_nothing_missing_downloads_nothing(tmp_path: Path) -> None:
    store = MemoryObjectStore()
    object_id = store.add_bytes(b"have")
    repo = RemoteRepository(str(tmp_path / "nowhere"), FileFetcher())
    report = repo.fetch_objects([ObjectWant(object_id, 4)], store, workdir=tmp_path / "w")
    assert report == FetchReport(skipped_present=(object_id,))
    assert not (tmp_path / "w").exists()


def test_wants_that_disagree_on_size_are_bad_input() -> None:
    object_id = sha(b"x")
    with pytest.raises(BadInputError, match="sizes 1 and 2"):
        plan_wants([ObjectWant(object_id, 1), ObjectWant(object_id, 2)], MemoryObjectStore())


def test_object_want_validates_and_round_trips() -> None:
    want = ObjectWant(sha(b"a"), 1, sha(b"b"))
    assert ObjectWant.from_dict(want.to_dict()) == want
    with pytest.raises(InvalidObjectIdError):
        ObjectWant("../../etc/passwd", 1)
    with pytest.raises(BadInputError):
        ObjectWant(sha(b"a"), -1)
    with pytest.raises(BadInputError):
        ObjectWant.from_dict({"id": sha(b"a"), "size": 1, "extra": 2})


def test_channel_and_revision_return_the_signed_envelope(remote: RemoteBuilder,
                                                         repo: RemoteRepository) -> None:
    envelope, _state = remote.publish("stable", {"a": blob(300)}, revision=3)
    assert Envelope.from_json(repo.channel("stable")) == envelope
    assert Envelope.from_json(repo.revision(3)) == envelope
    with pytest.raises(BadInputError):
        repo.channel("../secret")


def test_an_oversized_channel_file_is_cut_off(remote: RemoteBuilder,
                                              repo: RemoteRepository) -> None:
    path = remote.root / layout.channel_path("big")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(layout.MAX_ENVELOPE_BYTES + 1)
    with pytest.raises(IntegrityError, match="more than the allowed"):
        repo.channel("big")


def test_object_bytes_checks_id_and_exact_size(remote: RemoteBuilder,
                                               repo: RemoteRepository) -> None:
    _envelope, state = remote.publish("stable", {"a": blob(301)})
    assert repo.object_bytes(sha(state), len(state)) == state
    with pytest.raises(IntegrityError):
        repo.object_bytes(sha(state), len(state) + 1)
    with pytest.raises(IntegrityError):
        repo.object_bytes(sha(state), len(state) - 1)


def test_an_unreachable_http_remote_is_a_transport_error(store: DiskObjectStore,
                                                         tmp_path: Path) -> None:
    from pvinit.transport.fetcher import HttpFetcher

    repo = RemoteRepository("http://127.0.0.1:1/", HttpFetcher(timeout=5))
    with pytest.raises(TransportError) as caught:
        repo.channel("stable")
    assert caught.value.where == "http://127.0.0.1:1/channels/stable"

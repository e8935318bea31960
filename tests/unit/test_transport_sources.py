"""UpdateSource over a remote channel (file layout) and over a real bundle file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvinit import record
from pvinit.bundle.writer import write_bundle
from pvinit.errors import BadInputError, BundleFormatError, IntegrityError, ObjectNotFoundError
from pvinit.objects.disk import DiskObjectStore
from pvinit.objects.memory import MemoryObjectStore
from pvinit.signing.envelope import Envelope
from pvinit.signing.trust import TrustPolicy, check_envelope
from pvinit.transport.fetcher import FileFetcher
from pvinit.transport.remote import ObjectWant, RemoteRepository
from pvinit.transport.sources import BundleSource, PollPolicy, RemoteSource
from tests.unit.test_transport_support import NOW, RemoteBuilder, blob, sha


def test_remote_source_gives_a_trustable_envelope_and_its_verified_state(
        tmp_path: Path) -> None:
    remote = RemoteBuilder(tmp_path / "remote")
    _envelope, state = remote.publish("stable", {"a": blob(1), "b": blob(2)})
    source = RemoteSource(RemoteRepository(remote.root.as_uri(), FileFetcher()), "stable")
    got = Envelope.from_json(source.envelope_bytes())
    policy = TrustPolicy.from_keys([(remote.key.public, "release")], threshold=1)
    check_envelope(got, policy, now=NOW, last_committed=None)
    assert source.state_bytes(got) == state
    assert "channels/stable" in source.describe()


def test_remote_source_refuses_a_state_the_envelope_does_not_sign(tmp_path: Path) -> None:
    remote = RemoteBuilder(tmp_path / "remote")
    envelope, _state = remote.publish("stable", {"a": blob(3)})
    other = remote.add_object(b'{"#spec":"pvinit-state@1"}')
    forged = record.replace(envelope, state=other)
    source = RemoteSource(RemoteRepository(str(remote.root), FileFetcher()), "stable")
    with pytest.raises(IntegrityError):
        source.state_bytes(forged)


def test_remote_source_fetches_into_the_store(tmp_path: Path) -> None:
    remote = RemoteBuilder(tmp_path / "remote")
    objects = {"a": blob(4), "b": blob(5)}
    remote.publish("stable", objects)
    store = DiskObjectStore.create(tmp_path / "store")
    source = RemoteSource(RemoteRepository(str(remote.root), FileFetcher()), "stable",
                          parallel=2)
    report = source.fetch([ObjectWant(sha(v), len(v)) for v in objects.values()], store,
                          workdir=tmp_path / "w")
    assert {item.id for item in report.objects} == {sha(v) for v in objects.values()}
    assert all(store.read_bytes(sha(v)) == v for v in objects.values())


def _bundle(tmp_path: Path, blobs: list[bytes]) -> tuple[Path, Envelope, bytes]:
    remote = RemoteBuilder(tmp_path / "remote")
    envelope, state = remote.publish("stable", {str(i): b for i, b in enumerate(blobs)})
    origin = MemoryObjectStore()
    for data in blobs:
        origin.add_bytes(data)
    path = tmp_path / "update.pvb"
    write_bundle(path, envelope=envelope, state_bytes=state, store=origin,
                 object_ids=[sha(b) for b in blobs])
    return path, envelope, state


def test_bundle_source_imports_only_the_wanted_objects(tmp_path: Path) -> None:
    blobs = [blob(10 + i, 16 << 10) for i in range(4)]
    path, envelope, state = _bundle(tmp_path, blobs)
    source = BundleSource(path)
    assert Envelope.from_json(source.envelope_bytes()) == envelope
    assert source.state_bytes(envelope) == state
    store = DiskObjectStore.create(tmp_path / "store")
    store.add_bytes(blobs[0])
    wants = [ObjectWant(sha(blobs[0]), len(blobs[0])), ObjectWant(sha(blobs[2]), len(blobs[2]))]
    seen: list[tuple[int, int]] = []
    report = source.fetch(wants, store, workdir=tmp_path / "w",
                          progress=lambda d, t: seen.append((d, t)))
    assert sorted(store.ids()) == sorted([sha(blobs[0]), sha(blobs[2])])
    assert report.skipped_present == (sha(blobs[0]),)
    assert [item.id for item in report.objects] == [sha(blobs[2])]
    assert 0 < report.bytes_on_wire < len(blobs[2])
    assert seen == [(len(blobs[2]), len(blobs[2]))]


def test_bundle_source_refuses_a_wanted_object_it_lacks_before_importing(
        tmp_path: Path) -> None:
    blobs = [blob(20), blob(21)]
    path, _envelope, _state = _bundle(tmp_path, blobs)
    store = DiskObjectStore.create(tmp_path / "store")
    wants = [ObjectWant(sha(blobs[0]), len(blobs[0])), ObjectWant(sha(b"absent"), 6)]
    with pytest.raises(ObjectNotFoundError, match="not in this bundle"):
        BundleSource(path).fetch(wants, store, workdir=tmp_path / "w")
    assert list(store.ids()) == []


def test_bundle_source_refuses_a_size_other_than_signed(tmp_path: Path) -> None:
    blobs = [blob(22)]
    path, _envelope, _state = _bundle(tmp_path, blobs)
    store = MemoryObjectStore()
    with pytest.raises(IntegrityError, match="were signed"):
        BundleSource(path).fetch([ObjectWant(sha(blobs[0]), 5)], store, workdir=tmp_path)
    assert list(store.ids()) == []


def test_a_corrupt_bundle_changes_nothing(tmp_path: Path) -> None:
    blobs = [blob(30, 32 << 10), blob(31, 32 << 10)]
    path, _envelope, _state = _bundle(tmp_path, blobs)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF  # inside the last frame
    path.write_bytes(bytes(raw))
    store = DiskObjectStore.create(tmp_path / "store")
    wants = [ObjectWant(sha(b), len(b)) for b in blobs]
    with pytest.raises((IntegrityError, BundleFormatError)):
        BundleSource(path).fetch(wants, store, workdir=tmp_path / "w")
    assert list(store.ids()) == []


def test_bundle_source_refuses_a_state_of_another_envelope(tmp_path: Path) -> None:
    path, envelope, _state = _bundle(tmp_path, [blob(40)])
    forged = record.replace(envelope, state=sha(b"{}"), state_size=2)
    with pytest.raises(IntegrityError, match="does not match"):
        BundleSource(path).state_bytes(forged)


def test_poll_policy_backs_off_exponentially_up_to_the_cap() -> None:
    policy = PollPolicy(interval=10, max_interval=100, factor=2, jitter=0)
    assert [policy.delay(n, 0.5) for n in range(6)] == [10, 20, 40, 80, 100, 100]
    assert policy.delay(10_000, 0.0) == 100


def test_poll_policy_jitter_only_shortens_the_delay() -> None:
    policy = PollPolicy(interval=100, max_interval=100, jitter=0.25)
    assert policy.delay(0, 0.0) == 100
    assert policy.delay(0, 0.999) == pytest.approx(75.025)


def test_poll_policy_validates_and_round_trips() -> None:
    policy = PollPolicy(interval=5, max_interval=50, factor=3, jitter=0.1)
    assert PollPolicy.from_dict(policy.to_dict()) == policy
    with pytest.raises(BadInputError):
        PollPolicy(interval=0)
    with pytest.raises(BadInputError):
        PollPolicy(jitter=2)
    with pytest.raises(BadInputError, match="interval"):
        PollPolicy.from_dict({"interval": "fast"})
    with pytest.raises(BadInputError):
        PollPolicy.from_dict({"period": 5})

"""Publish a checkout's revision to an OCI registry (``pvstate publish --to oci://HOST/REPO``).

The same content and the same order as a directory publish
(:mod:`pvinit.remote.publish`), mapped by :mod:`pvinit.remote.oci`:

1. every object (the state included) as a blob of its zstd frame, skipped
   when the registry already holds it (HEAD; the previous manifest of the
   channel tells which blob holds an object, so unchanged objects are not
   even compressed again);
2. deltas against the states the channel published before (the channel
   manifest's history), when smaller than the whole frame;
3. the envelope as the config blob;
4. the manifest, tagged ``rev-<N>``;
5. the same manifest tagged ``<channel>``, last: a registry swaps a tag
   atomically, so a device sees the old revision or the new one, whole.

Refusals (unsigned, channel moving backwards, a different revision N,
missing objects) happen before the first upload, as for a directory.  A
failed upload leaves the channel tag where it was; publishing again
finishes the job (blobs already there are skipped).
"""

from __future__ import annotations

import hashlib
import tempfile

import zstandard

from pvinit.checkout.checkout import Checkout
from pvinit.errors import BadInputError, ConflictError, NotFoundError, RefusedError
from pvinit.record import record
from pvinit.remote.delta import MAX_DELTA_INPUT, make_delta
from pvinit.remote.oci import (
    DELTA_MEDIA_TYPE,
    ENVELOPE_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    MAX_MANIFEST_BYTES,
    OBJECT_MEDIA_TYPE,
    Descriptor,
    HistoryItem,
    OciTarget,
    RevisionManifest,
    channel_tag,
    revision_tag,
)
from pvinit.remote.publish import (
    DEFAULT_LEVEL,
    DeltaInfo,
    Progress,
    PublishReport,
    check_forward,
    delta_pairs,
)
from pvinit.signing.envelope import Envelope
from pvinit.state.model import State
from pvinit.transport.registry import RegistryAuth, RegistryClient


@record
class _Counts:
    written: int = 0
    skipped: int = 0
    bytes: int = 0


class _Pusher:
    def __init__(self, client: RegistryClient, co: Checkout, level: int) -> None:
        self.client = client
        self.co = co
        self.level = level
        self.counts = _Counts()

    def push_bytes(self, data: bytes, media_type: str) -> Descriptor:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.client.blob_exists(digest):
            self.client.upload_blob(digest, len(data), data)
            self.counts.bytes += len(data)
        return Descriptor(media_type, digest, len(data))

    def push_object(self, object_id: str, data: bytes | None,
                    known: Descriptor | None) -> Descriptor:
        """An object's zstd frame as a blob; ``known`` (from an earlier manifest) skips work."""
        if known is not None and self.client.blob_exists(known.digest):
            self.counts.skipped += 1
            return Descriptor(OBJECT_MEDIA_TYPE, known.digest, known.size)
        cctx = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        with tempfile.TemporaryFile() as spool:
            if data is not None:
                spool.write(cctx.compress(data))
            else:
                with self.co.store.open(object_id) as source:
                    cctx.copy_stream(source, spool, size=self.co.store.size(object_id))
            size = spool.tell()
            spool.seek(0)
            hasher = hashlib.sha256()
            while chunk := spool.read(1 << 20):
                hasher.update(chunk)
            digest = "sha256:" + hasher.hexdigest()
            if self.client.blob_exists(digest):
                self.counts.skipped += 1
            else:
                spool.seek(0)
                self.client.upload_blob(digest, size, spool)
                self.counts.written += 1
                self.counts.bytes += size
        return Descriptor(OBJECT_MEDIA_TYPE, digest, size)


def _read_manifest(client: RegistryClient, tag: str) -> RevisionManifest | None:
    data = client.get_manifest(tag, MANIFEST_MEDIA_TYPE, max_bytes=MAX_MANIFEST_BYTES)
    if data is None:
        return None
    return RevisionManifest.from_bytes(data, where=client.target.api(f"manifests/{tag}"))


def _envelope_of(client: RegistryClient, manifest: RevisionManifest) -> Envelope:
    data = client.get_blob(manifest.envelope.digest, max_bytes=manifest.envelope.size)
    return Envelope.from_json(data, source=f"{client.target} {manifest.envelope.digest}")


def publish_oci(
    checkout: Checkout,
    target: OciTarget,
    channel: str,
    *,
    revision: str = "HEAD",
    delta_depth: int = 3,
    level: int = DEFAULT_LEVEL,
    allow_unsigned: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    auth: RegistryAuth | None = None,
) -> PublishReport:
    """Publish ``revision`` of ``checkout`` to the registry repository ``target`` on ``channel``."""
    tag = channel_tag(channel)
    if delta_depth < 0:
        raise BadInputError("delta depth must be >= 0", where=str(delta_depth))
    if not 1 <= level <= 22:
        raise BadInputError("zstd level must be 1..22", where=str(level))
    number = checkout.revisions.resolve(revision)
    rev = checkout.revisions.load(number)
    envelope, state = rev.envelope, rev.state
    if not envelope.signatures and not allow_unsigned:
        raise RefusedError(f"revision {number} is not signed; devices would refuse it",
                           where=str(number), hint=f"run 'pvstate sign {number} --key KEY' first")
    missing = sorted(o for o in state.object_ids() if not checkout.store.contains(o))
    if missing:
        raise NotFoundError(f"{len(missing)} object(s) of revision {number} are not in the "
                            f"store, e.g. {missing[0]}", where=str(checkout.objects_dir))
    client = RegistryClient(target, auth)
    current = _read_manifest(client, tag)
    current_env = None if current is None else _envelope_of(client, current)
    move = check_forward(current_env, envelope, force=force)
    existing = _read_manifest(client, revision_tag(number))
    if existing is not None and not force and \
            _envelope_of(client, existing).digest != envelope.digest:
        raise ConflictError(f"the registry holds a different revision {number}",
                            where=f"{target} {revision_tag(number)}",
                            hint="publish from the checkout that made it, or use --force")

    # history of the channel (delta bases), as the current channel manifest records it
    history: list[HistoryItem] = []
    if current is not None:
        history = [h for h in current.history if h.revision < number]
        if current.revision < number:
            history.append(HistoryItem(current.revision, current.state))
    known: dict[str, Descriptor] = {}
    for manifest in (current, existing):
        if manifest is not None:
            known.update(manifest.objects)

    pusher = _Pusher(client, checkout, level)
    objects: dict[str, Descriptor] = {}
    wanted = sorted(state.object_ids())
    total = sum(checkout.store.size(o) for o in wanted)
    done = 0
    for object_id in wanted:
        objects[object_id] = pusher.push_object(object_id, None, known.get(object_id))
        done += checkout.store.size(object_id)
        if progress is not None:
            progress(done, total)
    objects[envelope.state] = pusher.push_object(envelope.state, state.canonical_bytes(),
                                                 known.get(envelope.state))

    deltas: dict[tuple[str, str], Descriptor] = {}
    infos: list[DeltaInfo] = []
    bases = _base_states(checkout, history, delta_depth)
    for base_id, target_id in delta_pairs(state, bases, size_of=checkout.store.size):
        if not checkout.store.contains(base_id) or checkout.store.size(base_id) > MAX_DELTA_INPUT:
            continue
        delta = make_delta(checkout.store.read_bytes(base_id),
                           checkout.store.read_bytes(target_id), level=level)
        full = objects[target_id].size
        if len(delta) >= full:
            continue
        deltas[(base_id, target_id)] = pusher.push_bytes(delta, DELTA_MEDIA_TYPE)
        infos.append(DeltaInfo(base_id, target_id, len(delta), full))

    config = pusher.push_bytes(envelope.to_json(), ENVELOPE_MEDIA_TYPE)
    manifest = RevisionManifest(revision=number, channel=channel, envelope=config,
                                objects=objects, deltas=deltas, state=envelope.state,
                                history=tuple(history))
    data = manifest.to_bytes()
    client.put_manifest(revision_tag(number), MANIFEST_MEDIA_TYPE, data)
    if move or current is None or current.to_bytes() != data:
        client.put_manifest(tag, MANIFEST_MEDIA_TYPE, data)
    counts = pusher.counts
    return PublishReport(
        revision=number, channel=channel,
        objects_written=counts.written, objects_skipped=counts.skipped,
        deltas_written=len(infos), bytes_written=counts.bytes + len(data),
        deltas=tuple(infos), channel_moved=move,
    )


def _base_states(co: Checkout, history: list[HistoryItem], depth: int) -> list[State]:
    """The newest ``depth`` states the channel published that this checkout can read."""
    states: list[State] = []
    held = set(co.revisions.numbers())
    for item in sorted(history, key=lambda h: h.revision, reverse=True):
        if len(states) >= depth:
            break
        if item.revision in held:
            rev = co.revisions.load(item.revision)
            if rev.envelope.state == item.state:
                states.append(rev.state)
    return states


__all__ = ["publish_oci"]

"""Write a bundle from a store: stream every object through zstd, then write it durably.

The header (which holds each frame's compressed size) comes before the
frames, so frames are first compressed into an unlinked spool file beside
the output, then the bundle is written as header + spool in one durable
save.  Objects are streamed in chunks and re-hashed on the way, so a
corrupt object in the store fails the write instead of shipping.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import zstandard

from pvinit import durable
from pvinit.bundle.format import DEFAULT_LEVEL, BundleEntry, BundleHeader
from pvinit.errors import BadInputError, IntegrityError
from pvinit.objects.ids import check_object_id
from pvinit.objects.store import CHUNK, ObjectStore
from pvinit.signing.envelope import Envelope

Progress = Callable[[int, int], None]


def _compress_object(
    store: ObjectStore,
    *,
    object_id: str,
    size: int,
    spool: BinaryIO,
    compressor: zstandard.ZstdCompressor,
    on_chunk: Callable[[int], None],
) -> int:
    """Append one zstd frame of the object to ``spool``; returns the frame size."""
    start = spool.tell()
    digest = hashlib.sha256()
    seen = 0
    cobj = compressor.compressobj(size=size)
    with store.open(object_id) as source:
        while chunk := source.read(CHUNK):
            seen += len(chunk)
            if seen > size:
                break
            digest.update(chunk)
            spool.write(cobj.compress(chunk))
            on_chunk(len(chunk))
    if seen != size or digest.hexdigest() != object_id:
        raise IntegrityError(
            f"object in the store does not match its id and size {size} "
            f"(read {seen} bytes)",
            where=object_id,
            hint="run the store's fsck",
        )
    spool.write(cobj.flush())
    return spool.tell() - start


def write_bundle(
    out_path: str | Path,
    *,
    envelope: Envelope,
    state_bytes: bytes,
    store: ObjectStore,
    object_ids: Iterable[str],
    base: str | None = None,
    level: int = DEFAULT_LEVEL,
    progress: Progress | None = None,
) -> BundleHeader:
    """Write the bundle to ``out_path`` durably and return its header.

    ``object_ids`` are the objects to carry, in order (duplicates dropped);
    with ``base=None`` they must be every object of the envelope.  The
    state must be the one the envelope names.  ``progress(done, total)`` is
    called in uncompressed object bytes.  On any error ``out_path`` is left
    as it was.
    """
    out = Path(out_path)
    if hashlib.sha256(state_bytes).hexdigest() != envelope.state or (
        len(state_bytes) != envelope.state_size
    ):
        raise IntegrityError(
            "state bytes do not match the envelope's state digest and size",
            where=f"revision {envelope.revision}",
        )
    ids: list[str] = []
    for object_id in object_ids:
        check_object_id(object_id, where="object_ids")
        if object_id not in ids:
            ids.append(object_id)
    for object_id in ids:
        if object_id not in envelope.sizes:
            raise BadInputError(
                "object is not referenced by the envelope", where=object_id
            )
        if store.size(object_id) != envelope.sizes[object_id]:
            raise IntegrityError(
                f"object has {store.size(object_id)} bytes in the store, the envelope "
                f"says {envelope.sizes[object_id]}",
                where=object_id,
            )
    # Validates the object table against the envelope before any work.
    BundleHeader(envelope=envelope, state=state_bytes, base=base,
                 objects=tuple(BundleEntry(i, envelope.sizes[i], 1) for i in ids))

    total = sum(envelope.sizes[i] for i in ids)
    done = 0

    def on_chunk(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
    entries: list[BundleEntry] = []
    with tempfile.TemporaryFile(dir=out.parent, prefix=f".{out.name}.") as spool:
        for object_id in ids:
            size = envelope.sizes[object_id]
            zsize = _compress_object(
                store, object_id=object_id, size=size, spool=spool,
                compressor=compressor, on_chunk=on_chunk,
            )
            entries.append(BundleEntry(object_id=object_id, size=size, zsize=zsize))
        header = BundleHeader(
            envelope=envelope, state=state_bytes, base=base, objects=tuple(entries)
        )
        prefix = header.encode()
        spool.seek(0)
        with durable.save_file(out, name="bundle") as handle:
            handle.write(prefix)
            shutil.copyfileobj(spool, handle, CHUNK)
    return header

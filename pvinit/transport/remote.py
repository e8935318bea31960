"""A static remote repository (``pvinit.remote.layout``) seen from a device.

Everything downloaded here is capped by a size the *signed* envelope
declares before a byte arrives: envelopes by ``MAX_ENVELOPE_BYTES``, an
object's zstd frame by ``compressed_bound(size)`` and its decompressed
content by ``size`` itself.  An object enters the store only through
``store.add_stream(expected_id=..., max_size=...)``, so a hostile mirror can
waste bandwidth but never put a wrong or oversized object on the device.

Objects are fetched as a delta against the object the device already has
at the same key when the publisher shipped one (``deltas/<base>-<id>``),
else whole.  A delta that is missing (404), unreachable or does not
rebuild the object falls back to the whole object: deltas are an optimisation, never a
single point of failure.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, cast

import zstandard

from pvinit import durable
from pvinit.errors import BadInputError, IntegrityError, TransportError
from pvinit.objects.ids import sha256_hex
from pvinit.objects.store import ObjectStore
from pvinit.remote import layout
from pvinit.remote.delta import MAX_DELTA_INPUT, MAX_WINDOW, apply_delta
from pvinit.transport.fetcher import CHUNK, Fetcher, RemoteNotFoundError
from pvinit.transport.wants import FetchedObject, FetchReport, ObjectWant, Progress, plan_wants
from pvinit.zstdframes import FrameReader


class _Cancelled(Exception):
    """Another download of the same batch failed: stop this one early."""


def _decompressing(source: BinaryIO, object_id: str) -> FrameReader:
    """The decompressed bytes of a downloaded zstd frame; zstd faults become IntegrityError."""

    def fault(error: zstandard.ZstdError) -> IntegrityError:
        return IntegrityError(f"downloaded object is not valid zstd: {error}", where=object_id)

    return FrameReader(source, max_window=MAX_WINDOW, chunk=CHUNK, on_error=fault)


class RemoteRepository:
    """The files of one remote (``base_url``) fetched through ``fetcher``."""

    def __init__(self, base_url: str, fetcher: Fetcher) -> None:
        if not base_url:
            raise BadInputError("a remote needs a URL or path", where="remote")
        self.base_url = base_url.rstrip("/") or "/"
        self.fetcher = fetcher

    def __repr__(self) -> str:
        return f"RemoteRepository({self.base_url!r}, {self.fetcher!r})"

    def url(self, relative: str) -> str:
        """The URL of a layout path (``relative`` comes from ``pvinit.remote.layout``)."""
        if self.base_url == "/":
            return f"/{relative}"
        return f"{self.base_url}/{relative}"

    # -- metadata ----------------------------------------------------------------

    def channel(self, name: str) -> bytes:
        """The signed envelope JSON a channel points at (not parsed, not trusted yet)."""
        return self.fetcher.fetch_bytes(self.url(layout.channel_path(name)),
                                        max_bytes=layout.MAX_ENVELOPE_BYTES)

    def revision(self, number: int) -> bytes:
        """The signed envelope JSON of revision ``number``."""
        return self.fetcher.fetch_bytes(self.url(layout.revision_path(number)),
                                        max_bytes=layout.MAX_ENVELOPE_BYTES)

    def object_bytes(self, object_id: str, size: int) -> bytes:
        """A small object (the state) in memory, checked against its id and exact size."""
        url = self.url(layout.object_path(object_id))
        frame = self.fetcher.fetch_bytes(url, max_bytes=layout.compressed_bound(size))
        reader = _decompressing(cast(BinaryIO, io.BytesIO(frame)), object_id)
        data = reader.read(size + 1)
        while len(data) <= size:
            more = reader.read(size + 1 - len(data))
            if not more:
                break
            data += more
        if len(data) != size or sha256_hex(data) != object_id:
            raise IntegrityError(
                f"content ({len(data)} bytes) does not match the signed id and size {size}",
                where=url,
            )
        return data

    # -- objects -----------------------------------------------------------------

    def fetch_object(self, want: ObjectWant, store: ObjectStore, *, workdir: Path,
                     on_chunk: Callable[[int], None] | None = None) -> FetchedObject:
        """Get one object into ``store``: by delta when possible, else whole.

        Partial downloads live in ``workdir`` named by id, so a later call
        resumes them; they are removed once the object is stored or refused.
        """
        if store.contains(want.id):
            return FetchedObject(id=want.id, bytes_on_wire=0, via_delta=False)
        if not workdir.is_dir():
            durable.makedirs(workdir)
        wire = 0
        base = want.base_id
        if (base is not None and base != want.id and store.contains(base)
                and store.size(base) <= MAX_DELTA_INPUT and want.size <= MAX_DELTA_INPUT):
            got, wire = self._try_delta(want, base, store, workdir, on_chunk)
            if got:
                return FetchedObject(id=want.id, bytes_on_wire=wire, via_delta=True)
        wire += self._fetch_full(want, store, workdir, on_chunk)
        return FetchedObject(id=want.id, bytes_on_wire=wire, via_delta=False)

    def _try_delta(self, want: ObjectWant, base: str, store: ObjectStore, workdir: Path,
                   on_chunk: Callable[[int], None] | None) -> tuple[bool, int]:
        """(stored?, bytes received); a missing or bad delta is not an error."""
        url = self.url(layout.delta_path(base, want.id))
        partial = workdir / f"{base}-{want.id}.delta"
        wire = 0
        counted = _Counter(on_chunk)
        try:
            self.fetcher.fetch(url, partial, max_bytes=layout.compressed_bound(want.size),
                               on_chunk=counted)
            wire = counted.total
            data = apply_delta(store.read_bytes(base), partial.read_bytes(),
                               expected_id=want.id, max_size=want.size)
        except (RemoteNotFoundError, TransportError):
            # Not published, or a mirror that answers 403 for a missing key
            # (S3 without list rights): the whole object is the way.  A
            # partial delta stays for the next attempt to resume.
            return False, counted.total
        except IntegrityError:
            # An oversized or corrupt delta: the whole object is still signed, try that.
            _drop(partial)
            return False, counted.total
        store.add_bytes(data, expected_id=want.id, max_size=want.size)
        _drop(partial)
        return True, wire

    def _fetch_full(self, want: ObjectWant, store: ObjectStore, workdir: Path,
                    on_chunk: Callable[[int], None] | None) -> int:
        url = self.url(layout.object_path(want.id))
        partial = workdir / f"{want.id}.zst"
        wire = self.fetcher.fetch(url, partial, max_bytes=layout.compressed_bound(want.size),
                                  on_chunk=on_chunk)
        try:
            with open(partial, "rb") as handle:
                stream = _decompressing(cast(BinaryIO, handle), want.id)
                store.add_stream(cast(BinaryIO, stream), expected_id=want.id,
                                 max_size=want.size)
        except IntegrityError as error:
            _drop(partial)
            raise IntegrityError(error.message, where=url, hint=error.hint) from None
        _drop(partial)
        return wire

    def fetch_objects(
        self,
        wants: Iterable[ObjectWant],
        store: ObjectStore,
        *,
        workdir: Path,
        parallel: int = 4,
        progress: Progress | None = None,
    ) -> FetchReport:
        """Fetch every wanted object the store lacks, ``parallel`` at a time.

        The first failure stops the batch (queued downloads are cancelled,
        running ones stop at their next chunk) and is raised; objects
        already stored stay (they are verified and useful for a retry).
        ``progress`` is called from the calling thread as objects complete.
        """
        if parallel < 1:
            raise BadInputError(f"parallel must be >= 1, not {parallel}", where="fetch")
        missing, present = plan_wants(wants, store)
        total = sum(want.size for want in missing)
        if not missing:
            return FetchReport.of((), present)
        if not workdir.is_dir():
            durable.makedirs(workdir)
        stop = threading.Event()

        def check_stop(_count: int) -> None:
            if stop.is_set():
                raise _Cancelled

        def one(want: ObjectWant) -> FetchedObject:
            if stop.is_set():
                raise _Cancelled
            return self.fetch_object(want, store, workdir=workdir, on_chunk=check_stop)

        done: list[FetchedObject] = []
        done_bytes = 0
        first_error: BaseException | None = None
        workers = min(parallel, len(missing))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                   thread_name_prefix="pvfetch") as pool:
            futures = {pool.submit(one, want): want for want in missing}
            for future in concurrent.futures.as_completed(futures):
                if future.cancelled():
                    continue
                error = future.exception()
                if error is not None:
                    if first_error is None and not isinstance(error, _Cancelled):
                        first_error = error
                        stop.set()
                        for other in futures:
                            other.cancel()
                    continue
                fetched = future.result()
                done.append(fetched)
                done_bytes += futures[future].size
                if progress is not None and first_error is None:
                    progress(done_bytes, total)
        if first_error is not None:
            raise first_error
        order = {want.id: index for index, want in enumerate(missing)}
        done.sort(key=lambda item: order[item.id])
        return FetchReport.of(done, present)


class _Counter:
    """Counts bytes received while passing them on to another hook."""

    def __init__(self, hook: Callable[[int], None] | None) -> None:
        self.total = 0
        self._hook = hook

    def __call__(self, count: int) -> None:
        self.total += count
        if self._hook is not None:
            self._hook(count)


def _drop(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


__all__ = [
    "FetchReport",
    "FetchedObject",
    "ObjectWant",
    "RemoteRepository",
    "plan_wants",
]

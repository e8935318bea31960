"""Read, verify and import a bundle without trusting a byte of it.

Opening a bundle parses only the prefix and header and checks that the
file is exactly as long as the header says (a truncated copy fails
fast).  :meth:`BundleReader.verify` makes one full streaming pass: every
frame must decompress, within the declared size, to bytes that hash to its
id.  :meth:`BundleReader.import_into` verifies first and only then adds
objects, so a bad bundle leaves the store as it was.  Signatures are not
checked here: that needs the device's trust policy
(:func:`pvinit.signing.trust.check_envelope` on ``header.envelope``).

Memory stays bounded whatever the input: at most one chunk of compressed
and one of decompressed data, and a zstd window of at most ``MAX_WINDOW``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, cast

import zstandard

from pvinit.bundle.format import (
    MAX_WINDOW,
    PREFIX_SIZE,
    BundleEntry,
    BundleHeader,
    decode_header,
    decode_prefix,
)
from pvinit.errors import BundleFormatError, IntegrityError, NotFoundError
from pvinit.objects.store import CHUNK, ObjectStore
from pvinit.record import record
from pvinit.zstdframes import FrameReader

Progress = Callable[[int, int], None]


@record(frozen=True)
class ImportReport:
    """What :meth:`BundleReader.import_into` did."""

    added: tuple[str, ...]
    already_present: tuple[str, ...]
    bytes_added: int

    def to_dict(self) -> dict[str, object]:
        return {
            "added": list(self.added),
            "already_present": list(self.already_present),
            "bytes_added": self.bytes_added,
        }


class _FrameSource:
    """Exactly ``length`` bytes of the file from ``offset``, read with pread."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self._fd = fd
        self._pos = offset
        self._left = length

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if size < 0 else min(size, self._left)
        data = os.pread(self._fd, min(want, CHUNK), self._pos)
        if not data:
            # The file shrank since it was opened: report as a truncated frame.
            self._left = 0
            return b""
        self._pos += len(data)
        self._left -= len(data)
        return data


class _ObjectStream(FrameReader):
    """The decompressed bytes of one frame, checked against its entry as they flow.

    Raises BundleFormatError for a frame zstd cannot decode and
    IntegrityError when the content is longer or shorter than declared or
    does not hash to the id; the check at the end runs when ``read``
    reaches EOF, so a consumer that reads to the end has verified it.
    """

    def __init__(self, fd: int, entry: BundleEntry, offset: int, where: str) -> None:
        self._entry = entry
        self._offset = offset
        self._where = where
        self._digest = hashlib.sha256()
        self._out = 0
        self._done = False

        def fault(error: zstandard.ZstdError) -> BundleFormatError:
            return BundleFormatError(f"{self._culprit()}: corrupt zstd data: {error}",
                                     where=where)

        super().__init__(cast(BinaryIO, _FrameSource(fd, offset, entry.zsize)),
                         max_window=MAX_WINDOW, chunk=CHUNK, on_error=fault)

    def _culprit(self) -> str:
        return f"object {self._entry.object_id} (frame at byte offset {self._offset})"

    def read(self, size: int | None = -1) -> bytes:
        if self._done:
            return b""
        data = super().read(size)
        self._out += len(data)
        if self._out > self._entry.size:
            raise IntegrityError(
                f"{self._culprit()}: decompresses to more than the declared "
                f"{self._entry.size} bytes",
                where=self._where,
            )
        if data:
            self._digest.update(data)
            return data
        self._done = True
        if self._out != self._entry.size:
            raise IntegrityError(
                f"{self._culprit()}: cut off, {self._out} of the declared "
                f"{self._entry.size} bytes",
                where=self._where,
            )
        if self._digest.hexdigest() != self._entry.object_id:
            raise IntegrityError(
                f"{self._culprit()}: content hashes to {self._digest.hexdigest()}",
                where=self._where,
            )
        return b""


class BundleReader:
    """An open bundle file; use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._where = str(self.path)
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise NotFoundError("bundle not found", where=self._where) from None
        except IsADirectoryError:
            raise BundleFormatError("is a directory, not a bundle", where=self._where) from None
        try:
            self.header, self.data_offset = self._read_header()
        except BaseException:
            self._file.close()
            raise

    def _read_header(self) -> tuple[BundleHeader, int]:
        length = decode_prefix(self._file.read(PREFIX_SIZE), where=self._where)
        body = self._file.read(length)
        if len(body) != length:
            raise BundleFormatError(
                f"truncated: header declares {length} bytes, only {len(body)} present",
                where=self._where,
            )
        header = decode_header(body, where=self._where)
        data_offset = PREFIX_SIZE + length
        expected = data_offset + header.frames_size
        actual = os.fstat(self._file.fileno()).st_size
        if actual < expected:
            raise BundleFormatError(
                f"truncated: {actual} bytes, the header needs {expected}", where=self._where
            )
        if actual > expected:
            raise BundleFormatError(
                f"{actual - expected} unexpected bytes after the last frame at byte offset "
                f"{expected}",
                where=self._where,
            )
        return header, data_offset

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open_object(self, object_id: str) -> BinaryIO:
        """A stream of one object's bytes, verified when read to its end."""
        for entry, offset in self.header.frame_offsets(self.data_offset):
            if entry.object_id == object_id:
                return cast(
                    BinaryIO, _ObjectStream(self._file.fileno(), entry, offset, self._where)
                )
        raise NotFoundError(f"object {object_id} is not in this bundle", where=self._where)

    def verify(self, progress: Progress | None = None) -> None:
        """One full pass over the bundle; raises on the first fault, naming it."""
        header = self.header
        if (hashlib.sha256(header.state).hexdigest() != header.envelope.state
                or len(header.state) != header.envelope.state_size):
            raise IntegrityError(
                f"state bytes do not match the envelope's state {header.envelope.state}",
                where=f"{self._where} state",
            )
        total = sum(entry.size for entry in header.objects)
        done = 0
        for entry, offset in header.frame_offsets(self.data_offset):
            stream = _ObjectStream(self._file.fileno(), entry, offset, self._where)
            while chunk := stream.read(CHUNK):
                done += len(chunk)
                if progress is not None:
                    progress(done, total)

    def import_into(self, store: ObjectStore, progress: Progress | None = None) -> ImportReport:
        """Verify the whole bundle, then add the objects the store lacks.

        Each object is decompressed again while added and the store checks
        its id and size (``expected_id``, ``max_size``), so even a file
        changed between the two passes cannot put a wrong object in.
        """
        self.verify(progress=None)
        added: list[str] = []
        present: list[str] = []
        bytes_added = 0
        total = sum(entry.size for entry in self.header.objects)
        done = 0
        for entry, offset in self.header.frame_offsets(self.data_offset):
            if store.contains(entry.object_id):
                present.append(entry.object_id)
            else:
                stream = _ObjectStream(self._file.fileno(), entry, offset, self._where)
                store.add_stream(
                    cast(BinaryIO, stream), expected_id=entry.object_id, max_size=entry.size
                )
                added.append(entry.object_id)
                bytes_added += entry.size
            done += entry.size
            if progress is not None:
                progress(done, total)
        return ImportReport(
            added=tuple(added), already_present=tuple(present), bytes_added=bytes_added
        )

"""The one zstd stream reader of pvinit: a frame's decompressed bytes as a file.

Objects travel as zstd frames, in bundles and from remotes.  Both readers
need the same care: a window cap, so a hostile frame cannot make the
device allocate gigabytes; bounded reads; and every complaint of zstd
turned into one :class:`~pvinit.errors.PvError` of the caller's choosing
(a corrupt bundle is a format error, a corrupt download an integrity one).
What the bytes must add up to (size, hash) stays with each caller.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import BinaryIO

import zstandard

from pvinit.errors import PvError


class FrameReader(io.RawIOBase):
    """Decompress the zstd frame(s) read from ``source``, ``chunk`` bytes at most per read.

    ``on_error`` turns a ``zstandard.ZstdError`` into the error to raise.
    ``source`` is not closed.
    """

    def __init__(self, source: BinaryIO, *, max_window: int, chunk: int,
                 on_error: Callable[[zstandard.ZstdError], PvError]) -> None:
        super().__init__()
        self._chunk = chunk
        self._on_error = on_error
        decompressor = zstandard.ZstdDecompressor(max_window_size=max_window)
        self._reader = decompressor.stream_reader(source, read_size=chunk,
                                                  read_across_frames=True, closefd=False)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        want = self._chunk if size is None or size < 0 else min(size, self._chunk)
        try:
            data: bytes = self._reader.read(want)
        except zstandard.ZstdError as error:
            raise self._on_error(error) from None
        return data

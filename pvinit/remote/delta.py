"""zstd "patch-from" deltas between two versions of an object.

The target is compressed with the base's raw bytes as a dictionary and a
window large enough to reach all of it (NOTES.md: level 19, window_log 27,
long-distance matching): a one-file change in a 50 MB squashfs ships a few
tens of KB.  Applying needs the same base and the same window limit.
"""

from __future__ import annotations

import io

import zstandard

from pvinit.errors import IntegrityError
from pvinit.objects.ids import sha256_hex

WINDOW_LOG = 27
MAX_WINDOW = 1 << WINDOW_LOG
#: Above this size a patch-from delta is not attempted (window cannot cover the base).
MAX_DELTA_INPUT = MAX_WINDOW


def make_delta(base: bytes, target: bytes, *, level: int = 19) -> bytes:
    """A zstd frame of ``target`` using ``base`` as a raw-content dictionary."""
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=WINDOW_LOG, enable_ldm=True, source_size=len(target)
    )
    compressor = zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params)
    return compressor.compress(target)


def apply_delta(base: bytes, delta: bytes, *, expected_id: str, max_size: int) -> bytes:
    """Rebuild the target from ``base`` and ``delta``; it must hash to ``expected_id``."""
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    decompressor = zstandard.ZstdDecompressor(dict_data=dictionary, max_window_size=MAX_WINDOW)
    chunks: list[bytes] = []
    total = 0
    try:
        with decompressor.stream_reader(io.BytesIO(delta)) as reader:
            while total <= max_size:  # stop one chunk past the cap: a delta bomb never expands
                chunk = reader.read(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except zstandard.ZstdError as err:
        raise IntegrityError(f"delta does not apply: {err}", where=expected_id) from None
    out = b"".join(chunks)
    if len(out) > max_size:
        raise IntegrityError(
            f"delta expands to {len(out)} bytes, more than the signed {max_size}",
            where=expected_id,
        )
    if sha256_hex(out) != expected_id:
        raise IntegrityError("delta result does not match its object id", where=expected_id)
    return out

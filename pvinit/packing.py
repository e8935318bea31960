"""The one msgpack wrapper of pvinit.

Bundles (and later the wire formats) carry headers in msgpack because it
holds raw bytes (the canonical state) without base64.  Everything that
packs or unpacks goes through here so that the options are the same
everywhere: ``use_bin_type`` on the way out, ``raw=False`` (str stays str,
bytes stays bytes) on the way in, and hard limits on what a hostile input
may make us allocate.  Any complaint of msgpack becomes one
:class:`~pvinit.errors.BundleFormatError` naming where the bytes came from.

Works with Debian 12's msgpack 1.0.3 and with current releases.
"""

from __future__ import annotations

import msgpack

from pvinit.errors import BundleFormatError

#: The default cap on an unpacked buffer (and on any str or bin inside it).
MAX_LEN = 64 << 20

# Every exception msgpack raises on bad input, across 1.0.x and 1.1.x:
# FormatError, StackError, ExtraData and OutOfData derive from ValueError or
# UnpackException; UnicodeDecodeError is a ValueError; a map keyed by an
# unhashable value raises TypeError; a huge length can raise OverflowError.
_UNPACK_ERRORS = (ValueError, TypeError, OverflowError, msgpack.UnpackException)


def pack(obj: object) -> bytes:
    """msgpack bytes of ``obj`` (str as str, bytes as bin).

    Raises TypeError for a value msgpack cannot represent: that is a bug in
    the caller, not bad input.
    """
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def unpack(data: bytes, *, where: str, max_len: int = MAX_LEN) -> object:
    """The single msgpack value in ``data``; BundleFormatError naming ``where`` otherwise.

    ``max_len`` bounds the buffer and every str, bin, array and map in it, so
    a few hostile bytes can never ask for gigabytes.  Extension types
    (including msgpack timestamps) are refused: none of our formats uses them.
    Trailing bytes after the value are an error, not silently ignored.
    """
    if len(data) > max_len:
        raise BundleFormatError(
            f"msgpack data of {len(data)} bytes is larger than the limit of {max_len}",
            where=where,
        )
    cap = min(max_len, len(data))
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            use_list=True,
            max_str_len=cap,
            max_bin_len=cap,
            max_array_len=cap,
            max_map_len=cap,
            max_ext_len=0,
        )
    except _UNPACK_ERRORS as exc:
        raise BundleFormatError(f"not valid msgpack: {exc}", where=where) from exc

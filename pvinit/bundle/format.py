"""The offline update bundle: one file carrying a signed revision and its objects.

Layout (see ``docs/formats/bundle.md``)::

    magic    8 bytes   b"PVBNDL\\x00\\x01"  (the last byte is the format version)
    length   4 bytes   big-endian length of the header, at most 64 MiB
    header   msgpack   {"format": "pvinit-bundle@1", "envelope": {...},
                        "state": <canonical state bytes>, "base": <digest> | None,
                        "objects": [[id, size, zsize], ...]}
    frames   one zstd frame per object, in header order, exactly zsize bytes each

Everything a reader needs to plan (ids, sizes, offsets) is in the header,
so a device can check space and signatures before it decompresses a byte.
This module is pure: the header model and its (de)serialisation.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from pvinit.errors import BundleFormatError
from pvinit.objects.ids import is_object_id
from pvinit.packing import pack, unpack
from pvinit.record import record
from pvinit.signing.envelope import Envelope

MAGIC = b"PVBNDL\x00\x01"
MAGIC_FAMILY = MAGIC[:-1]
FORMAT = "pvinit-bundle@1"
LENGTH = struct.Struct(">I")
PREFIX_SIZE = len(MAGIC) + LENGTH.size
MAX_HEADER = 64 << 20
#: zstd level for new bundles: see docs/formats/bundle.md for the measurement.
DEFAULT_LEVEL = 6
#: Largest zstd window a reader accepts (what patch-from deltas use: 2**27).
MAX_WINDOW = 1 << 27


@record(frozen=True)
class BundleEntry:
    """One object in a bundle: its id, raw size and compressed frame size."""

    object_id: str
    size: int
    zsize: int

    def to_list(self) -> list[Any]:
        return [self.object_id, self.size, self.zsize]

    @classmethod
    def from_list(cls, data: object, *, where: str) -> BundleEntry:
        if not isinstance(data, list) or len(data) != 3:
            raise BundleFormatError("must be [id, size, zsize]", where=where)
        object_id, size, zsize = data
        if not is_object_id(object_id):
            raise BundleFormatError(f"not an object id: {object_id!r:.80}", where=where)
        for name, value, minimum in (("size", size, 0), ("zsize", zsize, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise BundleFormatError(
                    f"{name} must be an integer >= {minimum}, got {value!r:.40}",
                    where=f"{where} ({object_id})",
                )
        return cls(object_id=object_id, size=size, zsize=zsize)


@record(frozen=True)
class BundleHeader:
    """The parsed header: the envelope, the state bytes, the base and the object table."""

    envelope: Envelope
    state: bytes
    objects: tuple[BundleEntry, ...]
    base: str | None = None

    def __post_init__(self) -> None:
        check_objects(self.envelope, self.objects, self.base, where="bundle header")

    @property
    def frames_size(self) -> int:
        return sum(entry.zsize for entry in self.objects)

    def frame_offsets(self, data_offset: int) -> Iterator[tuple[BundleEntry, int]]:
        """Each entry with the absolute file offset of its frame."""
        offset = data_offset
        for entry in self.objects:
            yield entry, offset
            offset += entry.zsize

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "envelope": self.envelope.to_dict(),
            "state": self.state,
            "base": self.base,
            "objects": [entry.to_list() for entry in self.objects],
        }

    @classmethod
    def from_dict(cls, data: object, *, where: str) -> BundleHeader:
        if not isinstance(data, dict):
            raise BundleFormatError("header is not a map", where=where)
        if data.get("format") != FORMAT:
            raise BundleFormatError(
                f"header format must be {FORMAT!r}, got {data.get('format')!r:.80}", where=where
            )
        state = data.get("state")
        if not isinstance(state, bytes):
            raise BundleFormatError("header 'state' must be bytes", where=where)
        base = data.get("base")
        if base is not None and not is_object_id(base):
            raise BundleFormatError(
                f"header 'base' must be an envelope digest or None, got {base!r:.80}", where=where
            )
        raw_objects = data.get("objects")
        if not isinstance(raw_objects, list):
            raise BundleFormatError("header 'objects' must be a list", where=where)
        objects = tuple(
            BundleEntry.from_list(item, where=f"{where} objects[{index}]")
            for index, item in enumerate(raw_objects)
        )
        envelope = Envelope.from_dict(data.get("envelope"), source=f"{where} envelope")
        # Check with the caller's ``where`` first, so the error names the file.
        check_objects(envelope, objects, base, where=where)
        return cls(envelope=envelope, state=state, objects=objects, base=base)

    def encode(self) -> bytes:
        """Magic, length and header: the bytes before the first frame."""
        body = pack(self.to_dict())
        if len(body) > MAX_HEADER:
            raise BundleFormatError(
                f"header of {len(body)} bytes exceeds the {MAX_HEADER} byte limit",
                where="bundle header",
            )
        return MAGIC + LENGTH.pack(len(body)) + body


def check_objects(
    envelope: Envelope, objects: tuple[BundleEntry, ...], base: str | None, *, where: str
) -> None:
    """Rules tying the object table to the envelope.

    Every object must be one the state references, with the size the
    envelope declares; a full bundle (no ``base``) carries every object.
    """
    seen: set[str] = set()
    sizes = envelope.sizes
    for entry in objects:
        if entry.object_id in seen:
            raise BundleFormatError(f"object {entry.object_id} is listed twice", where=where)
        seen.add(entry.object_id)
        declared = sizes.get(entry.object_id)
        if declared is None:
            raise BundleFormatError(
                f"object {entry.object_id} is not referenced by the envelope", where=where
            )
        if declared != entry.size:
            raise BundleFormatError(
                f"object {entry.object_id} has size {entry.size} but the envelope says {declared}",
                where=where,
            )
    if base is None:
        missing = sorted(set(sizes) - seen)
        if missing:
            raise BundleFormatError(
                f"full bundle (no base) lacks {len(missing)} object(s) of the state, "
                f"first {missing[0]}",
                where=where,
            )


def decode_prefix(prefix: bytes, *, where: str) -> int:
    """The header length from the first 12 bytes; BundleFormatError on bad magic or size."""
    if len(prefix) < PREFIX_SIZE:
        raise BundleFormatError(
            f"truncated: {len(prefix)} bytes, shorter than the {PREFIX_SIZE}-byte prefix",
            where=where,
        )
    magic = prefix[: len(MAGIC)]
    if magic != MAGIC:
        if magic[: len(MAGIC_FAMILY)] == MAGIC_FAMILY:
            raise BundleFormatError(
                f"unsupported bundle version {magic[-1]} (this pvinit reads {MAGIC[-1]})",
                where=where,
            )
        raise BundleFormatError(f"not a pvinit bundle (magic {magic!r})", where=where)
    (length,) = LENGTH.unpack(prefix[len(MAGIC) : PREFIX_SIZE])
    if length > MAX_HEADER:
        raise BundleFormatError(
            f"header length {length} exceeds the {MAX_HEADER} byte limit", where=where
        )
    return int(length)


def decode_header(body: bytes, *, where: str) -> BundleHeader:
    return BundleHeader.from_dict(unpack(body, where=where, max_len=MAX_HEADER), where=where)

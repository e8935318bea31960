"""Paths of the remote repository layout (plain files any static server can serve).

::

    channels/<name>            signed envelope of the newest revision on the channel
    revisions/<N>.json         signed envelope of revision N
    objects/<id>               zstd frame of object <id> (the state itself is an object:
                               its id is the state digest)
    deltas/<from>-<to>         zstd "patch-from" frame: object <to> compressed with
                               object <from> as a raw-content dictionary

A publisher writes objects, deltas and revisions first and the channel
pointer last (atomic rename), so a reader never sees a channel naming
content that is not there yet.  Ids are validated before a path is built.
"""

from __future__ import annotations

import re

from pvinit.errors import BadInputError
from pvinit.objects.ids import check_object_id

_CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: Caps on what a device downloads for metadata (objects are capped by the signed sizes).
MAX_ENVELOPE_BYTES = 16 << 20


def check_channel(name: str) -> str:
    if not _CHANNEL.fullmatch(name) or name.endswith((".tmp", ".partial")):
        raise BadInputError(
            "a channel name is 1-64 of letters, digits, '.', '_', '-', not starting with a dot",
            where=name,
        )
    return name


def channel_path(name: str) -> str:
    return f"channels/{check_channel(name)}"


def revision_path(number: int) -> str:
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise BadInputError("a revision number is a positive integer", where=str(number))
    return f"revisions/{number}.json"


def object_path(object_id: str) -> str:
    return f"objects/{check_object_id(object_id)}"


def delta_path(base_id: str, target_id: str) -> str:
    return f"deltas/{check_object_id(base_id)}-{check_object_id(target_id)}"


def compressed_bound(size: int) -> int:
    """Most bytes a zstd frame of ``size`` raw bytes can take (ZSTD_COMPRESSBOUND + header slack).

    Devices cap every object download by this bound of the *signed* size, so
    an endless or oversized response is cut off before it fills the disk.
    """
    margin = (128 << 10) - size if size < (128 << 10) else 0
    return size + (size >> 8) + (margin >> 11) + 512

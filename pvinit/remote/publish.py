"""Publish a checkout's revision into a remote repository directory.

The repository is plain files (see :mod:`pvinit.remote.layout`), so a
static web server or a CDN can serve it.  Publishing writes, in this order:

1. every object of the revision the repository lacks (the state included,
   its id being the state digest) as a zstd frame at ``objects/<id>``;
2. ``deltas/<old>-<new>`` for each object that changed against the same key
   in the last ``delta_depth`` revisions published on the channel, when
   the delta is smaller than the compressed object;
3. ``revisions/<N>.json``, the signed envelope;
4. ``history/<channel>.json``, what the channel has published (the bases
   of the next publish's deltas: devices on a channel hold those objects);
5. ``channels/<channel>``, the envelope again, last, by atomic rename.

Each write is durable (temp file, fsync, rename, fsync of the directory),
so a crash at any instant leaves the old channel pointer naming only
content that is complete on disk; publishing again finishes the job.
Everything that can be refused (unsigned revision, channel moving
backwards, missing objects, a different revision N already in the
repository) is checked before the first write.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

from pvinit import durable
from pvinit.checkout.checkout import Checkout
from pvinit.checkout.revisions import Revision
from pvinit.errors import (
    BadInputError,
    BusyError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    RefusedError,
)
from pvinit.objects.ids import sha256_hex
from pvinit.record import record
from pvinit.remote import layout
from pvinit.remote.delta import MAX_DELTA_INPUT, make_delta
from pvinit.signing.envelope import Envelope
from pvinit.state.canonical import canonical_bytes, parse_json
from pvinit.state.model import State

HISTORY_SPEC = "pvinit-channel-history@1"
#: How many published revisions a history file remembers (deltas look back at most this far).
HISTORY_KEEP = 32
DEFAULT_LEVEL = 19
LOCK_NAME = ".publish.lock"

Progress = Callable[[int, int], None]


def history_path(channel: str) -> str:
    """``history/<channel>.json``: publisher bookkeeping, never read by devices."""
    return f"history/{layout.check_channel(channel)}.json"


@record(frozen=True)
class DeltaInfo:
    """One delta written: its base and target ids and both sizes on the wire."""

    base: str
    target: str
    size: int
    full_size: int

    def to_dict(self) -> dict[str, object]:
        return {"base": self.base, "target": self.target, "size": self.size,
                "full_size": self.full_size}


@record(frozen=True)
class PublishReport:
    """What one publish wrote; ``bytes_written`` counts objects, deltas and metadata."""

    revision: int
    channel: str
    objects_written: int
    objects_skipped: int
    deltas_written: int
    bytes_written: int
    deltas: tuple[DeltaInfo, ...] = ()
    channel_moved: bool = True

    def to_dict(self) -> dict[str, object]:
        return {
            "revision": self.revision,
            "channel": self.channel,
            "objects_written": self.objects_written,
            "objects_skipped": self.objects_skipped,
            "deltas_written": self.deltas_written,
            "bytes_written": self.bytes_written,
            "deltas": [d.to_dict() for d in self.deltas],
            "channel_moved": self.channel_moved,
        }


@record(frozen=True)
class HistoryEntry:
    revision: int
    state: str

    def to_dict(self) -> dict[str, object]:
        return {"revision": self.revision, "state": self.state}


# -- pure rules -----------------------------------------------------------------
def check_forward(current: Envelope | None, new: Envelope, *, force: bool) -> bool:
    """Whether the channel pointer must move; RefusedError when it would go backwards.

    Re-publishing the revision the channel already names is allowed (it is
    how an interrupted publish is finished, or new signatures shipped).
    """
    if current is None:
        return True
    if current.revision == new.revision and current.digest == new.digest:
        return current.to_json() != new.to_json()
    if current.revision >= new.revision and not force:
        raise RefusedError(
            f"the channel is at revision {current.revision}; it only moves forward",
            where=str(new.revision),
            hint="publish a newer revision, or use --force to move it back",
        )
    return True


def delta_pairs(
    new: State, bases: list[State], *, size_of: Callable[[str], int]
) -> list[tuple[str, str]]:
    """(base id, target id) pairs worth a delta: same key, changed, both small enough."""
    pairs: list[tuple[str, str]] = []
    for key, target in sorted(new.objects.items()):
        if size_of(target) > MAX_DELTA_INPUT:
            continue
        for base_state in bases:
            base = base_state.objects.get(key)
            if base is None or base == target or (base, target) in pairs:
                continue
            pairs.append((base, target))
    return pairs


def parse_history(data: bytes, *, where: str) -> list[HistoryEntry]:
    doc = parse_json(data, where=where)
    if not isinstance(doc, dict) or doc.get("#spec") != HISTORY_SPEC:
        raise BadInputError(f"#spec must be {HISTORY_SPEC!r}", where=where)
    raw = doc.get("revisions")
    if not isinstance(raw, list):
        raise BadInputError("'revisions' must be a list", where=where)
    entries = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("revision"), int) \
                or not isinstance(item.get("state"), str):
            raise BadInputError("each entry needs revision and state", where=where)
        layout.object_path(item["state"])  # validates the id
        entries.append(HistoryEntry(revision=item["revision"], state=item["state"]))
    return entries


def history_bytes(channel: str, entries: list[HistoryEntry]) -> bytes:
    doc = {"#spec": HISTORY_SPEC, "channel": channel,
           "revisions": [e.to_dict() for e in entries[-HISTORY_KEEP:]]}
    return canonical_bytes(doc, where="history")


# -- the I/O shell ----------------------------------------------------------------
@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """One publisher at a time per repository (a second one gets BusyError)."""
    fd = os.open(target / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError("another publish is writing this repository",
                            where=str(target), hint="retry when it is done") from None
        yield
    finally:
        os.close(fd)


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _decompress_file(path: Path) -> bytes:
    with path.open("rb") as handle, zstandard.ZstdDecompressor().stream_reader(handle) as reader:
        return reader.read()


class _Publisher:
    def __init__(self, co: Checkout, target: Path, level: int) -> None:
        self.co = co
        self.target = target
        self.level = level
        self.bytes_written = 0

    def path(self, rel: str) -> Path:
        return self.target / rel

    def write(self, rel: str, data: bytes, name: str) -> None:
        final = self.path(rel)
        durable.makedirs(final.parent)
        durable.write_file(final, data, name=name)
        self.bytes_written += len(data)

    def write_object(self, object_id: str, data: bytes | None = None) -> int:
        """Compress object ``object_id`` (from the store, or ``data``) to ``objects/<id>``."""
        final = self.path(layout.object_path(object_id))
        durable.makedirs(final.parent)
        cctx = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        with durable.save_file(final, name="publish.object") as handle:
            if data is not None:
                handle.write(cctx.compress(data))
            else:
                with self.co.store.open(object_id) as source:
                    cctx.copy_stream(source, handle, size=self.co.store.size(object_id))
            handle.flush()
            size = handle.tell()
        self.bytes_written += size
        return size

    def raw_object(self, object_id: str) -> bytes | None:
        """The raw bytes of an object: from the checkout's store, else from the repository."""
        if self.co.store.contains(object_id):
            return self.co.store.read_bytes(object_id)
        path = self.path(layout.object_path(object_id))
        if not path.is_file():
            return None
        data = _decompress_file(path)
        if sha256_hex(data) != object_id:
            raise IntegrityError("repository object does not match its id", where=str(path))
        return data

    def base_states(self, history: list[HistoryEntry], current: Envelope | None,
                    number: int, depth: int) -> list[State]:
        """States of the last ``depth`` revisions the channel published before ``number``."""
        seen: list[HistoryEntry] = [e for e in history if e.revision < number]
        if current is not None and current.revision < number and \
                all(e.state != current.state for e in seen):
            seen.append(HistoryEntry(current.revision, current.state))
        seen.sort(key=lambda e: e.revision)
        states: list[State] = []
        for entry in reversed(seen):
            if len(states) >= depth:
                break
            raw = self.raw_object(entry.state)
            if raw is not None:
                states.append(State.from_bytes(raw, where=f"state {entry.state}"))
        return states


def publish(
    checkout: Checkout,
    target: Path,
    channel: str,
    *,
    revision: str = "HEAD",
    delta_depth: int = 3,
    level: int = DEFAULT_LEVEL,
    allow_unsigned: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> PublishReport:
    """Publish ``revision`` of ``checkout`` to the repository directory ``target`` on ``channel``.

    See the module docstring for what is written and in which order.
    Raises before writing anything when the revision is unsigned (unless
    ``allow_unsigned``), would move the channel backwards (unless ``force``),
    lacks objects in the store, or clashes with a different revision of the
    same number already in the repository.
    """
    layout.check_channel(channel)
    if delta_depth < 0:
        raise BadInputError("delta depth must be >= 0", where=str(delta_depth))
    if not 1 <= level <= 22:
        raise BadInputError("zstd level must be 1..22", where=str(level))
    if target.exists() and not target.is_dir():
        raise BadInputError("publish target is not a directory", where=str(target))
    number = checkout.revisions.resolve(revision)
    rev = checkout.revisions.load(number)
    envelope = rev.envelope
    if not envelope.signatures and not allow_unsigned:
        raise RefusedError(
            f"revision {number} is not signed; devices would refuse it",
            where=str(number), hint=f"run 'pvstate sign {number} --key KEY' first",
        )
    missing = sorted(o for o in rev.state.object_ids() if not checkout.store.contains(o))
    if missing:
        raise NotFoundError(f"{len(missing)} object(s) of revision {number} are not in the "
                            f"store, e.g. {missing[0]}", where=str(checkout.objects_dir))
    durable.makedirs(target)
    with _locked(target):
        return _publish_locked(checkout, target, channel, rev,
                               delta_depth=delta_depth, level=level, force=force,
                               progress=progress)


def _publish_locked(
    co: Checkout, target: Path, channel: str, rev: Revision, *, delta_depth: int, level: int,
    force: bool, progress: Progress | None,
) -> PublishReport:
    state, envelope = rev.state, rev.envelope
    state_bytes = state.canonical_bytes()
    pub = _Publisher(co, target, level)
    number = envelope.revision
    channel_file = pub.path(layout.channel_path(channel))
    current_bytes = _read_optional(channel_file)
    current = None if current_bytes is None else \
        Envelope.from_json(current_bytes, source=str(channel_file))
    move = check_forward(current, envelope, force=force)
    rev_file = pub.path(layout.revision_path(number))
    existing = _read_optional(rev_file)
    if existing is not None:
        old = Envelope.from_json(existing, source=str(rev_file))
        if old.digest != envelope.digest and not force:
            raise ConflictError(
                f"the repository holds a different revision {number}", where=str(rev_file),
                hint="publish from the checkout that made it, or use --force",
            )
    hist_file = pub.path(history_path(channel))
    hist_bytes = _read_optional(hist_file)
    history = [] if hist_bytes is None else parse_history(hist_bytes, where=str(hist_file))

    # 1. objects (the state object is small and goes first with the rest).
    wanted = sorted(state.object_ids())
    todo = [o for o in wanted if not pub.path(layout.object_path(o)).is_file()]
    state_written = not pub.path(layout.object_path(envelope.state)).is_file()
    total = sum(co.store.size(o) for o in todo)
    done = 0
    for object_id in todo:
        pub.write_object(object_id)
        done += co.store.size(object_id)
        if progress is not None:
            progress(done, total)
    if state_written:
        pub.write_object(envelope.state, state_bytes)

    # 2. deltas against what devices on this channel most likely hold.
    deltas: list[DeltaInfo] = []
    bases = pub.base_states(history, current, number, delta_depth)
    for base_id, target_id in delta_pairs(state, bases, size_of=co.store.size):
        rel = layout.delta_path(base_id, target_id)
        if pub.path(rel).is_file():
            continue
        base = pub.raw_object(base_id)
        if base is None or len(base) > MAX_DELTA_INPUT:
            continue
        full_size = pub.path(layout.object_path(target_id)).stat().st_size
        delta = make_delta(base, co.store.read_bytes(target_id), level=level)
        if len(delta) >= full_size:
            continue
        pub.write(rel, delta, "publish.delta")
        deltas.append(DeltaInfo(base_id, target_id, len(delta), full_size))

    # 3-5. metadata, the channel pointer last.
    data = envelope.to_json()
    if existing != data:
        pub.write(layout.revision_path(number), data, "publish.revision")
    if all(e.revision != number for e in history):
        new_history = sorted([*history, HistoryEntry(number, envelope.state)],
                             key=lambda e: e.revision)
        pub.write(history_path(channel), history_bytes(channel, new_history), "publish.history")
    if move:
        pub.write(layout.channel_path(channel), data, "publish.channel")
    return PublishReport(
        revision=number,
        channel=channel,
        objects_written=len(todo) + int(state_written),
        objects_skipped=len(wanted) - len(todo) + int(not state_written),
        deltas_written=len(deltas),
        bytes_written=pub.bytes_written,
        deltas=tuple(deltas),
        channel_moved=move,
    )


def read_object(repo: Path, object_id: str) -> bytes:
    """An object's raw bytes from a published repository, hash checked (tests, tools)."""
    data = _decompress_file(repo / layout.object_path(object_id))
    if sha256_hex(data) != object_id:
        raise IntegrityError("repository object does not match its id", where=object_id)
    return data


__all__ = [
    "DeltaInfo",
    "PublishReport",
    "check_forward",
    "delta_pairs",
    "history_path",
    "publish",
    "read_object",
]

"""Helpers for the transport tests: a remote repository layout written by hand.

Deliberately independent of the publisher (``pvinit.remote.publish``): the
tests pin the layout the device reads, so a publisher change that breaks
devices fails here too.  No tests live in this module.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from pathlib import Path

import zstandard

from pvinit.remote import layout
from pvinit.remote.delta import make_delta
from pvinit.signing.envelope import Envelope
from pvinit.signing.keys import SigningKey
from pvinit.signing.trust import sign_envelope
from pvinit.state.canonical import canonical_bytes

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob(seed: int, size: int = 64 << 10) -> bytes:
    """Reproducible bytes that compress a little (like a filesystem image)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    words = [rng.randbytes(16) for _ in range(64)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) if rng.random() < 0.7 else rng.randbytes(32)
    return bytes(out[:size])


def frame(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


class RemoteBuilder:
    """Writes ``channels/``, ``revisions/``, ``objects/`` and ``deltas/`` under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = SigningKey.generate()
        root.mkdir(parents=True, exist_ok=True)

    def _write(self, relative: str, data: bytes) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
        return path

    def add_object(self, data: bytes) -> str:
        object_id = sha(data)
        self._write(layout.object_path(object_id), frame(data))
        return object_id

    def put_raw_object(self, object_id: str, wire: bytes) -> Path:
        """Serve ``wire`` as object ``object_id`` (lies allowed)."""
        return self._write(layout.object_path(object_id), wire)

    def add_delta(self, base: bytes, target: bytes) -> Path:
        return self._write(layout.delta_path(sha(base), sha(target)), make_delta(base, target))

    def put_raw_delta(self, base_id: str, target_id: str, wire: bytes) -> Path:
        return self._write(layout.delta_path(base_id, target_id), wire)

    def publish(self, channel: str, objects: dict[str, bytes], *, revision: int = 1) -> tuple[
            Envelope, bytes]:
        """Store the objects and a state naming them; sign and point ``channel`` at it."""
        state = canonical_bytes(
            {"#spec": "pvinit-state@1", **{f"app/{k}": sha(v) for k, v in objects.items()}},
            where="test state",
        )
        for data in objects.values():
            self.add_object(data)
        self.add_object(state)
        envelope = Envelope.create(
            revision=revision, parent=None, state_bytes=state,
            sizes={sha(v): len(v) for v in objects.values()}, created=NOW,
        )
        envelope = sign_envelope(envelope, self.key)
        self._write(layout.revision_path(revision), envelope.to_json())
        self._write(layout.channel_path(channel), envelope.to_json())
        return envelope, state

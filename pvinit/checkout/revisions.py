"""The committed revisions of a checkout: ``.pvstate/revisions/<N>.json``.

Each file holds a revision *envelope* (DESIGN.md: number, parent digest,
state digest, sizes, message, signatures); the canonical state itself is an
object in the store, addressed by its digest, so revisions cost one small
file each.  ``.pvstate/HEAD`` names the revision the working tree is based
on; it moves only after the revision it names is durably on disk.
"""

from __future__ import annotations

import re
from pathlib import Path

from pvinit import durable
from pvinit.errors import BadInputError, ConflictError, RevisionNotFoundError
from pvinit.objects.store import ObjectStore
from pvinit.record import record
from pvinit.signing.envelope import Envelope
from pvinit.state.canonical import canonical_bytes, parse_json
from pvinit.state.model import State

_REV_FILE = re.compile(r"([1-9][0-9]{0,9})\.json")
_REL_SPEC = re.compile(r"(HEAD|[1-9][0-9]*)~([0-9]+)")


@record(frozen=True)
class Revision:
    """A committed revision: its envelope and its (validated) state."""

    envelope: Envelope
    state: State

    @property
    def number(self) -> int:
        return self.envelope.revision


class RevisionLog:
    """Read, write and resolve the numbered revisions of one checkout."""

    def __init__(self, meta: Path, store: ObjectStore) -> None:
        self.dir = meta / "revisions"
        self.head_file = meta / "HEAD"
        self.store = store

    # -- numbers and names -------------------------------------------------
    def numbers(self) -> list[int]:
        """Committed revision numbers, ascending."""
        if not self.dir.is_dir():
            return []
        found = []
        for path in self.dir.iterdir():
            match = _REV_FILE.fullmatch(path.name)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def head(self) -> int | None:
        try:
            text = self.head_file.read_text().strip()
        except FileNotFoundError:
            return None
        if not text:
            return None
        if not text.isdigit():
            raise BadInputError("HEAD does not hold a revision number", where=str(self.head_file))
        return int(text)

    def set_head(self, number: int | None, *, expect: int | None) -> None:
        """Move HEAD by compare-and-swap: refuse if it no longer holds ``expect``."""
        current = self.head()
        if current != expect:
            raise ConflictError(
                f"HEAD moved from {expect} to {current} while this command ran",
                where=str(self.head_file),
                hint="run the command again",
            )
        data = b"" if number is None else f"{number}\n".encode()
        durable.write_file(self.head_file, data, name="checkout.head")

    def resolve(self, spec: str) -> int:
        """Turn ``N``, ``HEAD``, ``HEAD~K``, ``N~K`` or an envelope digest prefix into a number."""
        spec = spec.strip()
        numbers = self.numbers()
        if not numbers:
            raise RevisionNotFoundError("no revision has been committed yet", where=spec)
        if spec in {"HEAD", "@"}:
            head = self.head()
            if head is None:
                raise RevisionNotFoundError("HEAD names no revision", where=spec)
            return head
        if spec == "latest":
            return numbers[-1]
        if spec.isdigit():
            number = int(spec)
            if number not in numbers:
                raise RevisionNotFoundError(f"no revision {number}", where=spec)
            return number
        match = _REL_SPEC.fullmatch(spec)
        if match:
            number = self.resolve(match.group(1))
            for _ in range(int(match.group(2))):
                parent = self.parent_of(number)
                if parent is None:
                    raise RevisionNotFoundError(f"revision {number} has no parent", where=spec)
                number = parent
            return number
        if re.fullmatch(r"[0-9a-f]{7,64}", spec):
            hits = [n for n in numbers if self.envelope(n).digest.startswith(spec)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise BadInputError(f"digest prefix is ambiguous: revisions {hits}", where=spec)
        raise RevisionNotFoundError(
            "no such revision (use a number, HEAD, HEAD~N, latest or a digest prefix)", where=spec
        )

    def parent_of(self, number: int) -> int | None:
        parent = self.envelope(number).parent
        if parent is None:
            return None
        for candidate in reversed(self.numbers()):
            if candidate < number and self.envelope(candidate).digest == parent:
                return candidate
        return None

    # -- reading and writing ----------------------------------------------
    def path(self, number: int) -> Path:
        return self.dir / f"{number}.json"

    def envelope(self, number: int) -> Envelope:
        path = self.path(number)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise RevisionNotFoundError(f"no revision {number}", where=str(path)) from None
        data = parse_json(raw, where=str(path))
        if not isinstance(data, dict):
            raise BadInputError("a revision envelope must be a JSON object", where=str(path))
        return Envelope.from_dict(data)

    def load(self, number: int) -> Revision:
        envelope = self.envelope(number)
        raw = self.store.read_bytes(envelope.state)
        state = State.from_bytes(raw, where=f"revision {number} state")
        return Revision(envelope=envelope, state=state)

    def write_envelope(self, envelope: Envelope, *, replace: bool = False) -> Path:
        """Durably write an envelope; a new revision never overwrites an existing one."""
        durable.makedirs(self.dir)
        path = self.path(envelope.revision)
        if path.exists() and not replace:
            raise ConflictError(
                f"revision {envelope.revision} exists already", where=str(path)
            )
        data = canonical_bytes(envelope.to_dict()) + b"\n"
        durable.write_file(path, data, name="checkout.revision")
        return path

"""A state checkout: the release engineer's working copy of a device state.

Layout of a checkout directory::

    <dir>/.pvstate/config.json     {"#spec": "pvinit-checkout@1", "objects": "<store path>"}
    <dir>/.pvstate/HEAD            number of the revision the working tree is based on
    <dir>/.pvstate/revisions/N.json  committed envelopes (the states live in the store)
    <dir>/.pvstate/cache.json      stat cache of hashed working-tree files
    <dir>/.pvstate/tmp/            scratch space on the same filesystem (squashfs builds)
    <dir>/<key>                    the working tree: one file per state key

This module is the library behind ``pvstate``; the CLI only parses
arguments and prints.  Every command validates the state it would produce
*before* writing anything, so bad input leaves the checkout untouched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from pvinit import durable
from pvinit.checkout.revisions import Revision, RevisionLog
from pvinit.checkout.worktree import (
    Entry,
    Progress,
    StatCache,
    format_document,
    hash_file,
    iter_tree_files,
    remove_entry,
    scan,
    write_entry,
)
from pvinit.errors import (
    BadInputError,
    ConflictError,
    NotFoundError,
    RefusedError,
)
from pvinit.objects.disk import DiskObjectStore
from pvinit.objects.store import ObjectStore
from pvinit.record import field, record
from pvinit.signing.envelope import Envelope
from pvinit.state.canonical import parse_json
from pvinit.state.model import State
from pvinit.state.paths import check_key

META = ".pvstate"
STATE_SPEC = "pvinit-state@1"
CHECKOUT_SPEC = "pvinit-checkout@1"
ENVELOPE_SPEC = "pvinit-envelope@1"

DEFAULT_DEVICE: dict[str, object] = {
    "groups": [
        {"name": "data", "status_goal": "MOUNTED", "restart_policy": "system", "timeout": 30},
        {"name": "root", "status_goal": "STARTED", "restart_policy": "system", "timeout": 30},
        {"name": "platform", "status_goal": "STARTED", "restart_policy": "system", "timeout": 30},
        {"name": "app", "status_goal": "STARTED", "restart_policy": "container", "timeout": 30},
    ]
}


def utc_timestamp(now: dt.datetime | None = None) -> str:
    """ISO 8601 UTC to the second; ``SOURCE_DATE_EPOCH`` pins it for reproducible builds."""
    if now is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        if epoch and epoch.isdigit():
            now = dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC)
        else:
            now = dt.datetime.now(tz=dt.UTC)
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@record(frozen=True)
class TreeStatus:
    """Working tree compared with HEAD."""

    head: int | None
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    problem: str | None = None

    @property
    def clean(self) -> bool:
        return not (self.added or self.removed or self.modified)

    def to_dict(self) -> dict[str, object]:
        return {
            "head": self.head,
            "clean": self.clean,
            "added": list(self.added),
            "removed": list(self.removed),
            "modified": list(self.modified),
            "valid": self.problem is None,
            "problem": self.problem,
        }


@record
class Staged:
    """Files prepared in ``.pvstate/tmp`` for an edit, moved into the tree only once valid."""

    files: dict[str, Path] = field(default_factory=dict)
    documents: dict[str, dict[str, object]] = field(default_factory=dict)


class Checkout:
    """A state checkout on disk (see the module docstring for its layout)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = root / META
        config_path = self.meta / "config.json"
        try:
            config = parse_json(config_path.read_bytes(), where=str(config_path))
        except FileNotFoundError:
            raise NotFoundError(
                "not a state checkout (no .pvstate/config.json)", where=str(root),
                hint="run 'pvstate init' first",
            ) from None
        if not isinstance(config, dict) or config.get("#spec") != CHECKOUT_SPEC:
            raise BadInputError(f"#spec must be {CHECKOUT_SPEC!r}", where=str(config_path))
        objects = config.get("objects")
        if not isinstance(objects, str) or not objects:
            raise BadInputError("'objects' must name the object store", where=str(config_path))
        self.objects_dir = (root / objects).resolve()
        self.store: ObjectStore = DiskObjectStore(self.objects_dir)
        self.revisions = RevisionLog(self.meta, self.store)

    # -- opening -------------------------------------------------------------
    @classmethod
    def init(cls, root: Path, objects_dir: Path, *, device: bool = True) -> Checkout:
        """Create a checkout at ``root`` linked to the store at ``objects_dir`` (made if absent)."""
        root = root.resolve()
        meta = root / META
        if (meta / "config.json").exists():
            raise ConflictError("already a state checkout", where=str(root))
        objects_dir = objects_dir if objects_dir.is_absolute() else Path.cwd() / objects_dir
        if not objects_dir.exists():
            DiskObjectStore.create(objects_dir)
        rel = os.path.relpath(objects_dir.resolve(), root)
        durable.makedirs(meta / "revisions")
        config = {"#spec": CHECKOUT_SPEC, "objects": rel}
        durable.write_file(meta / "config.json", format_document(config), name="checkout.config")
        device_path = root / "device.json"
        if device and not device_path.exists():
            durable.write_file(device_path, format_document(DEFAULT_DEVICE), name="checkout.file")
        return cls(root)

    @classmethod
    def find(cls, start: Path) -> Checkout:
        """The checkout containing ``start`` (searching upwards, as git does)."""
        here = start.resolve()
        for candidate in (here, *here.parents):
            if (candidate / META / "config.json").is_file():
                return cls(candidate)
        raise NotFoundError(
            "not inside a state checkout", where=str(start), hint="run 'pvstate init' or use -C DIR"
        )

    # -- reading -------------------------------------------------------------
    def working_entries(self, progress: Progress | None = None) -> dict[str, Entry]:
        entries = scan(self.root, StatCache(self.meta / "cache.json"), progress)
        return {"#spec": STATE_SPEC, **entries}

    def working_state(self, progress: Progress | None = None) -> State:
        """The working tree as a validated State (raises naming the bad key)."""
        return State.from_dict(self.working_entries(progress), where="working tree")

    def head(self) -> Revision | None:
        number = self.revisions.head()
        return None if number is None else self.revisions.load(number)

    def status(self, progress: Progress | None = None) -> TreeStatus:
        entries = self.working_entries(progress)
        head = self.head()
        base: Mapping[str, object] = head.state.to_dict() if head else {"#spec": STATE_SPEC}
        added = sorted(k for k in entries if k not in base)
        removed = sorted(k for k in base if k not in entries)
        modified = sorted(k for k in entries if k in base and base[k] != entries[k])
        problem = None
        try:
            State.from_dict(entries, where="working tree")
        except BadInputError as err:
            problem = str(err)
        return TreeStatus(
            head=head.number if head else None,
            added=tuple(added), removed=tuple(removed), modified=tuple(modified),
            problem=problem,
        )

    # -- committing ------------------------------------------------------------
    def commit(
        self,
        message: str,
        *,
        created: str | None = None,
        expires: str | None = None,
        allow_empty: bool = False,
        progress: Progress | None = None,
    ) -> Revision:
        """Snapshot the working tree as the next numbered revision."""
        head_number = self.revisions.head()
        state = self.working_state(progress)
        head = self.revisions.load(head_number) if head_number is not None else None
        if head is not None and head.state.digest == state.digest and not allow_empty:
            raise RefusedError(
                f"nothing to commit: the working tree matches revision {head.number}"
            )
        self._ingest_tree(state)
        state_bytes = state.canonical_bytes()
        self.store.add_bytes(state_bytes, expected_id=state.digest)
        numbers = self.revisions.numbers()
        number = (numbers[-1] + 1) if numbers else 1
        sizes = {oid: self.store.size(oid) for oid in sorted(state.object_ids())}
        envelope = Envelope.from_dict(
            {
                "#spec": ENVELOPE_SPEC,
                "revision": number,
                "parent": head.envelope.digest if head else None,
                "state": state.digest,
                "state_size": len(state_bytes),
                "sizes": sizes,
                "created": created or utc_timestamp(),
                "expires": expires,
                "message": message,
                "signatures": [],
            }
        )
        self.revisions.write_envelope(envelope)
        self.revisions.set_head(number, expect=head_number)
        return Revision(envelope=envelope, state=state)

    def _ingest_tree(self, state: State) -> None:
        """Copy every working-tree object the store lacks into it (hash re-checked)."""
        for key, object_id in state.objects.items():
            if not self.store.contains(object_id):
                self.store.add_file(self.root / key, expected_id=object_id)

    # -- switching revisions ------------------------------------------------
    def checkout(self, spec: str, *, force: bool = False) -> Revision:
        """Make the working tree equal to revision ``spec`` and move HEAD there."""
        number = self.revisions.resolve(spec)
        target = self.revisions.load(number)
        head_number = self.revisions.head()
        head = self.revisions.load(head_number) if head_number is not None else None
        current = self.working_entries()
        tracked: Mapping[str, object] = head.state.to_dict() if head else {}
        wanted = target.state.to_dict()
        if not force:
            dirty = sorted(
                k for k in set(current) | set(tracked)
                if k != "#spec" and current.get(k) != tracked.get(k)
            )
            clobbered = sorted(
                k for k in current
                if k not in tracked and k in wanted and current[k] != wanted[k]
            )
            if dirty or clobbered:
                shown = ", ".join((dirty or clobbered)[:5])
                raise ConflictError(
                    f"the working tree has changes that checkout would lose: {shown}",
                    where=str(self.root), hint="commit them or use --force",
                )
        for key, oid in target.state.objects.items():
            if not self.store.contains(oid):
                raise NotFoundError(
                    f"object {oid} of revision {number} is not in the store", where=key
                )
        for key in sorted(set(tracked) - set(wanted)):
            if key != "#spec":
                remove_entry(self.root, key)
        for key, value in sorted(wanted.items()):
            if key == "#spec" or current.get(key) == value:
                continue
            assert isinstance(value, (str, dict))
            write_entry(self.root, key, value, self.store)
        self.revisions.set_head(number, expect=head_number)
        return target

    # -- editing (add, container add, bsp set) -----------------------------
    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A scratch directory on the checkout's filesystem, removed afterwards."""
        durable.makedirs(self.meta / "tmp")
        path = Path(tempfile.mkdtemp(prefix="stage-", dir=self.meta / "tmp"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def apply_staged(
        self, staged: Staged, *, removals: tuple[str, ...] = (), validate: bool = True
    ) -> State | None:
        """Validate the tree as it would be after the edit, then move the files in.

        With ``validate=False`` (plain ``add``/``rm``, which like git may leave
        a tree mid-edit) only the keys are checked; ``commit`` validates all.
        Objects are ingested into the store first (harmless if the edit is
        refused later: unreferenced objects are reclaimed by GC).
        """
        ids = {check_key(key, where=key): hash_file(path) for key, path in staged.files.items()}
        for key in staged.documents:
            check_key(key, where=key)
        state = None
        if validate:
            entries: dict[str, object] = dict(self.working_entries())
            for key in removals:
                entries.pop(key, None)
            entries.update(ids)
            entries.update(staged.documents)
            state = State.from_dict(entries, where="working tree")
        for key, path in staged.files.items():
            self.store.add_file(path, expected_id=ids[key])
        for key in removals:
            remove_entry(self.root, key)
        for key, path in staged.files.items():
            final = self.root / key
            durable.makedirs(final.parent)
            durable.point("checkout.add")
            os.replace(path, final)
            durable.fsync_dir(final.parent)
        for key, doc in staged.documents.items():
            final = self.root / key
            durable.makedirs(final.parent)
            durable.write_file(final, format_document(doc), name="checkout.file")
        return state

    def tracked_files(self) -> list[str]:
        return [key for key, _ in iter_tree_files(self.root)]

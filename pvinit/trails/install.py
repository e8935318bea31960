"""Put a revision in place: objects in the store, then its trail ``trails/<rev>/``.

A trail is assembled in ``trails/.<rev>.partial`` and made visible by one
rename, so after a power cut a trail either exists whole or not at all; a
leftover partial directory is removed and the trail built again.
Installing a revision that is already installed with the same envelope is a
no-op; one whose number is taken by *different* content is a ConflictError
(a revision number names one revision, forever).

Signatures and the trust policy are not checked here: that is the update
engine's job before it calls :func:`install_bundle`.  What *is* checked:
the bundle's framing and every object's hash (by the bundle reader), that
the state bytes are the ones the envelope names, that they are a valid
state, and that every object the state needs is in the store.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pvinit import durable
from pvinit.errors import (
    ConflictError,
    IntegrityError,
    ObjectNotFoundError,
    PvError,
    RevisionNotFoundError,
)
from pvinit.objects.ids import metadata_sha256
from pvinit.record import record
from pvinit.signing.envelope import Envelope
from pvinit.state.canonical import canonical_bytes
from pvinit.state.model import State
from pvinit.trails.layout import PV_DIR, StorageLayout, check_revision
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:  # installs need the store; a boot only loads a trail
    from pvinit.objects.disk import DiskObjectStore

STATE_FILE = "state.json"
ENVELOPE_FILE = "envelope.json"


@record(frozen=True)
class InstalledRevision:
    """A revision as it sits in its trail."""

    revision: int
    path: Path
    state: State
    envelope: Envelope

    def file(self, key: str) -> Path:
        """The trail file of a revision key (an object's hard link, or a JSON document)."""
        return self.path / key


@record(frozen=True)
class BootFiles:
    """What a bootloader needs of a revision: absolute paths of its kernel and friends.

    Written to ``trails/<rev>/.pv/boot.json``; all None on a revision
    without a BSP (a dev machine boots the host's kernel).
    """

    revision: int
    linux: str | None = None
    initrd: str | None = None
    dtb: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "revision": self.revision,
            "linux": self.linux,
            "initrd": self.initrd,
            "dtb": self.dtb,
        }


def boot_files(state: State, revision: int, trail: Path) -> BootFiles:
    """The boot record of ``state`` installed at ``trail`` (pure)."""
    bsp = state.bsp
    if bsp is None:
        return BootFiles(revision=revision)

    def at(name: str | None) -> str | None:
        return None if name is None else str(trail / "bsp" / name)

    return BootFiles(
        revision=revision, linux=at(bsp.linux), initrd=at(bsp.initrd), dtb=at(bsp.dtb or bsp.fdt)
    )


def _check_envelope(state_bytes: bytes, envelope: Envelope, where: str) -> State:
    if (
        metadata_sha256(state_bytes) != envelope.state
        or len(state_bytes) != envelope.state_size
    ):
        raise IntegrityError(
            f"state bytes do not match the envelope's state {envelope.state}", where=where
        )
    return State.from_bytes(state_bytes, where=f"{where}:state.json")


def _check_objects_present(state: State, store: DiskObjectStore, where: str) -> None:
    for key, object_id in sorted(state.objects.items()):
        if not store.contains(object_id):
            raise ObjectNotFoundError(
                f"object {object_id} of key {key!r} is not in the store",
                where=where,
                hint="install a bundle that carries it",
            )


def load_trail(layout: StorageLayout, revision: int) -> InstalledRevision:
    """Read an installed trail (its state and envelope), checking they agree."""
    path = layout.trail(revision)
    where = str(path)
    try:
        state_bytes = (path / STATE_FILE).read_bytes()
        envelope_bytes = (path / ENVELOPE_FILE).read_bytes()
    except FileNotFoundError:
        raise RevisionNotFoundError(f"revision {revision} is not installed", where=where) from None
    envelope = Envelope.from_json(envelope_bytes, source=f"{where}/{ENVELOPE_FILE}")
    state = _check_envelope(state_bytes, envelope, where)
    if envelope.revision != revision:
        raise IntegrityError(
            f"trail holds revision {envelope.revision}, not {revision}", where=where
        )
    return InstalledRevision(revision=revision, path=path, state=state, envelope=envelope)


def _link_object(source: Path, target: Path, key: str) -> None:
    durable.makedirs(target.parent)
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno == errno.EXDEV:
            raise PvError(
                "objects and trails are on different filesystems: cannot hard-link",
                where=key,
                hint="keep objects/ and trails/ in one storage filesystem",
            ) from None
        raise


def _fsync_tree(top: Path) -> None:
    for directory, _, _ in os.walk(top):
        durable.fsync_dir(directory)


def install_revision(
    layout: StorageLayout, *, state_bytes: bytes, envelope: Envelope
) -> InstalledRevision:
    """Install the trail of a revision whose objects are already in the store.

    Idempotent; completes or redoes a trail a power cut interrupted.
    """
    revision = check_revision(envelope.revision, where="envelope.revision")
    where = f"revision {revision}"
    state = _check_envelope(state_bytes, envelope, where)
    final = layout.trail(revision)
    if final.exists():
        installed = load_trail(layout, revision)
        if installed.envelope.to_json() != envelope.to_json():
            raise ConflictError(
                f"revision {revision} is already installed with different content",
                where=str(final),
            )
        return installed
    durable.makedirs(layout.objects)
    from pvinit.objects.disk import DiskObjectStore

    store = DiskObjectStore.create(layout.objects)
    _check_objects_present(state, store, where)
    partial = layout.partial_trail(revision)
    if partial.exists():
        durable.remove_tree(partial)  # what a power cut left; nothing else ever reads it
    durable.makedirs(partial / PV_DIR)
    for key, object_id in state.objects.items():
        _link_object(store.path(object_id), partial / key, key)
    for key, document in state.documents.items():
        durable.makedirs((partial / key).parent)
        durable.write_file(partial / key, canonical_bytes(document, where=key), name="trail.doc")
    durable.write_file(
        partial / PV_DIR / "boot.json",
        canonical_bytes(boot_files(state, revision, final).to_dict(), where="boot.json"),
        name="trail.boot",
    )
    durable.write_file(partial / ENVELOPE_FILE, envelope.to_json(), name="trail.envelope")
    durable.write_file(partial / STATE_FILE, state_bytes, name="trail.state")
    _fsync_tree(partial)
    durable.point("trail.rename")
    partial.rename(final)
    durable.fsync_dir(layout.trails)
    return InstalledRevision(revision=revision, path=final, state=state, envelope=envelope)


def install_bundle(layout: StorageLayout, bundle_path: str | os.PathLike[str]) -> InstalledRevision:
    """Verify a bundle, import its objects, install its trail; returns the revision.

    A bundle that fails verification, or whose state is invalid or needs an
    object neither it nor the store has, changes nothing on disk.
    """
    where = str(bundle_path)
    from pvinit.bundle.reader import BundleReader  # zstandard + msgpack: only for a bundle

    with BundleReader(Path(bundle_path)) as reader:
        header = reader.header
        state = _check_envelope(header.state, header.envelope, where)
        carried = {entry.object_id for entry in header.objects}
        durable.makedirs(layout.objects)
        from pvinit.objects.disk import DiskObjectStore

        store = DiskObjectStore.create(layout.objects)
        for key, object_id in sorted(state.objects.items()):
            if object_id not in carried and not store.contains(object_id):
                raise ObjectNotFoundError(
                    f"object {object_id} of key {key!r} is neither in the bundle nor the store",
                    where=where,
                )
        reader.import_into(store)
    return install_revision(layout, state_bytes=header.state, envelope=header.envelope)

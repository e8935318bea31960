"""Where everything lives in a device's storage directory (pure path logic).

::

    <storage>/objects/<2>/<62>            the object store (read-only files)
    <storage>/trails/<rev>/state.json     the revision, canonical bytes
    <storage>/trails/<rev>/envelope.json  its envelope
    <storage>/trails/<rev>/<key>          objects hard-linked, inline JSON written out
    <storage>/trails/<rev>/.pv/boot.json  kernel/initrd paths for the bootloader
    <storage>/refs/{current,try,done,factory}
    <storage>/disks/perm/<container>/<volume>
    <storage>/disks/rev/<rev>/<container>/<volume>
    <storage>/disks/boot/<container>/<volume>   wiped at every boot
    <storage>/logs/<rev>/<container>/
    <storage>/factory.pvb                 the bundle a blank device installs first

Trails and objects must be on one filesystem: a trail's files are hard links.
Nothing here touches the disk, so the layout can be reasoned about (and
tested) with plain values.
"""

from __future__ import annotations

from pathlib import Path

from pvinit.errors import BadInputError
from pvinit.record import record
from pvinit.state._fields import NAME_RE

#: Persistence scope name (run.json ``storage.<volume>.persistence``) -> disks/ sub-directory.
PERSISTENCE_SCOPES = ("permanent", "revision", "boot")

#: Name of the per-revision directory inside a trail that no revision key may use.
PV_DIR = ".pv"


def check_revision(revision: object, *, where: str = "revision") -> int:
    """A revision number is a non-negative int (and never a bool)."""
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise BadInputError(f"not a revision number: {revision!r:.40}", where=where)
    return revision


def _check_name(name: str, what: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise BadInputError(f"not a valid {what} name", where=repr(name))
    return name


@record(frozen=True)
class StorageLayout:
    """The paths of one storage directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).absolute())

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def trails(self) -> Path:
        return self.root / "trails"

    @property
    def refs(self) -> Path:
        return self.root / "refs"

    @property
    def disks(self) -> Path:
        return self.root / "disks"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def factory_bundle(self) -> Path:
        return self.root / "factory.pvb"

    def trail(self, revision: int) -> Path:
        return self.trails / str(check_revision(revision))

    def partial_trail(self, revision: int) -> Path:
        """Where a trail is assembled before one rename makes it visible."""
        return self.trails / f".{check_revision(revision)}.partial"

    def boot_record(self, revision: int) -> Path:
        return self.trail(revision) / PV_DIR / "boot.json"

    def ref(self, name: str) -> Path:
        return self.refs / name

    def scope_dir(self, persistence: str, revision: int) -> Path:
        """The disks/ directory of a persistence scope."""
        if persistence == "permanent":
            return self.disks / "perm"
        if persistence == "revision":
            return self.disks / "rev" / str(check_revision(revision))
        if persistence == "boot":
            return self.disks / "boot"
        raise BadInputError(
            f"unknown persistence {persistence!r} (one of {', '.join(PERSISTENCE_SCOPES)})",
            where="persistence",
        )

    def volume_dir(self, persistence: str, revision: int, container: str, volume: str) -> Path:
        """``disks/<scope>/<container>/<volume>``: a container volume's writable data."""
        return (
            self.scope_dir(persistence, revision)
            / _check_name(container, "container")
            / _check_name(volume, "volume")
        )

    def log_dir(self, revision: int | None, source: str) -> Path:
        """``logs/<rev>/<source>/`` (``logs/none/`` before a revision is known)."""
        rev = "none" if revision is None else str(check_revision(revision))
        return self.logs / rev / _check_name(source, "log source")

"""The state revision: one JSON object mapping relative keys to object ids or inline documents.

:class:`State` keeps the raw entries exactly as given (so ``to_dict()`` and
the digest reproduce the input byte for byte) and exposes typed, validated
views over them: :attr:`State.device`, :attr:`State.bsp`,
:attr:`State.containers`.  All validation happens once, in
:meth:`State.from_dict`; a State that exists is valid, and every error names
the offending key (``state.json:sensor/run.json#env["RATE"]``).

Rules beyond each document's own (see :mod:`pvinit.state.documents`):

- ``#spec`` must be ``"pvinit-state@1"``; ``device.json`` is required (the
  groups decide the boot order, there is no sensible default).
- A key ending in ``.json`` holds an inline JSON object; any other key holds
  a 64-hex object id.
- No key is both a file and a directory (``a`` and ``a/b``): a trail could
  not hold both.
- A container is a top-level directory with a ``run.json``; its ``name``
  must equal the directory; its group must be in ``device.json``; its
  ``root-volume`` and ``volumes`` must be object keys inside its directory.
  ``bsp`` and ``other`` are not container names (they name diff parts).
- ``bsp/run.json`` is optional (a dev machine boots the host's kernel), but
  files under ``bsp/`` without it are refused; each file it names must be
  an object key under ``bsp/``.

Inline documents returned by :attr:`State.entries` and
:attr:`State.documents` are the State's own: read them, do not mutate them
(``to_dict()`` gives a copy to edit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from pvinit.errors import InvalidStateError, NotFoundError
from pvinit.objects.ids import check_object_id, metadata_sha256
from pvinit.state._fields import NAME_RE, field_where, json_copy, kind_of
from pvinit.state.canonical import canonical_bytes, check_json_value, parse_json
from pvinit.state.documents import (
    AutoRecovery,
    Bsp,
    Container,
    DeviceConfig,
    Group,
    Storage,
    VolumeStorage,
)
from pvinit.state.paths import check_key
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, TypeAlias

__all__ = [
    "BSP_DIR",
    "BSP_RUN_KEY",
    "DEVICE_KEY",
    "RESERVED_CONTAINER_NAMES",
    "SPEC",
    "SPEC_KEY",
    "AutoRecovery",
    "Bsp",
    "Container",
    "DeviceConfig",
    "Entry",
    "Group",
    "State",
    "Storage",
    "VolumeStorage",
]

SPEC_KEY = "#spec"
SPEC = "pvinit-state@1"
DEVICE_KEY = "device.json"
BSP_DIR = "bsp"
BSP_RUN_KEY = "bsp/run.json"
RUN_JSON = "run.json"
RESERVED_CONTAINER_NAMES = frozenset({"bsp", "other"})

#: A value in a revision: an object id (str) or an inline JSON document (dict).
#: A string at run time: only annotations use it (and ``Any`` is not imported then).
Entry: TypeAlias = "str | dict[str, Any]"


def _entry_where(where: str, key: str) -> str:
    return f"{where}:{key}"


class State:
    """One validated state revision.  Build it with :meth:`from_dict` or :meth:`from_bytes`.

    Equality and hashing go by :attr:`digest`, i.e. by canonical bytes: ``2``
    and ``2.0`` are different revisions even though Python says ``2 == 2.0``.
    """

    __slots__ = (
        "_bsp",
        "_canonical",
        "_containers",
        "_device",
        "_documents",
        "_entries",
        "_objects",
        "_top",
        "where",
    )

    def __init__(
        self,
        *,
        entries: dict[str, Entry],
        device: DeviceConfig,
        bsp: Bsp | None,
        containers: dict[str, Container],
        top: dict[str, list[str]],
        where: str,
    ) -> None:
        """Private: use :meth:`from_dict`, which validates."""
        self._entries = entries
        self._objects: dict[str, str] = {}
        self._documents: dict[str, dict[str, Any]] = {}
        for key, value in entries.items():
            if key == SPEC_KEY:
                continue
            if isinstance(value, dict):
                self._documents[key] = value
            else:
                self._objects[key] = value
        self._device = device
        self._bsp = bsp
        self._containers = containers
        self._top = top
        self._canonical: bytes | None = None
        self.where = where

    # -- construction ---------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "state.json") -> State:
        """Parse JSON bytes (strictly: no duplicate keys, no NaN) and validate them."""
        return cls.from_dict(parse_json(data, where=where), where=where)

    @classmethod
    def from_dict(cls, d: object, *, where: str = "state.json") -> State:
        """Validate a revision given as a dict; the input is copied, never kept or changed."""
        if not isinstance(d, Mapping):
            raise InvalidStateError(
                f"a revision must be a JSON object, got {kind_of(d)}", where=where
            )
        entries: dict[str, Entry] = {}
        top: dict[str, list[str]] = {}
        for key in sorted(d, key=lambda k: (not isinstance(k, str), str(k))):
            value = d[key]
            if key == SPEC_KEY:
                if value != SPEC or not isinstance(value, str):
                    raise InvalidStateError(
                        f"unknown format {value!r}, this pvinit reads {SPEC!r}",
                        where=_entry_where(where, SPEC_KEY),
                    )
                entries[key] = value
                continue
            at = _entry_where(where, key if isinstance(key, str) else repr(key))
            check_key(key, where=at)
            if key.endswith(".json"):
                if not isinstance(value, dict):
                    raise InvalidStateError(
                        f"a .json key holds an inline JSON object, got {kind_of(value)}", where=at
                    )
                check_json_value(value, where=at)
                entries[key] = json_copy(value)
            else:
                if not isinstance(value, str):
                    raise InvalidStateError(
                        f"holds an object id (text), got {kind_of(value)}",
                        where=at,
                        hint="only keys ending in .json hold inline documents",
                    )
                entries[key] = check_object_id(value, where=at)
            head, sep, _ = key.partition("/")
            if sep:
                top.setdefault(head, []).append(key)
        if SPEC_KEY not in entries:
            raise InvalidStateError(
                f'missing; a revision starts with "#spec": {SPEC!r}',
                where=_entry_where(where, SPEC_KEY),
            )
        _check_files_are_not_directories(entries, where)
        device = _device_of(entries, where)
        bsp = _bsp_of(entries, top, where)
        containers = _containers_of(entries, top, device, where)
        return cls(
            entries=entries, device=device, bsp=bsp, containers=containers, top=top, where=where
        )

    def with_entries(
        self, updates: Mapping[str, Entry] | None = None, removals: Iterable[str] = ()
    ) -> State:
        """A new, validated State with ``updates`` set and ``removals`` removed.

        Removing a key that is not there raises NotFoundError, and a key may
        not be both updated and removed: an editing tool that asks for either
        has a bug worth hearing about.
        """
        updates = dict(updates or {})
        entries: dict[str, Any] = dict(self._entries)
        for key in removals:
            if key in updates:
                raise InvalidStateError(
                    "is both updated and removed", where=_entry_where(self.where, key)
                )
            if key not in entries:
                raise NotFoundError("no such key to remove", where=_entry_where(self.where, key))
            del entries[key]
        entries.update(updates)
        return State.from_dict(entries, where=self.where)

    # -- raw views --------------------------------------------------------

    @property
    def spec(self) -> str:
        return SPEC  # from_dict accepts no other

    @property
    def entries(self) -> Mapping[str, Entry]:
        """Every key, ``#spec`` included, in sorted order, as given."""
        return MappingProxyType(self._entries)

    @property
    def objects(self) -> Mapping[str, str]:
        """Key -> object id, for every key that is not an inline document."""
        return MappingProxyType(self._objects)

    @property
    def documents(self) -> Mapping[str, dict[str, Any]]:
        """Key -> inline JSON document, for every ``*.json`` key."""
        return MappingProxyType(self._documents)

    def object_ids(self) -> frozenset[str]:
        """Every object this revision needs in the store."""
        return frozenset(self._objects.values())

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the revision, equal to the dict it was built from."""
        return json_copy(self._entries)

    def canonical_bytes(self) -> bytes:
        """The bytes that are hashed, signed and stored as ``state.json``."""
        if self._canonical is None:
            self._canonical = canonical_bytes(self._entries, where=self.where)
        return self._canonical

    @property
    def digest(self) -> str:
        """SHA256 hex of :meth:`canonical_bytes`: the revision's identity."""
        return metadata_sha256(self.canonical_bytes())

    # -- typed views ------------------------------------------------------

    @property
    def device(self) -> DeviceConfig:
        return self._device

    @property
    def bsp(self) -> Bsp | None:
        return self._bsp

    @property
    def containers(self) -> Mapping[str, Container]:
        """Container name -> Container, sorted by name."""
        return MappingProxyType(self._containers)

    def container_keys(self, name: str) -> list[str]:
        """Every key of container ``name`` (``run.json`` included), sorted."""
        if name not in self._containers:
            raise NotFoundError(f"no container {name!r} in this revision", where=self.where)
        return sorted(self._top.get(name, ()))

    def keys_under(self, directory: str) -> list[str]:
        """Every key inside a top-level directory (``bsp``, a container, other), sorted."""
        return sorted(self._top.get(directory, ()))

    def group_of(self, name: str) -> Group:
        """The group of container ``name``."""
        container = self._containers.get(name)
        if container is None:
            raise NotFoundError(f"no container {name!r} in this revision", where=self.where)
        group = self._device.group(container.group)
        if group is None:  # from_dict refuses this; kept as a guard for mypy
            raise NotFoundError(f"no group {container.group!r}", where=self.where)
        return group

    def restart_policy_of(self, name: str) -> str:
        """The container's own restart policy, else its group's."""
        return self._containers[name].restart_policy or self.group_of(name).restart_policy

    def status_goal_of(self, name: str) -> str:
        """The container's own status goal, else its group's."""
        return self._containers[name].status_goal or self.group_of(name).status_goal

    # -- identity ---------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return self.canonical_bytes() == other.canonical_bytes()

    def __hash__(self) -> int:
        return hash(self.canonical_bytes())

    def __repr__(self) -> str:
        return f"<State {self.digest[:12]} {len(self._entries)} keys>"


# -- validation across the revision --------------------------------------------


def _check_files_are_not_directories(entries: Mapping[str, Entry], where: str) -> None:
    directories: set[str] = set()
    for key in entries:
        parts = key.split("/")
        for end in range(1, len(parts)):
            directories.add("/".join(parts[:end]))
    for key in sorted(directories.intersection(entries)):
        raise InvalidStateError(
            "is a file and also a directory of other keys", where=_entry_where(where, key)
        )


def _device_of(entries: Mapping[str, Entry], where: str) -> DeviceConfig:
    at = _entry_where(where, DEVICE_KEY)
    raw = entries.get(DEVICE_KEY)
    if raw is None:
        raise InvalidStateError(
            "missing: every revision needs device.json with its boot groups", where=at
        )
    return DeviceConfig.from_dict(raw, where=at)


def _check_object_key(entries: Mapping[str, Entry], key: str, *, where: str, named_in: str) -> None:
    """``key`` (built from a document field) must be a valid key naming an object."""
    check_key(key, where=where)
    value = entries.get(key)
    if value is None:
        raise InvalidStateError(f"names {key!r}, which is not in the revision", where=where)
    if not isinstance(value, str):
        raise InvalidStateError(
            f"names {key!r}, an inline document; {named_in} must name an object", where=where
        )


def _bsp_of(entries: Mapping[str, Entry], top: Mapping[str, list[str]], where: str) -> Bsp | None:
    at = _entry_where(where, BSP_RUN_KEY)
    raw = entries.get(BSP_RUN_KEY)
    if raw is None:
        if top.get(BSP_DIR):
            raise InvalidStateError(
                "missing, but there are files under bsp/ it would describe", where=at
            )
        return None
    bsp = Bsp.from_dict(raw, where=at)
    for role, path in bsp.files().items():
        _check_object_key(
            entries, f"{BSP_DIR}/{path}", where=field_where(at, role), named_in="a BSP file"
        )
    return bsp


def _containers_of(
    entries: Mapping[str, Entry],
    top: Mapping[str, list[str]],
    device: DeviceConfig,
    where: str,
) -> dict[str, Container]:
    containers: dict[str, Container] = {}
    for directory in sorted(top):
        run_key = f"{directory}/{RUN_JSON}"
        if directory == BSP_DIR or run_key not in entries:
            continue
        at = _entry_where(where, run_key)
        if not NAME_RE.fullmatch(directory) or directory in RESERVED_CONTAINER_NAMES:
            raise InvalidStateError(
                f"{directory!r} cannot be a container name "
                "(letters, digits, '_', '.', '-'; at most 64; not 'bsp' or 'other')",
                where=at,
            )
        container = Container.from_dict(entries[run_key], where=at)
        if container.name != directory:
            raise InvalidStateError(
                f"name {container.name!r} differs from its directory {directory!r}",
                where=field_where(at, "name"),
            )
        if device.group(container.group) is None:
            known = ", ".join(g.name for g in device.groups)
            raise InvalidStateError(
                f"group {container.group!r} is not in device.json (groups: {known})",
                where=field_where(at, "group"),
            )
        _check_object_key(
            entries,
            f"{directory}/{container.root_volume}",
            where=field_where(at, "root-volume"),
            named_in="root-volume",
        )
        for index, volume in enumerate(container.volumes):
            _check_object_key(
                entries,
                f"{directory}/{volume}",
                where=f"{field_where(at, 'volumes')}[{index}]",
                named_in="a volume",
            )
        containers[directory] = container
    return containers

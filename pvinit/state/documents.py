"""Typed views of a revision's inline documents: device.json, bsp/run.json, <name>/run.json.

Each class checks what it can see inside its own document (types, enum values,
ranges); checks that need the whole revision (does ``root-volume`` exist, is
the group known) belong to :class:`pvinit.state.model.State`.

Read-then-write is exact: fields this version does not know are kept in
``extra``; an optional field is written back when it was present in the input
(``given``) or when its value differs from the default, so ``to_dict()`` of a
parsed document equals the input and a document built in code does not grow
default fields.  ``given`` does not take part in equality: two documents that
mean the same thing compare equal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pvinit.errors import InvalidStateError
from pvinit.record import field, record
from pvinit.state._fields import NAME_RE, FieldReader, frozen_copy, item_where, put
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

STATUS_GOALS = frozenset({"MOUNTED", "STARTED", "READY"})
RESTART_POLICIES = frozenset({"system", "container"})
PERSISTENCE = frozenset({"permanent", "revision", "boot"})
RECOVERY_POLICIES = frozenset({"no", "on-failure", "always"})
CONTAINER_TYPES = frozenset({"lxc"})

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: A user or group name in ``user``: the conservative POSIX portable set useradd
#: accepts (no leading digit or '-', at most 32 characters, optional trailing '$').
USER_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,30}[A-Za-z0-9_.$-]?")
#: Numeric ids in ``user``: 0 .. 2**32-2 (2**32-1 is the kernel's "no id").
MAX_ID = 2**32 - 2


def split_user(value: str) -> tuple[str, str | None]:
    """Split run.json ``user`` (``uid``, ``uid:gid``, ``name``, ``name:group``...) in two.

    Each part is a decimal id (0 .. ``MAX_ID``) or a name matching
    ``USER_NAME_RE``; ids and names may be mixed (``name:gid``, ``uid:group``),
    as Docker and runc allow.  Raises ValueError saying what is wrong.
    """
    user, sep, group = value.partition(":")
    parts = [("user", user)] + ([("group", group)] if sep else [])
    for label, part in parts:
        if part.isascii() and part.isdigit():
            if int(part) > MAX_ID:
                raise ValueError(f"{label} id {part} is out of range (0..{MAX_ID})")
        elif not USER_NAME_RE.fullmatch(part):
            raise ValueError(
                f"{value!r} is not uid, uid:gid, name or name:group ({label} {part!r} is "
                "neither a decimal id nor a name of letters, digits, '_', '.', '-', at most 32)"
            )
    return user, (group if sep else None)


def _given_field() -> Any:
    """The ``given`` field: which optional fields the input had (not part of equality)."""
    return field(default=frozenset(), compare=False, repr=False)


def _storage_from(reader: FieldReader, name: str) -> dict[str, VolumeStorage]:
    raw = reader.obj(name)
    if raw is None:
        return {}
    where = reader.at(name)
    result: dict[str, VolumeStorage] = {}
    for volume, spec in raw.items():
        at = item_where(where, volume)
        if not NAME_RE.fullmatch(volume):
            raise InvalidStateError(f"{volume!r} is not a valid volume name", where=at)
        result[volume] = VolumeStorage.from_dict(spec, where=at)
    return result


@record(frozen=True, kw_only=True)
class VolumeStorage:
    """Where a volume's writable data lives and how long it survives.

    ``permanent``: kept across revisions (``disks/perm``); ``revision``: one
    copy per revision (``disks/rev/<rev>``), so a rollback gets the old data
    back; ``boot``: wiped at every boot.
    """

    persistence: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: object, *, where: str) -> VolumeStorage:
        reader = FieldReader(d, where, "a volume's storage")
        persistence = reader.text("persistence", choices=PERSISTENCE)
        return cls(persistence=persistence, extra=reader.extra())

    def to_dict(self) -> dict[str, Any]:
        out = frozen_copy(self.extra)
        out["persistence"] = self.persistence
        return out


#: The spelling the design uses for a volume's storage settings.
Storage = VolumeStorage


@record(frozen=True, kw_only=True)
class AutoRecovery:
    """How a failed container is restarted: ``retry_delay * backoff_factor**n`` seconds,
    at most ``max_retries`` times; a container that stays up ``stable_timeout``
    seconds counts as recovered and its retry count starts again.
    """

    policy: str
    max_retries: int = 5
    retry_delay: int | float = 1
    backoff_factor: int | float = 2.0
    stable_timeout: int | float = 30
    extra: Mapping[str, Any] = field(default_factory=dict)
    given: frozenset[str] = _given_field()

    @classmethod
    def from_dict(cls, d: object, *, where: str) -> AutoRecovery:
        r = FieldReader(d, where, "auto_recovery")
        return cls(
            policy=r.text("policy", choices=RECOVERY_POLICIES),
            max_retries=r.integer("max_retries", minimum=0, default=cls.max_retries),
            retry_delay=r.number("retry_delay", minimum=0, default=cls.retry_delay),
            backoff_factor=r.number("backoff_factor", minimum=1, default=cls.backoff_factor),
            stable_timeout=r.number("stable_timeout", minimum=0, default=cls.stable_timeout),
            extra=r.extra(),
            given=r.given(),
        )

    def to_dict(self) -> dict[str, Any]:
        out = frozen_copy(self.extra)
        out["policy"] = self.policy
        put(out, "max_retries", self.max_retries, 5, self.given)
        put(out, "retry_delay", self.retry_delay, 1, self.given)
        put(out, "backoff_factor", self.backoff_factor, 2.0, self.given)
        put(out, "stable_timeout", self.stable_timeout, 30, self.given)
        return out


@record(frozen=True, kw_only=True)
class Group:
    """A boot stage: its containers start only once every earlier group reached its goal.

    ``status_goal`` and ``restart_policy`` are the defaults of the group's
    containers; ``timeout`` is the seconds the group may take to reach its goal.
    """

    name: str
    status_goal: str
    restart_policy: str
    timeout: int | float
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: object, *, where: str) -> Group:
        r = FieldReader(d, where, "a group")
        return cls(
            name=r.text("name", pattern=NAME_RE),
            status_goal=r.text("status_goal", choices=STATUS_GOALS),
            restart_policy=r.text("restart_policy", choices=RESTART_POLICIES),
            timeout=r.number("timeout", minimum=0),
            extra=r.extra(),
        )

    def to_dict(self) -> dict[str, Any]:
        out = frozen_copy(self.extra)
        out.update(
            name=self.name,
            status_goal=self.status_goal,
            restart_policy=self.restart_policy,
            timeout=self.timeout,
        )
        return out


@record(frozen=True, kw_only=True)
class DeviceConfig:
    """``device.json``: the boot groups in order, and device-wide volumes."""

    groups: tuple[Group, ...]
    volumes: Mapping[str, VolumeStorage] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    given: frozenset[str] = _given_field()

    @classmethod
    def from_dict(cls, d: object, *, where: str) -> DeviceConfig:
        r = FieldReader(d, where, "device.json")
        raw_groups = r.take("groups", required=True)
        at = r.at("groups")
        if not isinstance(raw_groups, list) or not raw_groups:
            raise InvalidStateError("must be a non-empty list of groups", where=at)
        groups: list[Group] = []
        seen: set[str] = set()
        for index, raw in enumerate(raw_groups):
            group = Group.from_dict(raw, where=item_where(at, index))
            if group.name in seen:
                raise InvalidStateError(
                    f"group {group.name!r} is defined twice", where=item_where(at, index)
                )
            seen.add(group.name)
            groups.append(group)
        volumes = _storage_from(r, "volumes")
        return cls(groups=tuple(groups), volumes=volumes, extra=r.extra(), given=r.given())

    def group(self, name: str) -> Group | None:
        for group in self.groups:
            if group.name == name:
                return group
        return None

    def to_dict(self) -> dict[str, Any]:
        out = frozen_copy(self.extra)
        out["groups"] = [g.to_dict() for g in self.groups]
        volumes = {k: v.to_dict() for k, v in self.volumes.items()}
        put(out, "volumes", volumes, {}, self.given)
        return out


@record(frozen=True, kw_only=True)
class Bsp:
    """``bsp/run.json``: which files under ``bsp/`` are the kernel, initrd, modules...

    Every value is a path relative to ``bsp/`` naming an object in the revision.
    """

    linux: str
    initrd: str | None = None
    modules: str | None = None
    firmware: str | None = None
    dtb: str | None = None
    fdt: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    ROLES = ("linux", "initrd", "modules", "firmware", "dtb", "fdt")

    @classmethod
    def from_dict(cls, d: object, *, where: str) -> Bsp:
        r = FieldReader(d, where, "bsp/run.json")
        return cls(
            linux=r.text("linux"),
            initrd=r.opt_text("initrd"),
            modules=r.opt_text("modules"),
            firmware=r.opt_text("firmware"),
            dtb=r.opt_text("dtb"),
            fdt=r.opt_text("fdt"),
            extra=r.extra(),
        )

    def files(self) -> dict[str, str]:
        """Role -> path relative to ``bsp/``, for the roles that are set."""
        named = {role: getattr(self, role) for role in self.ROLES}
        return {role: path for role, path in named.items() if path is not None}

    def to_dict(self) -> dict[str, Any]:
        out = frozen_copy(self.extra)
        out.update(self.files())
        return out


@record(frozen=True, kw_only=True)
class Container:
    """``<name>/run.json``: one LXC system container of the revision.

    ``status_goal`` / ``restart_policy`` None means "the group's" (see
    :meth:`pvinit.state.model.State.status_goal_of`).  ``root_volume`` and
    ``volumes`` are paths relative to the container's directory.  An empty
    ``init`` means the image's own ``/sbin/init``.  ``cwd`` is the init's
    working directory (absolute, inside the container; None: ``/``) and
    ``user`` who it runs as (see :func:`split_user`; None: root), both
    resolved by the supervisor against the container's own root
    (:mod:`pvinit.containers.users`).  ``logs`` is kept as the raw object
    until the log collector defines its fields.
    """

    name: str
    root_volume: str
    group: str
    type: str = "lxc"
    volumes: tuple[str, ...] = ()
    storage: Mapping[str, VolumeStorage] = field(default_factory=dict)
    status_goal: str | None = None
    restart_policy: str | None = None
    auto_recovery: AutoRecovery | None = None
    init: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    lxc: Mapping[str, str] = field(default_factory=dict)
    logs: Mapping[str, Any] | None = None
    roles: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    given: frozenset[str] = _given_field()

    @classmethod
    def from_dict(cls, d: object, *, where: str) -> Container:
        r = FieldReader(d, where, "a container's run.json")
        name = r.text("name", pattern=NAME_RE)
        type_ = r.opt_text("type", choices=CONTAINER_TYPES) or "lxc"
        root_volume = r.text("root-volume")
        volumes = r.text_list("volumes")
        storage = _storage_from(r, "storage")
        group = r.text("group", pattern=NAME_RE)
        status_goal = r.opt_text("status_goal", choices=STATUS_GOALS)
        restart_policy = r.opt_text("restart_policy", choices=RESTART_POLICIES)
        raw_recovery = r.obj("auto_recovery")
        auto_recovery = (
            None
            if raw_recovery is None
            else AutoRecovery.from_dict(raw_recovery, where=r.at("auto_recovery"))
        )
        init = r.text_list("init", nonempty_if_given=True)
        if init and not init[0].startswith("/"):
            raise InvalidStateError(
                f"the program {init[0]!r} must be an absolute path",
                where=item_where(r.at("init"), 0),
            )
        env = r.text_map("env")
        for key, value in env.items():
            if not _ENV_NAME.fullmatch(key) or "\x00" in value:
                raise InvalidStateError(
                    "not a valid environment variable (NAME: letters, digits, '_'; no NUL)",
                    where=item_where(r.at("env"), key),
                )
        cwd = r.opt_text("cwd")
        if cwd is not None and (
            not cwd.startswith("/") or any(ch in cwd for ch in "\x00\n\r") or cwd != cwd.rstrip()
        ):
            raise InvalidStateError(
                f"{cwd!r} is not an absolute path (starting with '/'; no NUL, newline or "
                "trailing blank, which liblxc would strip)",
                where=r.at("cwd"),
            )
        user = r.opt_text("user")
        if user is not None:
            try:
                split_user(user)
            except ValueError as error:
                raise InvalidStateError(str(error), where=r.at("user")) from None
        lxc = r.text_map("lxc")
        for key, value in lxc.items():
            if not key.startswith("lxc.") or "\n" in key or "\n" in value or "\x00" in value:
                raise InvalidStateError(
                    "LXC keys start with 'lxc.'; keys and values are one line without NUL",
                    where=item_where(r.at("lxc"), key),
                )
        logs = r.obj("logs")
        roles = r.text_list("roles")
        if len(set(roles)) != len(roles):
            raise InvalidStateError("a role is listed twice", where=r.at("roles"))
        return cls(
            name=name,
            type=type_,
            root_volume=root_volume,
            volumes=volumes,
            storage=storage,
            group=group,
            status_goal=status_goal,
            restart_policy=restart_policy,
            auto_recovery=auto_recovery,
            init=init,
            env=env,
            cwd=cwd,
            user=user,
            lxc=lxc,
            logs=logs,
            roles=roles,
            extra=r.extra(),
            given=r.given(),
        )

    def volume_paths(self) -> tuple[str, ...]:
        """The root volume then the extra volumes, relative to the container's directory."""
        return (self.root_volume, *self.volumes)

    def to_dict(self) -> dict[str, Any]:
        out = frozen_copy(self.extra)
        out["name"] = self.name
        put(out, "type", self.type, "lxc", self.given)
        out["root-volume"] = self.root_volume
        put(out, "volumes", list(self.volumes), [], self.given)
        put(out, "storage", {k: v.to_dict() for k, v in self.storage.items()}, {}, self.given)
        out["group"] = self.group
        put(out, "status_goal", self.status_goal, None, self.given)
        put(out, "restart_policy", self.restart_policy, None, self.given)
        if self.auto_recovery is not None:
            out["auto_recovery"] = self.auto_recovery.to_dict()
        put(out, "init", list(self.init), [], self.given)
        put(out, "env", dict(self.env), {}, self.given)
        put(out, "cwd", self.cwd, None, self.given)
        put(out, "user", self.user, None, self.given)
        put(out, "lxc", dict(self.lxc), {}, self.given)
        if self.logs is not None:
            out["logs"] = frozen_copy(self.logs)
        put(out, "roles", list(self.roles), [], self.given)
        return out

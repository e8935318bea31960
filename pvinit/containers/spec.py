"""What the supervisor asks the container layer to run, decoupled from the state model.

The state model (``pvinit.state.model.Container``) speaks in revisions, volumes
and persistence; the driver speaks in mounted paths and liblxc keys.  A
:class:`ContainerSpec` is the hand-over between the two: everything already
resolved to host paths, so the driver never needs to know what a revision is.
Specs validate themselves on construction, so a bad one never reaches liblxc.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from pvinit.errors import BadInputError
from pvinit.record import field, record
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

#: Names become directory names under lxcpath and the UTS hostname: keep them boring.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Largest usable uid/gid: 2**32-1 is the kernel's "no id".
MAX_ID = 2**32 - 2

#: Where a container finds its notify socket (``notify_dir`` is bind-mounted here).
NOTIFY_MOUNT = "/run/pvinit"
NOTIFY_SOCKET_NAME = "notify"


class RuntimeStatus(enum.StrEnum):
    """What the container layer knows about a container's life.

    STARTING: started, not yet RUNNING; RUNNING: its init runs; READY: it sent
    ``READY=1``; EXITED: its init ended with status 0; FAILED: it ended with a
    non-zero status or could not start at all.
    """

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    READY = "READY"
    EXITED = "EXITED"
    FAILED = "FAILED"


def check_container_name(name: str) -> str:
    """Return ``name`` if it is a usable container name, else raise BadInputError."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None or name in {".", ".."}:
        raise BadInputError(
            "container name must be 1-64 characters of letters, digits, '_', '.', '-'",
            where=repr(name),
        )
    return name


def _check_text(value: str, what: str, where: str) -> None:
    if "\n" in value or "\r" in value or "\0" in value:
        raise BadInputError(f"{what} may not contain newlines or NUL", where=where)


@record(frozen=True)
class BindMount:
    """A host path made visible inside the container.

    ``target`` is the path inside the container (absolute, no ``..``).
    ``optional`` lets the container start when ``source`` is missing.
    ``kind`` says whether the mount point to create is a directory or a file.
    """

    source: Path
    target: str
    readonly: bool = False
    optional: bool = False
    kind: str = "dir"

    def __post_init__(self) -> None:
        where = f"mount {self.target!r}"
        object.__setattr__(self, "source", Path(self.source))
        if not self.source.is_absolute():
            raise BadInputError("bind mount source must be an absolute host path", where=where)
        target = PurePosixPath(self.target)
        if not target.is_absolute() or ".." in target.parts or str(target) == "/":
            raise BadInputError(
                "bind mount target must be an absolute path inside the container, not / "
                "and without '..'",
                where=where,
            )
        if self.kind not in {"dir", "file"}:
            raise BadInputError("bind mount kind must be 'dir' or 'file'", where=where)
        _check_text(str(self.source), "bind mount source", where)
        _check_text(self.target, "bind mount target", where)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BindMount:
        try:
            return cls(
                source=Path(data["source"]),
                target=str(data["target"]),
                readonly=bool(data.get("readonly", False)),
                optional=bool(data.get("optional", False)),
                kind=str(data.get("kind", "dir")),
            )
        except KeyError as exc:
            raise BadInputError(f"bind mount is missing {exc.args[0]!r}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "target": self.target,
            "readonly": self.readonly,
            "optional": self.optional,
            "kind": self.kind,
        }


@record(frozen=True)
class ContainerSpec:
    """Everything needed to run one container, resolved to host paths.

    ``rootfs`` is the already-mounted root (an overlay over the squashfs
    volume).  ``lxc_keys`` are extra liblxc keys from run.json, applied after
    the generated ones so they may override them (memory limits live there).
    ``notify_dir`` is a host directory holding the container's ``notify``
    socket; it is bind-mounted at ``/run/pvinit`` and ``NOTIFY_SOCKET`` points
    at it.  ``console_log`` is where the console output goes; liblxc's own log
    is written beside it (``lxc.log``).

    ``cwd`` is the init's working directory inside the container (None: ``/``);
    ``uid``/``gid``/``groups`` are already-resolved numeric ids the init runs
    as (None: root, no supplementary groups); names are resolved by the caller
    (:mod:`pvinit.containers.users`), never here.
    """

    name: str
    rootfs: Path
    init: tuple[str, ...]
    console_log: Path
    env: Mapping[str, str] = field(default_factory=dict)
    lxc_keys: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[BindMount, ...] = ()
    log_size_bytes: int = 1 << 20
    notify_dir: Path | None = None
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_container_name(self.name)
        where = self.name
        object.__setattr__(self, "rootfs", Path(self.rootfs))
        object.__setattr__(self, "console_log", Path(self.console_log))
        object.__setattr__(self, "init", tuple(self.init))
        object.__setattr__(self, "mounts", tuple(self.mounts))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "lxc_keys", MappingProxyType(dict(self.lxc_keys)))
        if self.notify_dir is not None:
            object.__setattr__(self, "notify_dir", Path(self.notify_dir))
        for label, path in (("rootfs", self.rootfs), ("console_log", self.console_log)):
            if not path.is_absolute():
                raise BadInputError(f"{label} must be an absolute path", where=where)
            _check_text(str(path), label, where)
        if self.console_log.name == "lxc.log":
            raise BadInputError("console_log may not be named lxc.log (liblxc's log)", where=where)
        if self.notify_dir is not None and not self.notify_dir.is_absolute():
            raise BadInputError("notify_dir must be an absolute path", where=where)
        if not self.init or not self.init[0].startswith("/"):
            raise BadInputError(
                "init must be a non-empty argv whose first element is an absolute path",
                where=f"{where}: init",
            )
        for key, value in self.env.items():
            if not isinstance(key, str) or _ENV_KEY.fullmatch(key) is None:
                raise BadInputError(
                    "environment variable name is not valid", where=f"{where}: env {key!r}"
                )
            if not isinstance(value, str):
                raise BadInputError(
                    "environment value must be a string", where=f"{where}: env {key}"
                )
            _check_text(value, "environment value", f"{where}: env {key}")
        if not isinstance(self.log_size_bytes, int) or self.log_size_bytes < 4096:
            raise BadInputError("log_size_bytes must be an integer of at least 4096", where=where)
        self._check_process(where)

    def _check_process(self, where: str) -> None:
        """The init's working directory and ids must be what liblxc can carry."""
        object.__setattr__(self, "groups", tuple(self.groups))
        if self.cwd is not None:
            if not isinstance(self.cwd, str) or not self.cwd.startswith("/"):
                raise BadInputError("cwd must be an absolute path", where=f"{where}: cwd")
            _check_text(self.cwd, "cwd", f"{where}: cwd")
            if self.cwd != self.cwd.strip():
                raise BadInputError(
                    "cwd may not end with blanks, which liblxc strips", where=f"{where}: cwd"
                )
        if (self.uid is None) != (self.gid is None):
            raise BadInputError("uid and gid are given together or not at all", where=where)
        if self.uid is None and self.groups:
            raise BadInputError("supplementary groups need a uid and gid", where=where)
        ids = [("uid", self.uid), ("gid", self.gid), *(("groups", g) for g in self.groups)]
        for label, value in ids:
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
                raise BadInputError(
                    f"{label} must be an integer id in 0..{MAX_ID}, got {value!r}",
                    where=f"{where}: {label}",
                )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContainerSpec:
        try:
            notify = data.get("notify_dir")
            return cls(
                name=str(data["name"]),
                rootfs=Path(data["rootfs"]),
                init=tuple(str(arg) for arg in data["init"]),
                console_log=Path(data["console_log"]),
                env=dict(data.get("env", {})),
                lxc_keys=dict(data.get("lxc_keys", {})),
                mounts=tuple(BindMount.from_dict(m) for m in data.get("mounts", ())),
                log_size_bytes=int(data.get("log_size_bytes", 1 << 20)),
                notify_dir=Path(notify) if notify is not None else None,
                cwd=data.get("cwd"),
                uid=data.get("uid"),
                gid=data.get("gid"),
                groups=tuple(data.get("groups", ())),
            )
        except KeyError as exc:
            raise BadInputError(f"container spec is missing {exc.args[0]!r}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rootfs": str(self.rootfs),
            "init": list(self.init),
            "console_log": str(self.console_log),
            "env": dict(self.env),
            "lxc_keys": dict(self.lxc_keys),
            "mounts": [m.to_dict() for m in self.mounts],
            "log_size_bytes": self.log_size_bytes,
            "notify_dir": str(self.notify_dir) if self.notify_dir is not None else None,
            "cwd": self.cwd,
            "uid": self.uid,
            "gid": self.gid,
            "groups": list(self.groups),
        }

    @property
    def lxc_log(self) -> Path:
        """liblxc's own log for this container, beside the console log."""
        return self.console_log.with_name("lxc.log")

    @property
    def notify_socket(self) -> Path | None:
        """Host path of the notify socket, when the container has one."""
        return self.notify_dir / NOTIFY_SOCKET_NAME if self.notify_dir is not None else None

"""Mapping an image config onto a container's run.json.

=================  =========================================================
image config       run.json
=================  =========================================================
Entrypoint + Cmd   ``init`` - argv[0] made absolute: a bare name is looked up
                   in the image's PATH (or Docker's default PATH) inside the
                   unpacked rootfs, a relative path against WorkingDir, as
                   ``execvp`` in the container would; not found -> refused
Env                ``env`` - ``NAME=VALUE`` entries, PATH included
WorkingDir         ``cwd`` (absolute)
User               ``user`` (as given: ``name``, ``uid``, ``uid:gid``...)
=================  =========================================================

``cwd`` and ``user`` are typed, validated run.json fields
(:class:`pvinit.state.documents.Container`); the supervisor applies them as
Docker does: it creates ``cwd`` in the container's root if missing and sets
``lxc.init.cwd``, and resolves ``user`` against the image's own
``/etc/passwd`` and ``/etc/group`` to ``lxc.init.uid``/``gid``/``groups``
(:mod:`pvinit.containers.users`).  Symlinks are followed inside the rootfs
as a chroot would, never out of it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from pvinit.build.oci import ImageConfig
from pvinit.errors import BadInputError
from pvinit.record import record

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_SYMLINKS = 40


@record(frozen=True)
class RunFields:
    """What an image config says about running it, in run.json's terms.

    ``init`` is None when the image names no command; ``cwd`` and ``user``
    are empty when it sets none.
    """

    init: tuple[str, ...] | None
    env: Mapping[str, str]
    cwd: str
    user: str


def image_env(config: ImageConfig, *, where: str) -> dict[str, str]:
    """The config's ``Env`` list (``KEY=VALUE``) as a mapping; later entries win."""
    env: dict[str, str] = {}
    for i, item in enumerate(config.env):
        name, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.fullmatch(name) or "\x00" in value:
            raise BadInputError(f"Env entry {item!r} is not NAME=VALUE",
                                where=f"{where}: Env[{i}]")
        env[name] = value
    return env


def run_fields(config: ImageConfig, rootfs: Path, *, where: str) -> RunFields:
    """Map an image config onto run.json, resolving argv[0] inside ``rootfs``."""
    env = image_env(config, where=where)
    cwd = config.working_dir
    if cwd and not cwd.startswith("/"):
        raise BadInputError(f"WorkingDir {cwd!r} must be absolute", where=where)
    argv = config.entrypoint + config.cmd
    init = None
    if argv:
        program = resolve_program(rootfs, argv[0], env.get("PATH", DEFAULT_PATH), cwd or "/")
        if program is None:
            raise BadInputError(
                f"the image's command {argv[0]!r} is not an executable file in the image "
                f"(PATH={env.get('PATH', DEFAULT_PATH)})",
                where=where, hint="give the command with --init",
            )
        init = (program, *argv[1:])
    return RunFields(init=init, env=env, cwd=cwd, user=config.user)


def resolve_program(rootfs: Path, name: str, search_path: str, cwd: str) -> str | None:
    """The absolute in-image path that ``execve``/``execvp`` would run for ``name``."""
    if not name:
        return None
    if "/" in name:
        candidates = [name if name.startswith("/") else f"{cwd.rstrip('/')}/{name}"]
    else:
        candidates = [f"{d.rstrip('/')}/{name}" for d in search_path.split(":")
                      if d.startswith("/")]
    for candidate in candidates:
        found = lookup_in_root(rootfs, candidate)
        if found is not None:
            mode = os.lstat(rootfs / found).st_mode
            if mode & 0o111:
                return "/" + PurePosixPath(os.path.normpath(candidate)).as_posix().lstrip("/")
    return None


def lookup_in_root(rootfs: Path, path: str) -> PurePosixPath | None:
    """The regular file ``path`` names inside ``rootfs``, following symlinks as a chroot would.

    Never leaves ``rootfs``: absolute link targets restart from its root and
    ``..`` stops at it.  None when nothing (or no regular file) is there.
    """
    pending = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        current = rootfs.joinpath(*resolved, part)
        if not os.path.lexists(current):
            return None
        if current.is_symlink():
            links += 1
            if links > _MAX_SYMLINKS:
                return None
            target = str(current.readlink())
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
            continue
        if pending and not current.is_dir():
            return None
        resolved.append(part)
    if not resolved or not (rootfs.joinpath(*resolved)).is_file():
        return None
    return PurePosixPath(*resolved)

"""Who a container's init runs as: run.json ``user`` resolved against the container's own files.

Names are looked up in the container's ``/etc/passwd`` and ``/etc/group``
(read inside its mounted root with :mod:`pvinit.containers.inroot`), never
the host's: the image decides what ``nobody`` or ``app`` means.  The rules
are runc's (``libcontainer/user.GetExecUser``), which Docker and Podman
follow, so an OCI image runs as the same ids here as under ``docker run``:

* ``name``: the first passwd entry of that name gives uid and gid; no entry
  -> refused.
* ``uid``: the first passwd entry with that uid gives the gid; without one
  the uid is used as given with gid 0 (runc's default, not ``uid``).
* ``...:group``: the group part replaces the gid: a name must be in
  ``/etc/group``, an id is used as given.
* Supplementary groups: only without an explicit group, the groups whose
  member list names the matched user (runc; an explicit group means exactly
  that one group).  The init otherwise has none.

Parsing is forgiving as glibc's is: a malformed line (wrong field count, a
non-numeric or out-of-range id, ``+``/``-`` NIS lines, comments) is skipped,
never fatal, so one bad line in an image's passwd does not stop a container
whose user is on a good one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from pvinit.containers.inroot import read_in_root
from pvinit.errors import BadInputError, NotFoundError
from pvinit.record import record

#: Largest usable id: 2**32-1 is the kernel's "no id" ((uid_t)-1).
MAX_ID = 2**32 - 2


@record(frozen=True)
class PasswdEntry:
    """One ``/etc/passwd`` line: ``name:password:uid:gid:gecos:home:shell``."""

    name: str
    uid: int
    gid: int
    home: str = "/"


@record(frozen=True)
class GroupEntry:
    """One ``/etc/group`` line: ``name:password:gid:member,member...``."""

    name: str
    gid: int
    members: tuple[str, ...] = ()


@record(frozen=True)
class Identity:
    """Numeric ids for the init: ``uid``, primary ``gid``, supplementary ``groups``; ``home``.

    ``home`` is the matched passwd entry's directory, ``/`` without one (runc's
    default): it becomes ``HOME`` unless run.json's ``env`` sets it.
    """

    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    home: str = "/"


def parse_id(text: str) -> int | None:
    """A decimal id in 0..MAX_ID, or None when ``text`` is not one."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def _lines(text: str) -> Iterable[list[str]]:
    for line in text.splitlines():
        if not line or line.startswith(("#", "+", "-")):
            continue
        yield line.split(":")


def parse_passwd(text: str) -> list[PasswdEntry]:
    """The well-formed entries of a passwd file, in file order (bad lines skipped)."""
    entries = []
    for fields in _lines(text):
        if len(fields) != 7 or not fields[0]:
            continue
        uid, gid = parse_id(fields[2]), parse_id(fields[3])
        if uid is None or gid is None:
            continue
        entries.append(PasswdEntry(name=fields[0], uid=uid, gid=gid, home=fields[5] or "/"))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """The well-formed entries of a group file, in file order (bad lines skipped)."""
    entries = []
    for fields in _lines(text):
        if len(fields) != 4 or not fields[0]:
            continue
        gid = parse_id(fields[2])
        if gid is None:
            continue
        members = tuple(m for m in fields[3].split(",") if m)
        entries.append(GroupEntry(name=fields[0], gid=gid, members=members))
    return entries


def resolve_user(
    user: str,
    group: str | None,
    passwd: Sequence[PasswdEntry],
    groups: Sequence[GroupEntry],
    *,
    where: str,
) -> Identity:
    """Numeric ids for ``user[:group]`` (already split, see module rules).

    Raises NotFoundError naming ``where`` and the user or group when a name
    is in neither file.
    """
    uid = parse_id(user)
    matched: PasswdEntry | None = None
    for candidate in passwd:
        if (candidate.uid == uid) if uid is not None else (candidate.name == user):
            matched = candidate
            break
    if matched is None and uid is None:
        raise NotFoundError(f"user {user!r} is not in the container's /etc/passwd", where=where)
    if matched is not None:
        uid = matched.uid
    assert uid is not None  # a name that matched nothing was refused above
    home = matched.home if matched is not None else "/"
    if group is None:
        gid = matched.gid if matched is not None else 0
        extra: list[int] = []
        if matched is not None:
            for entry in groups:
                if matched.name in entry.members and entry.gid not in extra:
                    extra.append(entry.gid)
        return Identity(uid=uid, gid=gid, groups=tuple(extra), home=home)
    gid_given = parse_id(group)
    if gid_given is not None:
        return Identity(uid=uid, gid=gid_given, home=home)
    for entry in groups:
        if entry.name == group:
            return Identity(uid=uid, gid=entry.gid, home=home)
    raise NotFoundError(f"group {group!r} is not in the container's /etc/group", where=where)


def _read_text(root: Path, path: str, *, where: str) -> str:
    try:
        data = read_in_root(root, path)
    except OSError as error:
        raise BadInputError(
            f"cannot read the container's {path}: {error.strerror or error}", where=where
        ) from None
    return "" if data is None else data.decode("utf-8", errors="replace")


def resolve_in_root(root: Path, user: str, group: str | None, *, where: str) -> Identity:
    """Resolve ``user[:group]`` with the ``/etc/passwd`` and ``/etc/group`` inside ``root``.

    Missing files count as empty (numeric ids still work, names do not);
    ``/etc/group`` is only read when a group name or supplementary groups
    need it.
    """
    passwd = parse_passwd(_read_text(root, "/etc/passwd", where=where))
    needs_groups = group is None or parse_id(group) is None
    groups = parse_group(_read_text(root, "/etc/group", where=where)) if needs_groups else []
    return resolve_user(user, group, passwd, groups, where=where)


def home_in_root(root: Path, uid: int, *, where: str) -> str:
    """``HOME`` for a container without ``user`` (it runs as ``uid``, root): runc's rule.

    The first passwd entry with that uid gives the directory, ``/`` without
    one; only ``/etc/passwd`` is read.
    """
    for entry in parse_passwd(_read_text(root, "/etc/passwd", where=where)):
        if entry.uid == uid:
            return entry.home
    return "/"

"""Safe extraction of rootfs tarballs.

A container image arrives as a tar archive made by someone else; extracting
it must never write outside the destination, whatever the archive holds.
Python 3.11.2 (Debian 12) has no ``tarfile`` extraction filters, so the rules
are kept here, one entry at a time, by :func:`check_member`:

* a member's name is relative and normalised: no absolute names, no ``..``;
* nothing is written *through* a symlink: no parent of a member may be a
  symlink (already on disk or created earlier by the same archive);
* a symlink's target, read as the container will read it (absolute targets
  are relative to the container's root, as in a chroot), stays inside the
  root; a relative target that climbs above the root is refused;
* a hard link names a regular file inside the root, reached without symlinks;
* device nodes only when extracting as root (and when the caller allows them);
  FIFOs always; any other member type is refused.

:func:`extract_tar` checks the whole archive before writing anything, so a
hostile archive is refused with nothing changed on disk, then checks each
member again against the real tree just before writing it.  The check of one
member against a :class:`Tree` view is kept apart so that OCI layer
extraction (whiteouts over lower layers) can reuse it.

Files are written with ``O_NOFOLLOW | O_EXCL`` after removing whatever was at
their path, so even a tree changed behind our back cannot redirect a write.
The extracted tree is a build intermediate (its durable form is the squashfs
made from it), so files are not fsynced one by one.
"""

from __future__ import annotations

import contextlib
import enum
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from pvinit.errors import BadInputError, NotFoundError

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ROOT = PurePosixPath(".")


class EntryKind(enum.Enum):
    """What a path in a tree is, as far as extraction safety cares."""

    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"
    OTHER = "other"


class Tree(Protocol):
    """A view of a directory tree: what (if anything) is at a relative path."""

    def kind(self, path: PurePosixPath) -> EntryKind | None: ...


class DiskTree:
    """The tree on disk under ``root``, looked at with lstat (never following links)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def kind(self, path: PurePosixPath) -> EntryKind | None:
        try:
            mode = os.lstat(self.root / path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISDIR(mode):
            return EntryKind.DIR
        if stat.S_ISLNK(mode):
            return EntryKind.SYMLINK
        if stat.S_ISREG(mode):
            return EntryKind.FILE
        return EntryKind.OTHER


class PlannedTree:
    """A tree as it will be once the members seen so far are extracted over ``base``.

    Lets a whole archive be checked before anything is written.
    """

    def __init__(self, base: Tree) -> None:
        self.base = base
        self.planned: dict[PurePosixPath, EntryKind] = {}

    def kind(self, path: PurePosixPath) -> EntryKind | None:
        if path in self.planned:
            return self.planned[path]
        return self.base.kind(path)

    def add(self, path: PurePosixPath, kind: EntryKind) -> None:
        """Record that ``path`` will be ``kind`` (its missing parents become directories)."""
        for parent in path.parents:
            if parent != _ROOT and self.kind(parent) is None:
                self.planned[parent] = EntryKind.DIR
        self.planned[path] = kind


def member_kind(member: tarfile.TarInfo) -> EntryKind:
    """The kind of entry a tar member creates."""
    if member.isdir():
        return EntryKind.DIR
    if member.issym():
        return EntryKind.SYMLINK
    if member.isreg() or member.islnk():
        return EntryKind.FILE
    return EntryKind.OTHER


def archive_path(name: str, *, where: str) -> PurePosixPath:
    """A member or link name as a normalised relative path, or BadInputError.

    ``./a//b/`` becomes ``a/b``; ``.`` and ``./`` name the root itself.
    """
    if not name or "\x00" in name:
        raise BadInputError("empty name or NUL in name", where=where)
    if name.startswith("/"):
        raise BadInputError(f"absolute path {name!r} is not allowed", where=where)
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise BadInputError(f"path {name!r} contains '..'", where=where)
    return PurePosixPath(*parts) if parts else _ROOT


def symlink_target_inside(path: PurePosixPath, target: str) -> bool:
    """Whether a symlink at ``path`` pointing to ``target`` stays inside the root.

    Absolute targets are read as the container reads them: from its own root.
    """
    if not target or "\x00" in target:
        return False
    if target.startswith("/"):
        return True
    joined = posixpath.normpath(posixpath.join(str(path.parent), target))
    return joined != ".." and not joined.startswith("../")


def check_member(
    member: tarfile.TarInfo, tree: Tree, *, allow_devices: bool
) -> PurePosixPath:
    """Check one tar member against ``tree``; return its relative path.

    Raises BadInputError naming the member when extracting it could write
    outside the root, through a symlink, or create something not allowed.
    """
    where = f"tar member {member.name!r}"
    path = archive_path(member.name, where=where)
    kind = member_kind(member)
    if path == _ROOT:
        if kind is not EntryKind.DIR:
            raise BadInputError("the archive root may only be a directory", where=where)
        return path
    _check_parents(path, tree, where=where)
    existing = tree.kind(path)
    if existing is EntryKind.DIR and kind is not EntryKind.DIR:
        raise BadInputError(f"would replace the directory {str(path)!r}", where=where)

    if member.issym():
        if not symlink_target_inside(path, member.linkname):
            raise BadInputError(
                f"symlink to {member.linkname!r} points outside the root", where=where
            )
    elif member.islnk():
        target = archive_path(member.linkname, where=where)
        if target in (_ROOT, path):
            raise BadInputError(f"hard link to {member.linkname!r} is circular", where=where)
        _check_parents(target, tree, where=where)
        if tree.kind(target) is not EntryKind.FILE:
            raise BadInputError(
                f"hard link target {member.linkname!r} is not a regular file in the root",
                where=where,
            )
    elif member.ischr() or member.isblk():
        if not allow_devices:
            raise BadInputError(
                "device nodes are not allowed here", where=where,
                hint="extract as root to keep device nodes",
            )
    elif not (member.isreg() or member.isdir() or member.isfifo()):
        raise BadInputError(f"unsupported tar member type {member.type!r}", where=where)
    return path


def _check_parents(path: PurePosixPath, tree: Tree, *, where: str) -> None:
    """Refuse a path whose parent directories include a symlink or a non-directory."""
    for parent in reversed(path.parents):
        if parent == _ROOT:
            continue
        kind = tree.kind(parent)
        if kind is EntryKind.SYMLINK:
            raise BadInputError(f"would write through the symlink {str(parent)!r}", where=where)
        if kind is not None and kind is not EntryKind.DIR:
            raise BadInputError(f"parent {str(parent)!r} is not a directory", where=where)


def extract_tar(
    tar_path: Path, dest: Path, *, allow_devices: bool | None = None
) -> None:
    """Extract a plain, gzip, xz, bzip2 or zstd tar archive into ``dest``, safely.

    The whole archive is checked first (nothing is written when any member is
    refused), then extracted.  Owners are kept only when running as root.
    ``allow_devices`` defaults to "running as root".
    """
    tar_path = Path(tar_path)
    dest = Path(dest)
    if not tar_path.is_file():
        raise NotFoundError("archive does not exist", where=str(tar_path))
    if dest.exists() and not dest.is_dir():
        raise BadInputError("destination is not a directory", where=str(dest))
    as_root = os.geteuid() == 0
    devices = as_root if allow_devices is None else (allow_devices and as_root)

    planned = PlannedTree(DiskTree(dest))
    with _open_archive(tar_path) as archive:
        for member in archive:
            path = check_member(member, planned, allow_devices=devices)
            planned.add(path, member_kind(member))

    dest.mkdir(parents=True, exist_ok=True)
    disk = DiskTree(dest)
    directories: list[tuple[Path, tarfile.TarInfo]] = []
    with _open_archive(tar_path) as archive:
        for member in archive:
            path = check_member(member, disk, allow_devices=devices)
            write_member(archive, member, dest, path, as_root=as_root, directories=directories)
    finish_directories(directories, as_root=as_root)


def write_member(
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    dest: Path,
    path: PurePosixPath,
    *,
    as_root: bool,
    directories: list[tuple[Path, tarfile.TarInfo]],
) -> None:
    """Write one member that :func:`check_member` accepted (as ``path``) under ``dest``.

    Whatever non-directory was at the path is replaced; an existing directory
    is kept and merged into.  Directories are appended to ``directories`` so
    :func:`finish_directories` can set their modes and times once their
    entries are written.
    """
    if path == _ROOT:
        return
    target = dest / path
    _make_parents(dest, path)
    if member.isdir():
        if DiskTree(dest).kind(path) is not EntryKind.DIR:
            _remove(target)
            target.mkdir(mode=0o700)
        directories.append((target, member))
        return
    _remove(target)
    if member.isreg():
        _write_file(target, archive.extractfile(member), member, as_root=as_root)
    elif member.issym():
        target.symlink_to(member.linkname)
        _set_owner_and_time(target, member, as_root=as_root, is_link=True)
    elif member.islnk():
        os.link(dest / archive_path(member.linkname, where=member.name), target,
                follow_symlinks=False)
    else:
        _make_node(target, member)
        _set_owner_and_time(target, member, as_root=as_root, is_link=False)


def finish_directories(
    directories: list[tuple[Path, tarfile.TarInfo]], *, as_root: bool
) -> None:
    """Set directories' owners, modes and times, deepest (latest) first.

    Done last: a read-only mode or an mtime set earlier would be undone (or
    block) the writes of their entries.  A directory removed since (by a
    later OCI whiteout) is skipped; a directory listed twice (by two OCI
    layers) gets the metadata of its latest entry.
    """
    done: set[Path] = set()
    for target, member in reversed(directories):
        if target in done:
            continue
        done.add(target)
        if target.is_dir() and not target.is_symlink():
            _set_owner_and_time(target, member, as_root=as_root, is_link=False)


def check_removal(name: str, tree: Tree, *, where: str) -> PurePosixPath:
    """Check that removing ``name`` (an OCI whiteout's target) stays inside the root.

    The path must be relative, normalised and not the root, and none of its
    parents may be a symlink: removing ``link/x`` would delete outside the
    tree when ``link`` points away.
    """
    path = archive_path(name, where=where)
    if path == _ROOT:
        raise BadInputError("a whiteout may not remove the root", where=where)
    _check_parents(path, tree, where=where)
    return path


def remove_path(dest: Path, path: PurePosixPath) -> None:
    """Remove whatever is at ``path`` under ``dest`` (a directory with its contents).

    Only for a path :func:`check_removal` accepted against the tree on disk.
    """
    _remove(dest / path)


@contextlib.contextmanager
def _open_archive(tar_path: Path) -> Iterator[tarfile.TarFile]:
    """Open an archive for one streaming pass, whatever its compression."""
    with tar_path.open("rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        stream: IO[bytes] = raw
        format_errors: tuple[type[Exception], ...] = (tarfile.TarError, EOFError)
        if magic == _ZSTD_MAGIC:
            import zstandard  # only zstd archives need it

            stream = zstandard.ZstdDecompressor().stream_reader(raw)
            format_errors += (zstandard.ZstdError,)
        try:
            archive = tarfile.open(fileobj=stream, mode="r|*")  # noqa: SIM115 - closed below
        except format_errors as exc:
            raise BadInputError(f"not a tar archive: {exc}", where=str(tar_path)) from exc
        try:
            yield archive
        except format_errors as exc:
            raise BadInputError(f"damaged tar archive: {exc}", where=str(tar_path)) from exc
        finally:
            archive.close()


def _make_parents(dest: Path, path: PurePosixPath) -> None:
    """Create missing parents of ``path`` as plain directories (as tar does)."""
    current = dest
    for part in path.parts[:-1]:
        current = current / part
        if not current.is_dir():
            current.mkdir(mode=0o755)


def _remove(target: Path) -> None:
    """Remove a non-directory at ``target`` so a new entry never follows it."""
    with contextlib.suppress(FileNotFoundError):
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()


def _mode(member: tarfile.TarInfo, *, as_root: bool) -> int:
    return member.mode & (0o7777 if as_root else 0o777)


def _write_file(
    target: Path, data: IO[bytes] | None, member: tarfile.TarInfo, *, as_root: bool
) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        if data is not None:
            shutil.copyfileobj(data, handle, 1 << 20)
        if as_root:
            os.fchown(handle.fileno(), member.uid, member.gid)
        os.fchmod(handle.fileno(), _mode(member, as_root=as_root))
    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)


def _make_node(target: Path, member: tarfile.TarInfo) -> None:
    mode = member.mode & 0o777
    if member.isfifo():
        os.mkfifo(target, mode)
    else:
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        os.mknod(target, mode | kind, os.makedev(member.devmajor, member.devminor))


def _set_owner_and_time(
    target: Path, member: tarfile.TarInfo, *, as_root: bool, is_link: bool
) -> None:
    if as_root:
        os.chown(target, member.uid, member.gid, follow_symlinks=False)
    if not is_link:
        target.chmod(_mode(member, as_root=as_root))
    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)

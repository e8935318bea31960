"""Applying OCI image layers, in order, with whiteouts.

A layer is a tar archive of changes to the layers below it (OCI image spec,
"Image Layer Filesystem Changeset"):

* ``DIR/.wh.NAME`` deletes ``DIR/NAME`` (and all under it) from the lower
  layers; the whiteout itself is never written;
* ``DIR/.wh..wh..opq`` makes ``DIR`` opaque: everything the lower layers put
  in it is hidden, only this layer's own entries under it stay;
* other ``.wh..wh.*`` names (and everything under ``.wh..wh.plnk/`` and
  the like at the root) are AUFS bookkeeping and are skipped, as Docker
  does (hard links into ``.wh..wh.plnk`` are therefore refused);
* a non-directory entry over a lower directory replaces it; a directory
  entry over a lower directory merges into it.

Whiteouts only apply to lower layers: a whiteout of a path this same layer
wrote is ignored, and an opaque directory keeps this layer's entries
wherever the marker sits in the archive (opaque directories are cleared when
the layer's last entry has been written).

Every entry goes through :func:`pvinit.build.rootfs.check_member` against
the tree on disk just before it is written, and every whiteout through
:func:`pvinit.build.rootfs.check_removal`, so no layer can write or delete
outside the destination (absolute names, ``..``, links out, writes or
removals through symlinks).  Layers are applied in one streaming pass into a
scratch directory that the caller throws away on any error, so a refused
layer leaves nothing behind that matters.

The uncompressed stream is hashed while it is applied and compared with the
image config's ``diff_id`` for the layer: a layer that does not match is an
IntegrityError (its compressed blob was already checked by the caller).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import posixpath
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, cast

from pvinit.build.rootfs import (
    DiskTree,
    EntryKind,
    archive_path,
    check_member,
    check_removal,
    finish_directories,
    remove_path,
    write_member,
)
from pvinit.errors import BadInputError, IntegrityError, PvError
from pvinit.record import record

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
AUFS_META_PREFIX = ".wh..wh."
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ROOT = PurePosixPath(".")
_CHUNK = 1 << 20


@record(frozen=True)
class LayerFile:
    """One layer blob on local disk, already checked against its descriptor.

    ``name`` says where it came from in messages (its digest); ``diff_id``
    is the image config's ``sha256:`` digest of the uncompressed tar.
    """

    path: Path
    name: str
    diff_id: str | None


class _HashingReader:
    """A read-only stream that hashes everything read through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.digest.update(data)
        return data

    def drain(self) -> None:
        """Read (and hash) whatever the tar reader left: end blocks and padding."""
        while self.read(_CHUNK):
            pass


@contextlib.contextmanager
def open_uncompressed(path: Path, *, where: str) -> Iterator[IO[bytes]]:
    """The uncompressed bytes of a plain, gzip or zstd layer blob (found by magic)."""
    with path.open("rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic.startswith(_GZIP_MAGIC):
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield cast(IO[bytes], unzipped)
        elif magic == _ZSTD_MAGIC:
            import zstandard  # only zstd layers need it

            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            with reader:
                yield cast(IO[bytes], reader)
        else:
            yield raw


def uncompressed_digest(path: Path, *, where: str) -> str:
    """``sha256:<hex>`` of a layer blob's uncompressed bytes (its diff_id)."""
    digest = hashlib.sha256()
    try:
        with open_uncompressed(path, where=where) as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, ValueError) as exc:
        raise BadInputError(f"damaged layer: {exc}", where=where) from exc
    except Exception as exc:  # zstandard.ZstdError, without importing it here
        raise BadInputError(f"damaged layer: {exc}", where=where) from exc
    return "sha256:" + digest.hexdigest()


def apply_layers(layers: list[LayerFile], dest: Path) -> None:
    """Apply ``layers`` bottom to top into the (empty or new) directory ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    as_root = os.geteuid() == 0
    directories: list[tuple[Path, tarfile.TarInfo]] = []
    for layer in layers:
        apply_layer(layer, dest, directories=directories, as_root=as_root)
    finish_directories(directories, as_root=as_root)


def apply_layer(
    layer: LayerFile,
    dest: Path,
    *,
    directories: list[tuple[Path, tarfile.TarInfo]],
    as_root: bool,
) -> None:
    """Apply one layer over ``dest``; see the module doc for the rules."""
    where = f"layer {layer.name}"
    try:
        with open_uncompressed(layer.path, where=where) as stream:
            hashing = _HashingReader(stream)
            archive = tarfile.open(fileobj=hashing, mode="r|")  # type: ignore[call-overload]  # noqa: SIM115
            try:
                _Applier(dest, where, as_root=as_root).run(archive, directories)
            finally:
                archive.close()
            hashing.drain()
    except PvError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise BadInputError(f"damaged layer: {exc}", where=where) from exc
    except Exception as exc:  # zstandard.ZstdError
        if type(exc).__module__.startswith("zstandard"):
            raise BadInputError(f"damaged layer: {exc}", where=where) from exc
        raise
    actual = "sha256:" + hashing.digest.hexdigest()
    if layer.diff_id is not None and actual != layer.diff_id:
        raise IntegrityError(
            f"uncompressed layer is {actual}, the image config says {layer.diff_id}",
            where=where,
        )


class _Applier:
    """The state of applying one layer: what it wrote, which directories it made opaque."""

    def __init__(self, dest: Path, where: str, *, as_root: bool) -> None:
        self.dest = dest
        self.where = where
        self.as_root = as_root
        self.disk = DiskTree(dest)
        self.touched: set[PurePosixPath] = set()
        self.opaque: list[tuple[PurePosixPath, str]] = []

    def run(
        self, archive: tarfile.TarFile, directories: list[tuple[Path, tarfile.TarInfo]]
    ) -> None:
        for member in archive:
            member_where = f"{self.where}: tar member {member.name!r}"
            try:
                self.entry(archive, member, member_where, directories)
            except BadInputError as exc:
                if exc.where == member_where:
                    raise
                raise BadInputError(exc.message, where=member_where, hint=exc.hint) from exc
        for path, member_where in self.opaque:
            self.clear_lower(path, member_where)

    def entry(
        self,
        archive: tarfile.TarFile,
        member: tarfile.TarInfo,
        where: str,
        directories: list[tuple[Path, tarfile.TarInfo]],
    ) -> None:
        parent, base = posixpath.split(member.name.rstrip("/"))
        first = next((part for part in member.name.split("/") if part not in ("", ".")), "")
        if first.startswith(AUFS_META_PREFIX) and first != OPAQUE_MARKER:
            return  # AUFS metadata at the root (.wh..wh.plnk/, .wh..wh.aufs): not content
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(parent, base, where)
            return
        path = archive_path(member.name, where=where)
        if (
            not member.isdir()
            and path != _ROOT
            and path not in self.touched
            and self.disk.kind(path) is EntryKind.DIR
        ):
            # a lower layer's directory replaced by a file, link or node
            remove_path(self.dest, check_removal(member.name, self.disk, where=where))
        path = check_member(member, self.disk, allow_devices=self.as_root)
        write_member(archive, member, self.dest, path, as_root=self.as_root,
                     directories=directories)
        self.touched.add(path)
        self.touched.update(path.parents)

    def whiteout(self, parent: str, base: str, where: str) -> None:
        if base == OPAQUE_MARKER:
            directory = archive_path(parent or ".", where=where)
            if directory != _ROOT:
                check_removal(parent, self.disk, where=where)
                if self.disk.kind(directory) is EntryKind.SYMLINK:
                    raise BadInputError(
                        f"would write through the symlink {str(directory)!r}", where=where
                    )
            self.opaque.append((directory, where))
            return
        if base.startswith(AUFS_META_PREFIX):
            return  # other AUFS metadata: not content
        name = base[len(WHITEOUT_PREFIX):]
        if name in ("", ".", ".."):
            raise BadInputError(f"whiteout of {name!r} is not allowed", where=where)
        path = check_removal(posixpath.join(parent, name), self.disk, where=where)
        if path not in self.touched:
            remove_path(self.dest, path)

    def clear_lower(self, directory: PurePosixPath, where: str) -> None:
        """Remove what lower layers put under an opaque ``directory``."""
        if directory != _ROOT:
            check_removal(str(directory), self.disk, where=where)
            if self.disk.kind(directory) is not EntryKind.DIR:
                return
        self._clear(directory)

    def _clear(self, directory: PurePosixPath) -> None:
        with os.scandir(self.dest / directory) as entries:
            names = sorted(entry.name for entry in entries)
        for name in names:
            path = directory / name
            if path not in self.touched:
                remove_path(self.dest, path)
            elif self.disk.kind(path) is EntryKind.DIR:
                self._clear(path)

"""Images from docker-archives (``docker save``, ``skopeo copy ... docker-archive:``).

The archive's ``manifest.json`` lists, per image, a config file and the layer
tars bottom to top.  It has no digest of its own (it is the archive's table
of contents), so trust starts at the config, which is named by its sha256
and checked against it, and whose ``rootfs.diff_ids`` name each layer's
uncompressed digest: every layer is copied out of the archive and checked
against its diff_id before it is used.  Members are only looked up by name
in the archive's index, never extracted by their own path.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
from pathlib import Path
from typing import IO, Any

from pvinit.build.oci import MAX_JSON_BYTES, Image, ImageConfig, parse_json
from pvinit.build.oci_layers import LayerFile, uncompressed_digest
from pvinit.errors import BadInputError, IntegrityError, NotFoundError


def read_docker_archive(path: Path, ref: str | None, stage: Path) -> Image:
    """The image of a ``docker save`` archive, its blobs copied to ``stage`` and checked."""
    if not path.is_file():
        raise NotFoundError("no such docker-archive", where=str(path))
    try:
        with tarfile.open(path, mode="r:*") as archive:
            return _docker_image(archive, path, ref, stage)
    except (tarfile.TarError, EOFError) as exc:
        raise BadInputError(f"not a docker-archive: {exc}", where=str(path)) from exc


def _member_bytes(archive: tarfile.TarFile, name: str, *, where: str, limit: int) -> bytes:
    with _open_member(archive, name, where=where) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise BadInputError(f"{name} is too big", where=where)
    return data


def _open_member(archive: tarfile.TarFile, name: str, *, where: str) -> IO[bytes]:
    try:
        handle = archive.extractfile(name)
    except KeyError:
        handle = None
    if handle is None:
        raise BadInputError(f"the archive has no file {name!r}", where=where)
    return handle


def _docker_image(archive: tarfile.TarFile, path: Path, ref: str | None, stage: Path) -> Image:
    where = str(path)
    entries = parse_json(_member_bytes(archive, "manifest.json", where=where,
                                        limit=MAX_JSON_BYTES), where=f"{where}: manifest.json")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BadInputError("manifest.json must be a list of objects", where=where)

    def tags(entry: dict[str, Any]) -> list[str]:
        found = entry.get("RepoTags") or []
        return [t for t in found if isinstance(t, str)]

    if ref is not None:
        wanted = {ref, f"docker.io/{ref}", f"docker.io/library/{ref}"}
        entries = [e for e in entries if wanted & set(tags(e))]
    if len(entries) != 1:
        raise NotFoundError(
            "no image tagged so" if ref is not None and not entries else "several images",
            where=where, hint="name one as docker-archive:FILE:REPO:TAG",
        )
    entry = entries[0]
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list) \
            or not all(isinstance(n, str) for n in layer_names):
        raise BadInputError("manifest.json entry needs Config and Layers", where=where)
    match = re.search(r"([0-9a-f]{64})(\.json)?$", config_name)
    if match is None:
        raise IntegrityError("the config file is not named by its digest: cannot check it",
                             where=f"{where}: {config_name}")
    config_digest = f"sha256:{match.group(1)}"
    config_bytes = _member_bytes(archive, config_name, where=where, limit=MAX_JSON_BYTES)
    if hashlib.sha256(config_bytes).hexdigest() != match.group(1):
        raise IntegrityError("config content does not match its digest", where=config_digest)
    config = ImageConfig.from_dict(parse_json(config_bytes, where=config_digest),
                                   where=config_digest)
    if len(config.diff_ids) != len(layer_names):
        raise BadInputError(
            f"the config lists {len(config.diff_ids)} diff_ids for {len(layer_names)} layers",
            where=config_digest,
        )
    layers = []
    for i, (name, diff_id) in enumerate(zip(layer_names, config.diff_ids, strict=True)):
        local = stage / f"layer-{i}"
        with _open_member(archive, name, where=where) as src, local.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        actual = uncompressed_digest(local, where=f"{where}: {name}")
        if actual != diff_id:
            raise IntegrityError(
                f"layer {name!r} does not match its digest (it is {actual})", where=diff_id
            )
        layers.append(LayerFile(path=local, name=diff_id, diff_id=diff_id))
    return Image(config=config, layers=tuple(layers), origin=f"docker-archive:{path}")

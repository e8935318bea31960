"""Container images from OCI image layouts, docker-archives and registries.

``pvstate container add NAME --from SOURCE`` accepts, besides a rootfs
directory or tar:

* ``oci:PATH[:TAG]`` - an OCI image layout directory (``umoci``, ``skopeo
  copy ... oci:``, ``buildah push ... oci:``); TAG is the
  ``org.opencontainers.image.ref.name`` of a manifest in its ``index.json``;
* ``docker-archive:FILE[:REF]`` - the output of ``docker save`` or ``skopeo
  copy ... docker-archive:``; REF picks one of several images by RepoTag;
* ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` - pulled over the registry
  HTTP API v2 (see :mod:`pvinit.build.oci_registry`) into a scratch OCI
  layout, then read like any other layout.

Trust comes from digests only: every manifest, index and config blob is
hashed and compared with the digest that names it before it is parsed,
every layer blob before it is unpacked (and its uncompressed bytes against
the config's ``diff_ids`` while it is unpacked); a mismatch is an
IntegrityError naming the digest.  A docker-archive has no digest for its
manifest.json (it is the archive's own table of contents); its config is
named by its digest and its layers are checked against the config's
``diff_ids`` before use.

docker-archives are read by :mod:`pvinit.build.oci_archive`; the image
config (Entrypoint + Cmd, Env, WorkingDir, User) is mapped to run.json by
:mod:`pvinit.build.oci_run` (see ``docs/formats/oci-import.md``).
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pvinit.build.oci_layers import LayerFile, apply_layers
from pvinit.errors import BadInputError, IntegrityError, NotFoundError
from pvinit.record import field, record

MAX_JSON_BYTES = 4 << 20
REF_NAME = "org.opencontainers.image.ref.name"
MANIFEST_TYPES = frozenset({
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
})
INDEX_TYPES = frozenset({
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
})
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm",
         "i686": "386", "riscv64": "riscv64", "ppc64le": "ppc64le", "s390x": "s390x"}


def check_digest(value: object, *, where: str) -> str:
    """The hex of a ``sha256:<64 hex>`` digest, or BadInputError naming ``where``."""
    if not isinstance(value, str):
        raise BadInputError("a digest must be a string", where=where)
    match = _DIGEST.fullmatch(value)
    if match is None:
        raise BadInputError(
            f"unsupported or malformed digest {value!r} (only sha256:<64 hex>)", where=where
        )
    return match.group(1)


def host_platform() -> tuple[str, str]:
    """The (os, architecture) an image must be for, in OCI's names."""
    machine = platform.machine()
    return "linux", _ARCH.get(machine, machine)


@record(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and size."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: object, *, where: str) -> Descriptor:
        if not isinstance(d, dict):
            raise BadInputError("a descriptor must be an object", where=where)
        check_digest(d.get("digest"), where=f"{where}.digest")
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadInputError("size must be a non-negative integer", where=f"{where}.size")
        media_type = d.get("mediaType", "")
        annotations = d.get("annotations") or {}
        plat = d.get("platform") or {}
        if not isinstance(media_type, str) or not isinstance(annotations, dict) \
                or not isinstance(plat, dict):
            raise BadInputError("mediaType, annotations or platform malformed", where=where)
        return cls(media_type=media_type, digest=d["digest"], size=size,
                   annotations={str(k): str(v) for k, v in annotations.items()},
                   platform={str(k): str(v) for k, v in plat.items()})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out


@record(frozen=True)
class ImageConfig:
    """The parts of an image config (``config`` and ``rootfs``) that pvinit uses."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    diff_ids: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: object, *, where: str) -> ImageConfig:
        if not isinstance(d, dict):
            raise BadInputError("an image config must be an object", where=where)
        conf = d.get("config") or {}
        rootfs = d.get("rootfs") or {}
        if not isinstance(conf, dict) or not isinstance(rootfs, dict):
            raise BadInputError("config and rootfs must be objects", where=where)

        def strings(value: object, name: str) -> tuple[str, ...]:
            if value is None:
                return ()
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BadInputError(f"{name} must be a list of strings", where=where)
            return tuple(value)

        def text(value: object, name: str) -> str:
            if value is None:
                return ""
            if not isinstance(value, str):
                raise BadInputError(f"{name} must be a string", where=where)
            return value

        diff_ids = strings(rootfs.get("diff_ids"), "rootfs.diff_ids")
        for i, diff_id in enumerate(diff_ids):
            check_digest(diff_id, where=f"{where}: rootfs.diff_ids[{i}]")
        return cls(
            entrypoint=strings(conf.get("Entrypoint"), "Entrypoint"),
            cmd=strings(conf.get("Cmd"), "Cmd"),
            env=strings(conf.get("Env"), "Env"),
            working_dir=text(conf.get("WorkingDir"), "WorkingDir"),
            user=text(conf.get("User"), "User"),
            diff_ids=diff_ids,
        )

    def to_dict(self) -> dict[str, Any]:
        conf: dict[str, Any] = {}
        if self.entrypoint:
            conf["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            conf["Cmd"] = list(self.cmd)
        if self.env:
            conf["Env"] = list(self.env)
        if self.working_dir:
            conf["WorkingDir"] = self.working_dir
        if self.user:
            conf["User"] = self.user
        return {"config": conf, "rootfs": {"type": "layers", "diff_ids": list(self.diff_ids)}}


@record(frozen=True)
class Image:
    """An image whose blobs are on local disk and were checked against their digests."""

    config: ImageConfig
    layers: tuple[LayerFile, ...]
    origin: str

    def unpack(self, dest: Path) -> None:
        """Apply the layers in order, whiteouts included, into ``dest``."""
        apply_layers(list(self.layers), dest)


# -- OCI image layout -------------------------------------------------------------


def parse_json(data: bytes, *, where: str) -> Any:
    """JSON from bytes, or BadInputError naming ``where``."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"not JSON: {exc}", where=where) from exc


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class OciLayout:
    """An OCI image layout directory, read with every blob checked."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        marker = self.root / "oci-layout"
        if not marker.is_file():
            if not self.root.exists():
                raise NotFoundError("no such OCI image layout", where=str(self.root))
            raise BadInputError("not an OCI image layout (no oci-layout file)",
                                where=str(self.root))
        version = parse_json(marker.read_bytes()[:4096], where=str(marker))
        if not isinstance(version, dict) or version.get("imageLayoutVersion") != "1.0.0":
            raise BadInputError("unsupported imageLayoutVersion", where=str(marker))

    def blob_path(self, desc: Descriptor) -> Path:
        """The checked local file of ``desc``: right size, right sha256."""
        hexdigest = check_digest(desc.digest, where=str(self.root))
        path = self.root / "blobs" / "sha256" / hexdigest
        if not path.is_file():
            raise NotFoundError(f"blob {desc.digest} is missing", where=str(self.root))
        size = path.stat().st_size
        if size != desc.size:
            raise IntegrityError(f"blob is {size} bytes, its descriptor says {desc.size}",
                                 where=desc.digest)
        if _sha256_file(path) != hexdigest:
            raise IntegrityError("blob content does not match its digest", where=desc.digest)
        return path

    def blob_json(self, desc: Descriptor) -> Any:
        if desc.size > MAX_JSON_BYTES:
            raise BadInputError(f"{desc.size} bytes is too big for a manifest or config",
                                where=desc.digest)
        return parse_json(self.blob_path(desc).read_bytes(), where=desc.digest)

    def index(self) -> list[Descriptor]:
        path = self.root / "index.json"
        if not path.is_file():
            raise BadInputError("no index.json", where=str(self.root))
        if path.stat().st_size > MAX_JSON_BYTES:
            raise BadInputError("index.json is too big", where=str(path))
        return _manifests(parse_json(path.read_bytes(), where=str(path)), where=str(path))

    def image(self, tag: str | None) -> Image:
        """The image tagged ``tag`` (or the only one) for this machine's platform."""
        manifests = self.index()
        if tag is not None:
            chosen = [d for d in manifests if d.annotations.get(REF_NAME) == tag]
        else:
            chosen = manifests
        if len(chosen) != 1:
            tags = sorted({d.annotations.get(REF_NAME, "?") for d in manifests})
            what = f"no image tagged {tag!r}" if tag is not None and not chosen else \
                "several images"
            raise NotFoundError(f"{what}; tags here: {tags}", where=str(self.root),
                                hint="name one as oci:PATH:TAG")
        return self.resolve(chosen[0], origin=f"oci:{self.root}:{tag or ''}".rstrip(":"))

    def resolve(self, desc: Descriptor, *, origin: str, depth: int = 0) -> Image:
        """Follow an index or manifest descriptor down to a checked image."""
        if desc.media_type in INDEX_TYPES:
            if depth > 2:
                raise BadInputError("image indexes nested too deep", where=desc.digest)
            doc = self.blob_json(desc)
            child = select_platform(_manifests(doc, where=desc.digest), where=desc.digest)
            return self.resolve(child, origin=origin, depth=depth + 1)
        if desc.media_type and desc.media_type not in MANIFEST_TYPES:
            raise BadInputError(f"unsupported manifest media type {desc.media_type!r}",
                                where=desc.digest)
        manifest = self.blob_json(desc)
        config_desc, layer_descs = parse_manifest(manifest, where=desc.digest)
        config = ImageConfig.from_dict(self.blob_json(config_desc), where=config_desc.digest)
        diff_ids = _diff_ids(config, len(layer_descs), where=config_desc.digest)
        layers = tuple(
            LayerFile(path=self.blob_path(layer), name=layer.digest, diff_id=diff_id)
            for layer, diff_id in zip(layer_descs, diff_ids, strict=True)
        )
        return Image(config=config, layers=layers, origin=origin)


def _manifests(doc: object, *, where: str) -> list[Descriptor]:
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        raise BadInputError("an index must have a 'manifests' list", where=where)
    return [Descriptor.from_dict(m, where=f"{where}: manifests[{i}]")
            for i, m in enumerate(doc["manifests"])]


def select_platform(manifests: list[Descriptor], *, where: str) -> Descriptor:
    """The manifest of an index for this machine's os/architecture."""
    os_name, arch = host_platform()
    for desc in manifests:
        plat = desc.platform
        if plat.get("os", os_name) == os_name and plat.get("architecture", arch) == arch:
            return desc
    found = sorted(f"{d.platform.get('os')}/{d.platform.get('architecture')}" for d in manifests)
    raise NotFoundError(f"no image for {os_name}/{arch}; the index has {found}", where=where)


def parse_manifest(doc: object, *, where: str) -> tuple[Descriptor, list[Descriptor]]:
    """An image manifest's config and layer descriptors."""
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise BadInputError("not an image manifest (schemaVersion 2)", where=where)
    if not isinstance(doc.get("layers"), list):
        raise BadInputError("a manifest must have a 'layers' list", where=where)
    config = Descriptor.from_dict(doc.get("config"), where=f"{where}: config")
    layers = [Descriptor.from_dict(d, where=f"{where}: layers[{i}]")
              for i, d in enumerate(doc["layers"])]
    for i, layer in enumerate(layers):
        kind = layer.media_type
        if kind and "image.layer.v1.tar" not in kind and "image.rootfs.diff.tar" not in kind:
            raise BadInputError(f"layer media type {kind!r} is not a filesystem layer",
                                where=f"{where}: layers[{i}]")
    return config, layers


def _diff_ids(config: ImageConfig, count: int, *, where: str) -> tuple[str | None, ...]:
    if not config.diff_ids:
        return (None,) * count
    if len(config.diff_ids) != count:
        raise BadInputError(
            f"the config lists {len(config.diff_ids)} diff_ids for {count} layers", where=where
        )
    return config.diff_ids

"""OCI image layouts and docker-archives written by hand: digests, tags, platforms, config."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pvinit.build.oci import Descriptor, ImageConfig, OciLayout, host_platform
from pvinit.build.oci_archive import read_docker_archive
from pvinit.errors import BadInputError, IntegrityError, NotFoundError
from tests.unit.test_oci_layers import f, layer_tar, sym

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class LayoutWriter:
    """Writes an OCI image layout file by file, every digest right unless told."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.index: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        digest = sha(data)
        (self.root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(self, layers: list[bytes], config: dict[str, Any] | None = None,
              *, tag: str | None = "v1", platform: dict[str, str] | None = None,
              ) -> dict[str, Any]:
        """Add an image of gzip layers (tar bytes given); returns its manifest descriptor."""
        doc = {"architecture": host_platform()[1], "os": "linux",
               "config": config or {},
               "rootfs": {"type": "layers", "diff_ids": [sha(raw) for raw in layers]}}
        config_desc = self.blob(json.dumps(doc).encode(),
                                "application/vnd.oci.image.config.v1+json")
        layer_descs = [self.blob(gzip.compress(raw, mtime=0), LAYER_GZIP) for raw in layers]
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config_desc,
                    "layers": layer_descs}
        desc = self.blob(json.dumps(manifest).encode(), MANIFEST)
        if platform is not None:
            desc["platform"] = platform
        if tag is not None:
            self.tag(desc, tag)
        return desc

    def tag(self, desc: dict[str, Any], tag: str) -> None:
        self.index.append({**desc, "annotations": {"org.opencontainers.image.ref.name": tag}})
        self.save()

    def save(self) -> None:
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2,
                                                          "manifests": self.index}))

    def path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest[7:]


@pytest.fixture
def layout(tmp_path: Path) -> LayoutWriter:
    return LayoutWriter(tmp_path / "layout")


def test_a_tagged_image_unpacks_with_its_config(layout: LayoutWriter, tmp_path: Path) -> None:
    layout.image([layer_tar(f("a", b"1"), f("gone")), layer_tar(f(".wh.gone"), f("b"))],
                 {"Entrypoint": ["/a"], "Env": ["X=1"], "User": "app"})
    image = OciLayout(layout.root).image("v1")
    assert image.config.entrypoint == ("/a",) and image.config.user == "app"
    image.unpack(tmp_path / "rootfs")
    assert sorted(p.name for p in (tmp_path / "rootfs").iterdir()) == ["a", "b"]


def test_the_only_image_needs_no_tag_but_several_do(layout: LayoutWriter) -> None:
    layout.image([layer_tar(f("a"))], tag="one")
    assert OciLayout(layout.root).image(None).layers
    layout.image([layer_tar(f("b"))], tag="two")
    with pytest.raises(NotFoundError, match=r"several images.*'one', 'two'"):
        OciLayout(layout.root).image(None)
    with pytest.raises(NotFoundError, match="no image tagged 'three'"):
        OciLayout(layout.root).image("three")


@pytest.mark.parametrize("which", ["manifest", "config", "layer"])
def test_a_blob_that_does_not_match_its_digest_is_refused_naming_it(
    layout: LayoutWriter, which: str
) -> None:
    desc = layout.image([layer_tar(f("a"))])
    manifest = json.loads(layout.path(desc["digest"]).read_bytes())
    target = {"manifest": desc["digest"], "config": manifest["config"]["digest"],
              "layer": manifest["layers"][0]["digest"]}[which]
    blob = layout.path(target)
    data = bytearray(blob.read_bytes())
    data[5] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as caught:
        OciLayout(layout.root).image("v1")
    assert target in str(caught.value)


def test_a_blob_of_another_size_than_described_is_refused(layout: LayoutWriter) -> None:
    desc = layout.image([layer_tar(f("a"))])
    layout.index = []
    layout.tag({**desc, "size": desc["size"] + 1}, "v1")
    with pytest.raises(IntegrityError, match="descriptor says"):
        OciLayout(layout.root).image("v1")


def test_a_missing_blob_is_named(layout: LayoutWriter) -> None:
    desc = layout.image([layer_tar(f("a"))])
    manifest = json.loads(layout.path(desc["digest"]).read_bytes())
    layout.path(manifest["layers"][0]["digest"]).unlink()
    with pytest.raises(NotFoundError, match=manifest["layers"][0]["digest"]):
        OciLayout(layout.root).image("v1")


def test_a_config_with_other_diff_ids_is_an_integrity_error_when_unpacking(
    layout: LayoutWriter, tmp_path: Path
) -> None:
    raw = layer_tar(f("a"))
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [sha(raw + b"x")]}}
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": layout.blob(json.dumps(config).encode(),
                                      "application/vnd.oci.image.config.v1+json"),
                "layers": [layout.blob(gzip.compress(raw), LAYER_GZIP)]}
    layout.tag(layout.blob(json.dumps(manifest).encode(), MANIFEST), "v1")
    image = OciLayout(layout.root).image("v1")
    with pytest.raises(IntegrityError, match=sha(raw + b"x")):
        image.unpack(tmp_path / "rootfs")


def test_an_index_picks_this_machines_platform(layout: LayoutWriter, tmp_path: Path) -> None:
    mine = layout.image([layer_tar(f("mine"))], tag=None,
                        platform={"os": "linux", "architecture": host_platform()[1]})
    other = layout.image([layer_tar(f("other"))], tag=None,
                         platform={"os": "linux", "architecture": "mips64le"})
    layout.tag(layout.blob(json.dumps({"schemaVersion": 2, "mediaType": INDEX,
                                       "manifests": [other, mine]}).encode(), INDEX), "v1")
    OciLayout(layout.root).image("v1").unpack(tmp_path / "rootfs")
    assert [p.name for p in (tmp_path / "rootfs").iterdir()] == ["mine"]


def test_an_index_without_this_platform_is_refused(layout: LayoutWriter) -> None:
    other = layout.image([layer_tar(f("other"))], tag=None,
                         platform={"os": "linux", "architecture": "mips64le"})
    layout.tag(layout.blob(json.dumps({"schemaVersion": 2, "mediaType": INDEX,
                                       "manifests": [other]}).encode(), INDEX), "v1")
    with pytest.raises(NotFoundError, match="linux/mips64le"):
        OciLayout(layout.root).image("v1")


def test_a_non_layer_media_type_is_refused(layout: LayoutWriter) -> None:
    blob = layout.blob(b"{}", "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "config": blob,
                "layers": [{**blob, "mediaType": "application/vnd.example.thing"}]}
    layout.tag(layout.blob(json.dumps(manifest).encode(), MANIFEST), "v1")
    with pytest.raises(BadInputError, match="not a filesystem layer"):
        OciLayout(layout.root).image("v1")


def test_a_hostile_layer_is_refused_naming_its_member(layout: LayoutWriter, tmp_path: Path) -> None:
    layout.image([layer_tar(f("ok")), layer_tar(sym("etc", "/etc"), f("etc/shadow"))])
    image = OciLayout(layout.root).image("v1")
    with pytest.raises(BadInputError, match=r"tar member 'etc/shadow'.*through the symlink"):
        image.unpack(tmp_path / "rootfs")


def test_not_a_layout_and_malformed_digests(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        OciLayout(tmp_path / "nothing")
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(BadInputError, match="oci-layout"):
        OciLayout(tmp_path / "empty")
    with pytest.raises(BadInputError, match="only sha256"):
        Descriptor.from_dict({"digest": "sha512:00", "size": 1}, where="d")
    with pytest.raises(BadInputError, match="only sha256"):
        Descriptor.from_dict({"digest": "sha256:../../etc", "size": 1}, where="d")


def test_image_config_round_trips() -> None:
    doc = {"config": {"Entrypoint": ["/a"], "Cmd": ["b"], "Env": ["X=1"], "WorkingDir": "/w",
                      "User": "u"}, "rootfs": {"type": "layers", "diff_ids": [sha(b"")]}}
    assert ImageConfig.from_dict(doc, where="c").to_dict() == doc
    with pytest.raises(BadInputError, match="Cmd must be a list"):
        ImageConfig.from_dict({"config": {"Cmd": "sh -c x"}}, where="c")


# -- docker-archive ---------------------------------------------------------------


def docker_archive(path: Path, layers: list[bytes], *, config: dict[str, Any] | None = None,
                   tamper_layer: bool = False, tags: tuple[str, ...] = ("demo:v1",)) -> None:
    doc = json.dumps({"config": config or {},
                      "rootfs": {"type": "layers", "diff_ids": [sha(r) for r in layers]}}).encode()
    config_name = f"{sha(doc)[7:]}.json"
    files = {config_name: doc}
    names = []
    for i, raw in enumerate(layers):
        name = f"l{i}/layer.tar"
        files[name] = raw + (b"\0" * 512 if tamper_layer else b"")
        names.append(name)
    files["manifest.json"] = json.dumps(
        [{"Config": config_name, "RepoTags": list(tags), "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_docker_archive_unpacks_by_tag(tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    docker_archive(archive, [layer_tar(f("a")), layer_tar(f(".wh.a"), f("b"))],
                   config={"Cmd": ["/b"]})
    stage = tmp_path / "stage"
    stage.mkdir()
    image = read_docker_archive(archive, "demo:v1", stage)
    assert image.config.cmd == ("/b",)
    image.unpack(tmp_path / "rootfs")
    assert [p.name for p in (tmp_path / "rootfs").iterdir()] == ["b"]
    with pytest.raises(NotFoundError):
        read_docker_archive(archive, "demo:v2", stage)


def test_docker_archive_layer_not_matching_its_diff_id_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    raw = layer_tar(f("a"))
    docker_archive(archive, [raw], tamper_layer=True)
    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.raises(IntegrityError, match=sha(raw)):
        read_docker_archive(archive, None, stage)


def test_docker_archive_config_not_matching_its_name_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    docker_archive(archive, [layer_tar(f("a"))])
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    config_name = next(n for n in members if n.endswith(".json") and n != "manifest.json")
    members[config_name] = members[config_name].replace(b"{}", b'{"User": "x"}')
    with tarfile.open(archive, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.raises(IntegrityError, match=config_name[:64]):
        read_docker_archive(archive, None, stage)

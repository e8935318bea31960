"""Layer application: whiteouts, opaque directories, hostile entries, diff_ids."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from pvinit.build.oci_layers import LayerFile, apply_layers, uncompressed_digest
from pvinit.errors import BadInputError, IntegrityError

Entry = Callable[[tarfile.TarFile], None]


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
          linkname: str = "", mode: int = 0o644) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        info.mode = 0o755 if kind == tarfile.DIRTYPE else mode
        info.mtime = 1_000_000
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    return add


def f(name: str, data: bytes = b"data") -> Entry:
    return entry(name, data=data)


def d(name: str) -> Entry:
    return entry(name, tarfile.DIRTYPE)


def sym(name: str, target: str) -> Entry:
    return entry(name, tarfile.SYMTYPE, linkname=target)


def hard(name: str, target: str) -> Entry:
    return entry(name, tarfile.LNKTYPE, linkname=target)


def layer_tar(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for add in entries:
            add(tar)
    return buf.getvalue()


def diff_id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_file(tmp_path: Path, raw: bytes, *, compress: str = "none",
               checked: bool = True) -> LayerFile:
    body = {"none": lambda b: b, "gzip": gzip.compress,
            "zstd": zstandard.ZstdCompressor().compress}[compress](raw)
    path = tmp_path / f"blob-{hashlib.sha256(body).hexdigest()[:16]}"
    path.write_bytes(body)
    return LayerFile(path=path, name=diff_id(body), diff_id=diff_id(raw) if checked else None)


def build(tmp_path: Path, *layers: list[Entry], compress: str = "none") -> Path:
    dest = tmp_path / "rootfs"
    apply_layers([layer_file(tmp_path, layer_tar(*entries), compress=compress)
                  for entries in layers], dest)
    return dest


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("compress", ["none", "gzip", "zstd"])
def test_layers_apply_in_order_whatever_their_compression(tmp_path: Path, compress: str) -> None:
    root = build(tmp_path, [d("etc"), f("etc/a", b"one")], [f("etc/a", b"two"), f("etc/b")],
                 compress=compress)
    assert (root / "etc" / "a").read_bytes() == b"two"
    assert tree(root) == ["etc", "etc/a", "etc/b"]


def test_whiteout_deletes_a_lower_file_and_a_lower_directory(tmp_path: Path) -> None:
    root = build(
        tmp_path,
        [f("etc/gone"), f("etc/kept"), f("var/cache/x"), f("var/cache/sub/y")],
        [f("etc/.wh.gone"), f("var/.wh.cache")],
    )
    assert tree(root) == ["etc", "etc/kept", "var"]


def test_whiteout_does_not_delete_what_the_same_layer_wrote(tmp_path: Path) -> None:
    root = build(tmp_path, [f("a", b"lower")], [f("a", b"upper"), f(".wh.a")])
    assert (root / "a").read_bytes() == b"upper"


def test_opaque_directory_hides_lower_entries_and_keeps_its_own_wherever_the_marker_is(
    tmp_path: Path,
) -> None:
    root = build(
        tmp_path,
        [f("data/old"), f("data/sub/lower"), f("other/x")],
        [f("data/new"), f("data/sub/upper"), f("data/.wh..wh..opq")],
    )
    assert tree(root) == ["data", "data/new", "data/sub", "data/sub/upper", "other", "other/x"]


def test_opaque_root_keeps_only_the_layers_own_entries(tmp_path: Path) -> None:
    root = build(tmp_path, [f("a"), f("b/c")], [f(".wh..wh..opq"), f("d")])
    assert tree(root) == ["d"]


def test_aufs_metadata_entries_are_skipped(tmp_path: Path) -> None:
    root = build(tmp_path, [f("a"), f(".wh..wh.plnk/123.456"), d(".wh..wh.aufs")])
    assert tree(root) == ["a"]


def test_a_file_replaces_a_lower_directory_and_a_directory_merges(tmp_path: Path) -> None:
    root = build(tmp_path, [f("x/inner"), f("y/one")], [f("x", b"now a file"), d("y"), f("y/two")])
    assert (root / "x").read_bytes() == b"now a file"
    assert tree(root) == ["x", "y", "y/one", "y/two"]


def test_hard_link_to_a_lower_layers_file(tmp_path: Path) -> None:
    root = build(tmp_path, [f("bin/busybox", b"elf")], [hard("bin/sh", "bin/busybox")])
    assert (root / "bin" / "sh").stat().st_ino == (root / "bin" / "busybox").stat().st_ino


@pytest.mark.parametrize(
    ("entries", "member", "fragment"),
    [
        ([f("/etc/passwd")], "/etc/passwd", "absolute"),
        ([f("../escape")], "../escape", "'..'"),
        ([sym("link", "../../outside")], "link", "points outside"),
        ([hard("h", "../outside")], "h", "'..'"),
        ([hard("h", "/etc/passwd")], "h", "absolute"),
        ([sym("etc", "/etc"), f("etc/passwd")], "etc/passwd", "through the symlink"),
        ([sym("etc", "/"), f("etc/.wh.passwd")], "etc/.wh.passwd", "through the symlink"),
        ([f("../.wh.x")], "../.wh.x", "'..'"),
        ([f("/.wh.x")], "/.wh.x", "absolute"),
        ([sym("d", "/tmp"), f("d/.wh..wh..opq")], "d/.wh..wh..opq", "through the symlink"),
        ([f("a/.wh...")], "a/.wh...", "not allowed"),
    ],
)
def test_escaping_entries_are_refused_naming_the_layer_and_member(
    tmp_path: Path, entries: list[Entry], member: str, fragment: str
) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep")
    layer = layer_file(tmp_path, layer_tar(*entries))
    with pytest.raises(BadInputError) as caught:
        apply_layers([layer], tmp_path / "deep" / "rootfs")
    message = str(caught.value)
    assert f"tar member {member!r}" in message
    assert layer.name in message
    assert fragment in message
    assert outside.read_text() == "keep"


def test_whiteout_through_a_lower_layers_symlink_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep")
    lower = layer_file(tmp_path, layer_tar(sym("v", str(victim))))
    upper = layer_file(tmp_path, layer_tar(f("v/.wh.precious")))
    with pytest.raises(BadInputError, match="through the symlink"):
        apply_layers([lower, upper], tmp_path / "rootfs")
    assert (victim / "precious").read_text() == "keep"


def test_a_layer_whose_content_differs_from_its_diff_id_is_an_integrity_error(
    tmp_path: Path,
) -> None:
    raw = layer_tar(f("a"))
    layer = layer_file(tmp_path, raw, compress="gzip")
    wrong = LayerFile(path=layer.path, name=layer.name, diff_id=diff_id(raw + b"\0"))
    with pytest.raises(IntegrityError) as caught:
        apply_layers([wrong], tmp_path / "rootfs")
    assert wrong.diff_id is not None and wrong.diff_id in str(caught.value)


def test_a_damaged_layer_is_bad_input(tmp_path: Path) -> None:
    body = gzip.compress(layer_tar(f("a", b"x" * 5000)))[:-40]
    path = tmp_path / "blob"
    path.write_bytes(body)
    with pytest.raises(BadInputError, match="damaged layer"):
        apply_layers([LayerFile(path=path, name="sha256:x", diff_id=None)], tmp_path / "rootfs")


def test_uncompressed_digest_is_the_same_for_every_compression(tmp_path: Path) -> None:
    raw = layer_tar(f("a"), f("b"))
    ids = {uncompressed_digest(layer_file(tmp_path, raw, compress=c).path, where="x")
           for c in ("none", "gzip", "zstd")}
    assert ids == {diff_id(raw)}

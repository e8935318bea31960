"""Safe tar extraction: real archives, hostile members, nothing written outside."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
import zstandard

from pvinit.build.rootfs import (
    DiskTree,
    EntryKind,
    PlannedTree,
    check_member,
    extract_tar,
    member_kind,
    symlink_target_inside,
)
from pvinit.errors import BadInputError, NotFoundError

Entry = Callable[[tarfile.TarFile], None]


def file_entry(name: str, data: bytes = b"data", mode: int = 0o644) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.mtime = 1_000_000
        tar.addfile(info, io.BytesIO(data))

    return add


def special_entry(name: str, kind: bytes, linkname: str = "", mode: int = 0o755) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        info.mode = mode
        info.mtime = 1_000_000
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = 1, 3
        tar.addfile(info)

    return add


def dir_entry(name: str, mode: int = 0o755) -> Entry:
    return special_entry(name, tarfile.DIRTYPE, mode=mode)


def symlink_entry(name: str, target: str) -> Entry:
    return special_entry(name, tarfile.SYMTYPE, target, mode=0o777)


def hardlink_entry(name: str, target: str) -> Entry:
    return special_entry(name, tarfile.LNKTYPE, target)


def make_tar(path: Path, entries: list[Entry], compression: str = "") -> Path:
    raw = io.BytesIO()
    mode = "w:" + compression if compression in ("gz", "xz", "bz2") else "w"
    with tarfile.open(fileobj=raw, mode=mode, format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for add in entries:
            add(tar)
    data = raw.getvalue()
    if compression == "zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A destination inside a sandbox, plus a sentinel directory beside it."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "file").write_text("precious")
    return tmp_path / "sandbox" / "dest", tmp_path


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    result: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            content: bytes | str = b""
            if stat.S_ISLNK(info.st_mode):
                content = str(path.readlink())
            elif stat.S_ISREG(info.st_mode):
                content = path.read_bytes()
            result[str(path.relative_to(root))] = (info.st_mode, content)
    return result


GOOD_ENTRIES: list[Entry] = [
    dir_entry("./"),
    dir_entry("./bin"),
    file_entry("./bin/busybox", b"\x7fELF...", 0o755),
    symlink_entry("./bin/sh", "busybox"),
    symlink_entry("./bin/abs", "/bin/busybox"),
    hardlink_entry("./bin/ash", "bin/busybox"),
    dir_entry("etc", 0o750),
    file_entry("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
    file_entry("usr/share/deep/file", b"parents made on the way"),
    special_entry("run/fifo", tarfile.FIFOTYPE, mode=0o600),
    dir_entry("ro", 0o555),
    file_entry("ro/inside", b"written before ro became read-only"),
]


@pytest.mark.parametrize("compression", ["", "gz", "xz", "bz2", "zst"])
def test_archive_is_extracted_with_modes_links_and_times(
    tmp_path: Path, compression: str
) -> None:
    archive = make_tar(tmp_path / "root.tar", GOOD_ENTRIES, compression)
    dest = tmp_path / "dest"
    extract_tar(archive, dest)
    assert (dest / "bin" / "busybox").read_bytes() == b"\x7fELF..."
    assert stat.S_IMODE((dest / "bin" / "busybox").stat().st_mode) == 0o755
    assert str((dest / "bin" / "sh").readlink()) == "busybox"
    assert str((dest / "bin" / "abs").readlink()) == "/bin/busybox"
    assert (dest / "bin" / "ash").stat().st_ino == (dest / "bin" / "busybox").stat().st_ino
    assert stat.S_IMODE((dest / "etc").stat().st_mode) == 0o750
    assert (dest / "usr" / "share" / "deep" / "file").read_bytes() == b"parents made on the way"
    assert stat.S_ISFIFO((dest / "run" / "fifo").lstat().st_mode)
    assert stat.S_IMODE((dest / "ro").stat().st_mode) == 0o555
    assert (dest / "ro" / "inside").exists()
    assert (dest / "etc" / "passwd").stat().st_mtime == 1_000_000
    assert (dest / "etc").stat().st_mtime == 1_000_000


def test_owners_are_kept_when_extracting_as_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("owners are only restored as root")

    def owned(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("owned")
        info.uid, info.gid, info.size = 1234, 5678, 0
        tar.addfile(info, io.BytesIO(b""))

    extract_tar(make_tar(tmp_path / "t.tar", [owned]), tmp_path / "dest")
    info = (tmp_path / "dest" / "owned").stat()
    assert (info.st_uid, info.st_gid) == (1234, 5678)


def test_file_replacing_an_absolute_symlink_does_not_write_through_it(
    layout: tuple[Path, Path],
) -> None:
    dest, sandbox = layout
    target = sandbox / "outside" / "file"
    archive = make_tar(sandbox / "t.tar", [
        symlink_entry("x", str(target)),
        file_entry("x", b"replaced"),
    ])
    extract_tar(archive, dest)
    assert (dest / "x").read_bytes() == b"replaced"
    assert not (dest / "x").is_symlink()
    assert target.read_text() == "precious"


HOSTILE: dict[str, tuple[list[Entry], str]] = {
    "absolute name": ([file_entry("/tmp/pvinit-evil")], "/tmp/pvinit-evil"),
    "dot-dot name": ([file_entry("../outside/evil")], "../outside/evil"),
    "dot-dot inside name": ([file_entry("a/b/../../../outside/evil")], "a/b/../../../outside/evil"),
    "relative symlink out": ([symlink_entry("up", "../../outside")], "up"),
    "symlink then write through it": (
        [symlink_entry("etc", "/"), file_entry("etc/outside/evil")], "etc/outside/evil"),
    "symlink dir then nested write": (
        [dir_entry("a"), symlink_entry("a/link", "../.."), file_entry("a/link/evil")], "a/link"),
    "hardlink out": ([hardlink_entry("h", "../outside/file")], "h"),
    "absolute hardlink": ([hardlink_entry("h", "/etc/passwd")], "h"),
    "hardlink to a symlink": (
        [symlink_entry("s", "/etc/passwd"), hardlink_entry("h", "s")], "h"),
    "hardlink to nothing": ([hardlink_entry("h", "missing")], "h"),
    "device node": ([special_entry("dev/mem", tarfile.CHRTYPE)], "dev/mem"),
    "file replacing a directory": ([dir_entry("d"), file_entry("d")], "d"),
    "root that is a file": ([file_entry("./")], "./"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_naming_the_member_and_nothing_is_written(
    layout: tuple[Path, Path], case: str
) -> None:
    dest, sandbox = layout
    entries, member = HOSTILE[case]
    # a harmless first member proves nothing is extracted before the whole check
    archive = make_tar(sandbox / "t.tar", [file_entry("first", b"ok"), *entries])
    before = snapshot(sandbox)
    with pytest.raises(BadInputError) as info:
        extract_tar(archive, dest, allow_devices=False)
    assert info.value.where == f"tar member {member!r}"
    assert info.value.exit_code == 3
    assert snapshot(sandbox) == before
    assert not dest.exists()


def test_existing_symlink_in_destination_is_not_written_through(
    layout: tuple[Path, Path],
) -> None:
    dest, sandbox = layout
    dest.mkdir(parents=True)
    (dest / "lib").symlink_to(sandbox / "outside")
    archive = make_tar(sandbox / "t.tar", [file_entry("lib/evil")])
    with pytest.raises(BadInputError, match="through the symlink 'lib'"):
        extract_tar(archive, dest)
    assert sorted(p.name for p in (sandbox / "outside").iterdir()) == ["file"]


def test_device_nodes_are_made_when_root_allows_them(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can make device nodes")
    archive = make_tar(tmp_path / "t.tar", [special_entry("dev/null", tarfile.CHRTYPE, mode=0o666)])
    extract_tar(archive, tmp_path / "dest")
    info = (tmp_path / "dest" / "dev" / "null").lstat()
    assert stat.S_ISCHR(info.st_mode)
    assert (os.major(info.st_rdev), os.minor(info.st_rdev)) == (1, 3)


def test_not_an_archive_is_bad_input(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x00garbage" * 200)
    with pytest.raises(BadInputError) as info:
        extract_tar(junk, tmp_path / "dest")
    assert info.value.where == str(junk)
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_truncated_compressed_archive_is_bad_input(tmp_path: Path, compression: str) -> None:
    big = bytes(range(256)) * 4000
    entries = [file_entry("a", big), file_entry("b", big)]
    archive = make_tar(tmp_path / "t.tar", entries, compression)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(BadInputError, match="tar archive"):
        extract_tar(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_missing_archive_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        extract_tar(tmp_path / "none.tar", tmp_path / "dest")


def test_symlink_targets_are_judged_from_the_link_directory() -> None:
    assert symlink_target_inside(PurePosixPath("a/b/link"), "../../c")
    assert not symlink_target_inside(PurePosixPath("a/b/link"), "../../../c")
    assert symlink_target_inside(PurePosixPath("link"), "/anything/absolute")
    assert not symlink_target_inside(PurePosixPath("link"), "..")
    assert not symlink_target_inside(PurePosixPath("link"), "")


def test_planned_tree_sees_links_of_earlier_members(tmp_path: Path) -> None:
    planned = PlannedTree(DiskTree(tmp_path))
    link = tarfile.TarInfo("lib")
    link.type, link.linkname = tarfile.SYMTYPE, "usr/lib"
    planned.add(check_member(link, planned, allow_devices=False), member_kind(link))
    with pytest.raises(BadInputError, match="through the symlink 'lib'"):
        check_member(tarfile.TarInfo("lib/x"), planned, allow_devices=False)
    assert planned.kind(PurePosixPath("lib")) is EntryKind.SYMLINK
    assert list(tmp_path.iterdir()) == []

"""run.json ``user`` -> numeric ids from the container's own passwd/group, and in-root paths."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pvinit.containers.inroot import make_dirs_in_root, open_in_root, read_in_root
from pvinit.containers.users import (
    GroupEntry,
    Identity,
    PasswdEntry,
    home_in_root,
    parse_group,
    parse_passwd,
    resolve_in_root,
    resolve_user,
)
from pvinit.errors import BadInputError, NotFoundError

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
+nisuser::::::

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line without colons
short:x:5:5
badid:x:abc:5:::/bin/sh
toobig:x:4294967295:5:::/bin/sh
negative:x:-3:5:::/bin/sh
:x:9:9:no name:/:/bin/sh
app:x:1000:1000:App,,,:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
app:x:2000:2000:second app, ignored:/:/bin/sh
"""

GROUP = """\
root:x:0:
daemon:x:1:
wheel:x:10:app,daemon
audio:x:29:app
broken:x:zz:app
too:many:fields:here:x
staff:x:50:daemon
app:x:1000:
video:x:44:app,app
nogroup:x:65534:
"""


def test_passwd_lines_that_are_malformed_are_skipped() -> None:
    entries = parse_passwd(PASSWD)
    assert [e.name for e in entries] == ["root", "daemon", "app", "nobody", "app"]
    assert entries[2] == PasswdEntry(name="app", uid=1000, gid=1000, home="/home/app")


def test_group_lines_that_are_malformed_are_skipped() -> None:
    entries = parse_group(GROUP)
    assert [e.name for e in entries] == [
        "root", "daemon", "wheel", "audio", "staff", "app", "video", "nogroup",
    ]  # fmt: skip
    assert entries[2] == GroupEntry(name="wheel", gid=10, members=("app", "daemon"))
    assert entries[0].members == ()


def test_parsing_tolerates_crlf_and_empty_text() -> None:
    assert parse_passwd("") == [] and parse_group("") == []
    assert parse_passwd("a:x:1:2::/h:/bin/sh\r\n")[0].uid == 1


def resolve(spec: str) -> Identity:
    user, sep, group = spec.partition(":")
    return resolve_user(
        user, group if sep else None, parse_passwd(PASSWD), parse_group(GROUP), where="box"
    )


@pytest.mark.parametrize(
    ("spec", "identity"),
    [
        # A name: passwd's uid and primary gid, plus the groups listing it (deduplicated).
        ("app", Identity(1000, 1000, (10, 29, 44), "/home/app")),
        ("daemon", Identity(1, 1, (10, 50), "/usr/sbin")),
        ("nobody", Identity(65534, 65534, home="/nonexistent")),
        # A uid in passwd: as if named (first entry with that uid).
        ("1000", Identity(1000, 1000, (10, 29, 44), "/home/app")),
        ("0", Identity(0, 0, home="/root")),
        # A uid not in passwd: runc's gid 0, no supplementary groups, HOME /.
        ("1234", Identity(1234, 0)),
        # An explicit group replaces the gid and means no supplementary groups.
        ("1000:1000", Identity(1000, 1000, home="/home/app")),
        ("app:audio", Identity(1000, 29, home="/home/app")),
        ("app:4242", Identity(1000, 4242, home="/home/app")),
        ("4242:4343", Identity(4242, 4343)),
        ("4242:nogroup", Identity(4242, 65534)),
    ],
)
def test_users_resolve_as_runc_does(spec: str, identity: Identity) -> None:
    assert resolve(spec) == identity


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ghost", "user 'ghost' is not in the container's /etc/passwd"),
        ("ghost:0", "user 'ghost' is not in the container's /etc/passwd"),
        ("app:ghosts", "group 'ghosts' is not in the container's /etc/group"),
        ("1000:ghosts", "group 'ghosts' is not in the container's /etc/group"),
    ],
)
def test_unknown_names_are_not_found_naming_the_container(spec: str, message: str) -> None:
    with pytest.raises(NotFoundError) as info:
        resolve(spec)
    assert info.value.where == "box"
    assert str(info.value) == f"box: {message}"


def image(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


def test_names_come_from_the_image_not_the_host(tmp_path: Path) -> None:
    root = image(tmp_path)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nsvc:x:777:778::/:/bin/sh\n")
    assert resolve_in_root(root, "svc", None, where="box") == Identity(777, 778, home="/")
    with pytest.raises(NotFoundError):
        resolve_in_root(root, "daemon", None, where="box")  # in the host's passwd, not here


def test_an_image_without_passwd_takes_ids_but_not_names(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    assert resolve_in_root(root, "1000", "1000", where="box") == Identity(1000, 1000)
    assert resolve_in_root(root, "1000", None, where="box") == Identity(1000, 0)
    with pytest.raises(NotFoundError, match="'nobody'"):
        resolve_in_root(root, "nobody", None, where="box")


def test_home_of_a_container_without_user_is_roots_from_its_passwd(tmp_path: Path) -> None:
    root = image(tmp_path)
    assert home_in_root(root, 0, where="box") == "/root"
    (root / "etc" / "passwd").write_text("daemon:x:1:1::/usr/sbin:/bin/sh\n")
    assert home_in_root(root, 0, where="box") == "/"  # no entry for root: runc's default
    (root / "etc" / "passwd").unlink()
    assert home_in_root(root, 0, where="box") == "/"


def test_passwd_symlinked_out_of_the_image_stays_inside(tmp_path: Path) -> None:
    root = image(tmp_path)
    outside = tmp_path / "host-passwd"
    outside.write_text("evil:x:0:0::/:/bin/sh\n")
    (root / "etc" / "passwd").unlink()
    # Absolute and ../ targets are taken inside the root, as a chroot would.
    (root / "etc" / "passwd").symlink_to(f"../../../../{tmp_path.name}/host-passwd")
    with pytest.raises(NotFoundError):
        resolve_in_root(root, "evil", None, where="box")
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").symlink_to(str(outside))
    with pytest.raises(NotFoundError):
        resolve_in_root(root, "evil", None, where="box")
    # A link that stays inside the image is followed.
    (root / "lib").mkdir()
    (root / "lib" / "passwd").write_text(PASSWD)
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").symlink_to("/lib/passwd")
    assert resolve_in_root(root, "app", "app", where="box") == Identity(
        1000, 1000, home="/home/app"
    )


def test_a_passwd_that_is_not_a_regular_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    root = image(tmp_path)
    (root / "etc" / "passwd").unlink()
    os.mkfifo(root / "etc" / "passwd")
    with pytest.raises(BadInputError, match="cannot read the container's /etc/passwd"):
        resolve_in_root(root, "app", None, where="box")


def test_a_huge_passwd_is_refused(tmp_path: Path) -> None:
    root = image(tmp_path)
    with pytest.raises(OSError) as info:
        read_in_root(root, "/etc/passwd", limit=10)
    assert info.value.errno == errno.EFBIG


def test_make_dirs_creates_missing_directories_inside_the_root(tmp_path: Path) -> None:
    root = image(tmp_path)
    make_dirs_in_root(root, "/data/app/./x/../y")
    assert (root / "data" / "app" / "y").is_dir()
    assert (root / "data" / "app" / "x").is_dir()  # as mkdir -p does
    assert (root / "data" / "app").stat().st_mode & 0o777 == 0o755
    make_dirs_in_root(root, "/data/app/y")  # existing: fine


def test_make_dirs_through_an_escaping_symlink_stays_inside(tmp_path: Path) -> None:
    root = image(tmp_path)
    host = tmp_path / "host"
    host.mkdir()
    (root / "work").symlink_to(str(host))  # absolute: means <root>/<host path>
    (root / "up").symlink_to("../../../..")  # climbs no higher than the root
    make_dirs_in_root(root, "/work/app")
    make_dirs_in_root(root, "/up/made")
    assert list(host.iterdir()) == []
    assert (root / str(host).lstrip("/") / "app").is_dir()
    assert (root / "made").is_dir()


def test_make_dirs_over_a_file_fails_with_enotdir(tmp_path: Path) -> None:
    root = image(tmp_path)
    with pytest.raises(OSError) as info:
        make_dirs_in_root(root, "/etc/passwd/sub")
    assert info.value.errno == errno.ENOTDIR


def test_symlink_loops_end_with_eloop(tmp_path: Path) -> None:
    root = image(tmp_path)
    (root / "a").symlink_to("/b")
    (root / "b").symlink_to("/a")
    with pytest.raises(OSError) as info:
        os.close(open_in_root(root, "/a/x"))
    assert info.value.errno == errno.ELOOP

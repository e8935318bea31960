"""The fetcher's shared policy (caps, resume, errors) through FileFetcher; its pure parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvinit.errors import BadInputError, IntegrityError, NotFoundError, TransportError
from pvinit.transport.fetcher import (
    FileFetcher,
    HttpFetcher,
    RemoteNotFoundError,
    file_url_path,
    open_fetcher,
    parse_content_range,
)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "remote.bin"
    path.write_bytes(bytes(range(256)) * 40)  # 10240 bytes
    return path


def test_fetch_writes_the_whole_file_and_returns_bytes_received(source: Path,
                                                                  tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    received = FileFetcher().fetch(source.as_uri(), dest, max_bytes=10240)
    assert received == 10240
    assert dest.read_bytes() == source.read_bytes()


def test_plain_paths_work_like_file_urls(source: Path, tmp_path: Path) -> None:
    assert FileFetcher().fetch_bytes(str(source), max_bytes=1 << 20) == source.read_bytes()


def test_resume_continues_a_partial_file(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.write_bytes(source.read_bytes()[:4000])
    received = FileFetcher().fetch(str(source), dest, max_bytes=10240)
    assert received == 10240 - 4000
    assert dest.read_bytes() == source.read_bytes()


def test_without_resume_a_partial_file_is_replaced(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.write_bytes(b"x" * 4000)
    assert FileFetcher().fetch(str(source), dest, max_bytes=10240, resume=False) == 10240
    assert dest.read_bytes() == source.read_bytes()


def test_a_partial_longer_than_the_remote_restarts_from_zero(source: Path,
                                                             tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.write_bytes(b"y" * 10000)
    source.write_bytes(b"short")
    assert FileFetcher().fetch(str(source), dest, max_bytes=10240) == 5
    assert dest.read_bytes() == b"short"


def test_a_partial_longer_than_the_cap_is_dropped(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.write_bytes(b"y" * 20000)
    FileFetcher().fetch(str(source), dest, max_bytes=10240)
    assert dest.read_bytes() == source.read_bytes()


def test_a_file_over_the_cap_is_refused_and_the_partial_removed(source: Path,
                                                                tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError, match="more than the allowed 10239 bytes") as caught:
        FileFetcher().fetch(str(source), dest, max_bytes=10239)
    assert caught.value.where == str(source)
    assert not dest.exists()


def test_an_endless_source_is_cut_off_at_the_cap(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    seen: list[int] = []
    with pytest.raises(IntegrityError, match="runs on"):
        FileFetcher().fetch("/dev/zero", dest, max_bytes=3 << 20, on_chunk=seen.append)
    assert sum(seen) <= 3 << 20
    assert not dest.exists()


def test_fetch_bytes_refuses_more_than_the_cap(source: Path) -> None:
    with pytest.raises(IntegrityError, match="runs on"):
        FileFetcher().fetch_bytes(str(source), max_bytes=100)
    with pytest.raises(IntegrityError):
        FileFetcher().fetch_bytes("/dev/zero", max_bytes=1000)


def test_a_missing_file_is_remote_not_found_naming_it(tmp_path: Path) -> None:
    url = (tmp_path / "nope").as_uri()
    with pytest.raises(RemoteNotFoundError) as caught:
        FileFetcher().fetch(url, tmp_path / "dest", max_bytes=10)
    assert isinstance(caught.value, NotFoundError)
    assert caught.value.where == url
    assert not (tmp_path / "dest").exists()


def test_a_directory_is_a_transport_error(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="directory"):
        FileFetcher().fetch_bytes(str(tmp_path), max_bytes=10)


def test_on_chunk_sees_every_byte(source: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    FileFetcher().fetch(str(source), tmp_path / "dest", max_bytes=10240, on_chunk=seen.append)
    assert sum(seen) == 10240


def test_negative_cap_is_bad_input(source: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError):
        FileFetcher().fetch(str(source), tmp_path / "d", max_bytes=-1)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes 100-199/200", (100, 199, 200)),
        ("bytes 0-0/*", (0, 0, None)),
        ("bytes 5-4/10", None),
        ("bytes 5-10/10", None),
        ("items 1-2/3", None),
        ("bytes 1-2/3 ", (1, 2, 3)),
        (None, None),
    ],
)
def test_parse_content_range(header: str | None,
                             expected: tuple[int, int, int | None] | None) -> None:
    assert parse_content_range(header) == expected


def test_open_fetcher_picks_by_scheme() -> None:
    assert isinstance(open_fetcher("https://updates.example.com/fleet"), HttpFetcher)
    assert isinstance(open_fetcher("http://10.0.0.1:8080"), HttpFetcher)
    assert isinstance(open_fetcher("file:///srv/repo"), FileFetcher)
    assert isinstance(open_fetcher("/media/usb/repo"), FileFetcher)
    with pytest.raises(BadInputError, match="ftp"):
        open_fetcher("ftp://example.com/repo")


def test_file_url_path_unquotes_and_refuses_remote_hosts() -> None:
    assert file_url_path("file:///srv/my%20repo/x") == Path("/srv/my repo/x")
    assert file_url_path("file://localhost/srv/x") == Path("/srv/x")
    assert file_url_path("relative/x") == Path("relative/x")
    with pytest.raises(BadInputError):
        file_url_path("file://otherhost/srv/x")


def test_http_fetcher_refuses_a_non_http_url() -> None:
    with pytest.raises(BadInputError):
        HttpFetcher().fetch_bytes("ftp://example.com/x", max_bytes=10)

"""Size-capped, resumable downloads over HTTP(S) and from local files.

The shape follows python-tuf's ``FetcherInterface``: a subclass only knows
how to open a URL at an offset (:meth:`Fetcher._open`); the public
:meth:`Fetcher.fetch` and :meth:`Fetcher.fetch_bytes` own every policy a
device depends on, once for all transports:

* every failure of the remote becomes one :class:`TransportError` naming the
  URL (a timeout, a refused connection, a 5xx, a short read), except a
  missing file, which is :class:`RemoteNotFoundError` (the caller may have a
  fallback, e.g. a delta that was never published);
* ``max_bytes`` is enforced on what arrives, not on what the server claims:
  a ``Content-Length`` over the cap is refused before reading and an
  endless or oversized body is cut off one byte past the cap; both are an
  :class:`IntegrityError` (the remote serves something other than what was
  signed, so retrying will not help) and the partial file is dropped;
* with ``resume=True`` a partial ``dest`` is continued with an HTTP Range
  request; a server that ignores Range (200) or answers with another range
  restarts the file from zero.

Partial files are a cache, not state: they are appended without fsync,
because whatever they hold is hashed against a signed id before it can
enter the store, and a torn tail only costs a re-download.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import http.client
import os
import re
import ssl
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, TypeVar

from pvinit.errors import (
    BadInputError,
    IntegrityError,
    NoSpaceError,
    NotFoundError,
    PvError,
    TransportError,
)

CHUNK = 256 << 10
MAX_REDIRECTS = 5
DEFAULT_USER_AGENT = "pvinit-fetcher/1"
_T = TypeVar("_T")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})

#: Called with the byte count of every chunk received (progress, cancellation).
OnChunk = Callable[[int], None]


class RemoteNotFoundError(NotFoundError):
    """The remote has no such file (HTTP 404/410, or a missing local file)."""


class Response(abc.ABC):
    """An open body being received; what :meth:`Fetcher._open` returns.

    ``start`` is the offset of the first byte of the body in the whole file
    (0, or the requested offset when the server honoured a range);
    ``length`` is how many body bytes the server announced, when it did.
    """

    start: int = 0
    length: int | None = None

    @abc.abstractmethod
    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end of the body."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection or file."""

    def __enter__(self) -> Response:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _too_big(url: str, max_bytes: int, detail: str) -> IntegrityError:
    return IntegrityError(
        f"{detail}, more than the allowed {max_bytes} bytes; refused", where=url,
        hint="the remote serves something other than what was signed",
    )


class Fetcher(abc.ABC):
    """Downloads with the caps and error policy a device needs; see the module doc."""

    @abc.abstractmethod
    def _open(self, url: str, *, offset: int) -> Response:
        """Open ``url`` at ``offset`` (0 = whole file).

        May raise RemoteNotFoundError, TransportError, OSError or
        http.client.HTTPException; the public methods normalise the rest.
        """

    # -- public API ------------------------------------------------------------

    def fetch(
        self,
        url: str,
        dest: Path,
        *,
        max_bytes: int,
        resume: bool = True,
        on_chunk: OnChunk | None = None,
    ) -> int:
        """Download ``url`` into ``dest``; returns the bytes received by this call.

        ``dest`` ends up holding the whole file, at most ``max_bytes`` long.
        On a transport failure the partial ``dest`` is kept for a later
        resume; when the body is refused as too big it is removed.
        """
        if max_bytes < 0:
            raise BadInputError(f"max_bytes must be >= 0, not {max_bytes}", where=url)
        dest = Path(dest)
        offset = 0
        if resume:
            with contextlib.suppress(FileNotFoundError):
                offset = dest.stat().st_size
            if offset > max_bytes:  # a stale partial from another cap: start over
                _drop(dest)
                offset = 0
        else:
            _drop(dest)
        try:
            return self._normalised(url, lambda: self._download(
                url, dest, offset=offset, max_bytes=max_bytes, on_chunk=on_chunk))
        except IntegrityError:
            _drop(dest)
            raise

    def fetch_bytes(self, url: str, *, max_bytes: int) -> bytes:
        """The whole (small) file at ``url`` in memory, capped like :meth:`fetch`."""
        if max_bytes < 0:
            raise BadInputError(f"max_bytes must be >= 0, not {max_bytes}", where=url)
        return self._normalised(url, lambda: self._read_all(url, max_bytes))

    # -- the shared policy -----------------------------------------------------

    @staticmethod
    def _normalised(url: str, work: Callable[[], _T]) -> _T:
        try:
            return work()
        except PvError:
            raise
        except TimeoutError:
            raise TransportError("timed out", where=url, hint="retry later") from None
        except (OSError, http.client.HTTPException, ValueError) as error:
            detail = str(error) or type(error).__name__
            raise TransportError(f"download failed: {detail}", where=url,
                                 hint="retry later") from None

    def _read_all(self, url: str, max_bytes: int) -> bytes:
        chunks: list[bytes] = []
        with self._open(url, offset=0) as response:
            total = self._check_announced(url, response, 0, max_bytes)
            received = 0
            while True:
                chunk = response.read(min(CHUNK, max_bytes + 1 - received))
                if not chunk:
                    break
                received += len(chunk)
                if received > max_bytes:
                    raise _too_big(url, max_bytes, "the body runs on")
                chunks.append(chunk)
            _check_complete(url, received, total)
        return b"".join(chunks)

    def _download(
        self, url: str, dest: Path, *, offset: int, max_bytes: int, on_chunk: OnChunk | None
    ) -> int:
        response = self._open(url, offset=offset)
        with response:
            if response.start != offset:
                # The server ignored the range (200) or answered another one:
                # the partial file cannot be trusted to line up, start over.
                _drop(dest)
                offset = response.start
                if offset != 0:
                    raise TransportError(
                        f"server answered a range from byte {offset}, not the one asked for",
                        where=url,
                    )
            total = self._check_announced(url, response, offset, max_bytes)
            return self._receive(url, response, dest, offset=offset, max_bytes=max_bytes,
                                 expected=total, on_chunk=on_chunk)

    @staticmethod
    def _check_announced(url: str, response: Response, offset: int, max_bytes: int) -> int | None:
        """The file's full size if announced; refuses one over the cap before reading."""
        if response.length is None:
            return None
        total = offset + response.length
        if total > max_bytes:
            raise _too_big(url, max_bytes, f"the server announces {total} bytes")
        return total

    @staticmethod
    def _receive(
        url: str,
        response: Response,
        dest: Path,
        *,
        offset: int,
        max_bytes: int,
        expected: int | None,
        on_chunk: OnChunk | None,
    ) -> int:
        received = 0
        position = offset
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if offset else os.O_TRUNC)
        try:
            fd = os.open(dest, flags, 0o644)
        except OSError as error:
            raise _local_error(error, dest) from None
        try:
            while True:
                # Ask for one byte past the cap at most: enough to know it is exceeded.
                chunk = response.read(max(1, min(CHUNK, max_bytes + 1 - position)))
                if not chunk:
                    break
                position += len(chunk)
                received += len(chunk)
                if position > max_bytes:
                    raise _too_big(url, max_bytes, "the body runs on")
                try:
                    _write_all(fd, chunk)
                except OSError as error:
                    raise _local_error(error, dest) from None
                if on_chunk is not None:
                    on_chunk(len(chunk))
        finally:
            os.close(fd)
        _check_complete(url, position, expected)
        return received


def _check_complete(url: str, received: int, expected: int | None) -> None:
    if expected is not None and received < expected:
        raise TransportError(
            f"connection closed after {received} of {expected} bytes", where=url,
            hint="retry: the download resumes where it stopped",
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _local_error(error: OSError, dest: Path) -> PvError:
    if error.errno in _NO_SPACE:
        return NoSpaceError("no space left for the download", where=str(dest),
                            hint="run GC or free space")
    return PvError(f"cannot write the download: {error.strerror or error}", where=str(dest))


def _drop(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# -- HTTP(S) ------------------------------------------------------------------


class _Unsatisfiable(Exception):
    """HTTP 416 for a resume: the caller restarts from byte zero."""


class _HttpResponse(Response):
    def __init__(self, connection: http.client.HTTPConnection,
                 response: http.client.HTTPResponse, start: int, length: int | None) -> None:
        self._connection = connection
        self._response = response
        self.start = start
        self.length = length

    def read(self, size: int) -> bytes:
        return self._response.read(size)

    def close(self) -> None:
        self._response.close()
        self._connection.close()


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``(first, last, total)`` of a ``Content-Range: bytes a-b/n`` header, else None."""
    if value is None:
        return None
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first, last = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if last < first or (total is not None and last >= total):
        return None
    return first, last, total


def _content_length(response: http.client.HTTPResponse, url: str) -> int | None:
    value = response.getheader("Content-Length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise TransportError(f"bad Content-Length {value!r:.40}", where=url)
    return int(value)


class Authorizer(Protocol):
    """Adds credentials to requests and answers 401 challenges (a registry's auth)."""

    def headers_for(self, url: str) -> dict[str, str]:
        """Headers to add to a request for ``url`` (none for other origins)."""

    def challenge(self, url: str, www_authenticate: str | None) -> bool:
        """After a 401 for ``url``: True if new credentials make a retry worthwhile."""


class HttpFetcher(Fetcher):
    """HTTP and HTTPS on the standard library (``http.client``, default SSL context).

    One connection per download keeps the fetcher safe to share between
    threads.  Redirects are followed (at most :data:`MAX_REDIRECTS`, http
    and https only), so a CDN or a presigned object store URL works.
    """

    def __init__(self, timeout: float = 30.0, user_agent: str = DEFAULT_USER_AGENT,
                 ssl_context: ssl.SSLContext | None = None,
                 authorizer: Authorizer | None = None) -> None:
        self.timeout = timeout
        self.user_agent = user_agent
        self._ssl_context = ssl_context
        self.authorizer = authorizer

    def __repr__(self) -> str:
        return f"HttpFetcher(timeout={self.timeout!r})"

    def _connect(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        host = parts.hostname
        if not host:
            raise BadInputError("URL has no host", where=parts.geturl())
        if parts.scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(host, parts.port, timeout=self.timeout,
                                               context=context)
        return http.client.HTTPConnection(host, parts.port, timeout=self.timeout)

    def _open(self, url: str, *, offset: int) -> Response:
        try:
            return self._open_at(url, offset)
        except _Unsatisfiable:
            # The partial file is as long as (or longer than) the remote one:
            # it cannot be told complete, so fetch the whole file again.
            return self._open_at(url, 0)

    def _open_at(self, url: str, offset: int) -> Response:
        current = url
        challenged = False
        for _ in range(MAX_REDIRECTS + 2):
            parts = urllib.parse.urlsplit(current)
            if parts.scheme not in ("http", "https"):
                raise BadInputError(f"not an http(s) URL: {current!r:.200}", where=url)
            connection = self._connect(parts)
            try:
                target = parts.path or "/"
                if parts.query:
                    target = f"{target}?{parts.query}"
                headers = {"User-Agent": self.user_agent, "Accept-Encoding": "identity"}
                if offset:
                    headers["Range"] = f"bytes={offset}-"
                if self.authorizer is not None:
                    headers.update(self.authorizer.headers_for(current))
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                status = response.status
                if status == 401 and self.authorizer is not None and not challenged:
                    challenged = True
                    if self.authorizer.challenge(current,
                                                 response.getheader("WWW-Authenticate")):
                        connection.close()
                        continue
                if status in (301, 302, 303, 307, 308):
                    location = response.getheader("Location")
                    if not location:
                        raise TransportError(f"HTTP {status} without a Location", where=current)
                    current = urllib.parse.urljoin(current, location)
                    connection.close()
                    continue
                opened = self._accept(current, offset, response, connection)
            except BaseException:
                connection.close()
                raise
            return opened
        raise TransportError(f"more than {MAX_REDIRECTS} redirects", where=url)

    @staticmethod
    def _accept(url: str, offset: int, response: http.client.HTTPResponse,
                connection: http.client.HTTPConnection) -> Response:
        status = response.status
        if status == 200:
            return _HttpResponse(connection, response, 0, _content_length(response, url))
        if status == 206 and offset:
            parsed = parse_content_range(response.getheader("Content-Range"))
            if parsed is None:
                raise TransportError("HTTP 206 without a usable Content-Range", where=url)
            first, last, _total = parsed
            return _HttpResponse(connection, response, first, last - first + 1)
        if status == 416 and offset:
            raise _Unsatisfiable
        if status in (404, 410):
            raise RemoteNotFoundError(f"HTTP {status}: not on the remote", where=url)
        raise TransportError(f"HTTP {status} {response.reason}".rstrip(), where=url,
                             hint="retry later" if status >= 500 else None)


# -- local files ------------------------------------------------------------------


class _FileResponse(Response):
    def __init__(self, handle: BinaryIO, start: int) -> None:
        self._handle = handle
        self.start = start
        self.length = None  # a growing or endless file (a FIFO, /dev/zero) is capped as read

    def read(self, size: int) -> bytes:
        return self._handle.read(size)

    def close(self) -> None:
        self._handle.close()


def file_url_path(url: str) -> Path:
    """The local path of a ``file://`` URL or of a plain path."""
    if url.startswith("file:"):
        parts = urllib.parse.urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise BadInputError("a file URL must name a local path", where=url)
        return Path(urllib.parse.unquote(parts.path))
    return Path(url)


class FileFetcher(Fetcher):
    """``file://`` URLs and plain paths (a USB stick, an NFS mount), with the same caps."""

    def __repr__(self) -> str:
        return "FileFetcher()"

    def _open(self, url: str, *, offset: int) -> Response:
        path = file_url_path(url)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the response
        except FileNotFoundError:
            raise RemoteNotFoundError("no such file", where=url) from None
        except IsADirectoryError:
            raise TransportError("is a directory, not a file", where=url) from None
        try:
            start = 0
            if offset and handle.seekable() and offset <= os.fstat(handle.fileno()).st_size:
                handle.seek(offset)
                start = offset
            return _FileResponse(handle, start)
        except BaseException:
            handle.close()
            raise


def open_fetcher(base_url: str, *, timeout: float = 30.0) -> Fetcher:
    """The fetcher for a remote: HTTP(S), or local for ``file://`` URLs and paths."""
    scheme = urllib.parse.urlsplit(base_url).scheme.lower()
    if scheme in ("http", "https"):
        return HttpFetcher(timeout=timeout)
    if scheme in ("", "file"):
        return FileFetcher()
    raise BadInputError(
        f"unsupported remote scheme {scheme!r}: use http://, https://, file:// or a path",
        where=base_url,
    )

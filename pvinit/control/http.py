"""Just enough HTTP/1.1 for the control socket: parse a request head, frame a response (pure).

Why not :mod:`http.server`: it costs PID 1's supervisor ~10 MB and wants a
thread or a blocking loop per connection.  The control API needs one request
per connection (``Connection: close``), ``Content-Length`` bodies and
chunked responses for ``logs?follow=1`` — a few dozen lines of parsing that
can be tested with plain bytes.

Every way a request can be malformed maps to one :class:`HttpError` with
the status a client expects (400, 405, 411, 413, 414, 431, 505) and a
message that says what was wrong.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, unquote

from pvinit.record import field, record

#: Longest request line (method, target, version) before 414.
MAX_REQUEST_LINE = 8 * 1024
#: Longest request head (request line + headers) before 431.
MAX_HEAD = 16 * 1024
MAX_HEADERS = 64
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})

REASONS = {
    200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
    415: "Unsupported Media Type", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
    507: "Insufficient Storage",
}  # fmt: skip


class HttpError(Exception):
    """A request the server answers with ``status`` and a JSON error body."""

    def __init__(self, status: int, error: str, message: str,
                 headers: dict[str, str] | None = None, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> Response:
        body: dict[str, object] = {"error": self.error, "message": self.message, **self.extra}
        return Response.json(self.status, body, headers=self.headers)


@record(frozen=True)
class RequestHead:
    method: str
    path: str
    """Percent-decoded path, without the query."""
    query: dict[str, str]
    version: str
    headers: dict[str, str]
    """Header names lower-cased; a repeated header keeps its last value."""

    @property
    def content_length(self) -> int | None:
        raw = self.headers.get("content-length")
        if raw is None:
            return None
        if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
            raise HttpError(400, "BadRequest", f"bad Content-Length: {raw[:40]!r}")
        return int(raw)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def check_request_line(line: bytes) -> None:
    """Refuse a request line as soon as it is complete (HTTP/0.9 clients never send a head)."""
    if len(line) > MAX_REQUEST_LINE:
        raise HttpError(414, "UriTooLong", f"request line longer than {MAX_REQUEST_LINE} bytes")
    try:
        text = line.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError:
        raise HttpError(400, "BadRequest", "request line is not ASCII") from None
    parts = text.split(" ")
    if len(parts) == 2 and parts[0] in METHODS:
        raise HttpError(505, "HttpVersion", "HTTP/0.9 is not supported: send HTTP/1.1")
    if len(parts) != 3:
        raise HttpError(400, "BadRequest", f"malformed request line: {text[:80]!r}")
    method, target, version = parts
    if method not in METHODS:
        raise HttpError(400, "BadRequest", f"unknown method {method[:20]!r}")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        if version.startswith("HTTP/"):
            raise HttpError(505, "HttpVersion", f"{version[:20]} is not supported: use HTTP/1.1")
        raise HttpError(400, "BadRequest", f"bad protocol version {version[:20]!r}")
    if not target.startswith("/"):
        raise HttpError(400, "BadRequest", "request target must be an absolute path")


def parse_head(data: bytes) -> RequestHead:
    """Parse the bytes up to (not including) the blank line that ends a request head."""
    lines = data.split(b"\r\n") if b"\r\n" in data else data.split(b"\n")
    check_request_line(lines[0])
    method, target, version = lines[0].decode("ascii").split(" ")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "HeadersTooLarge", f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        try:
            text = raw.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
            raise HttpError(400, "BadRequest", "undecodable header") from None
        name, colon, value = text.partition(":")
        if not colon or not name or name != name.strip() or any(c in name for c in " \t\0"):
            raise HttpError(400, "BadRequest", f"malformed header line: {text[:60]!r}")
        if any(c in value for c in "\0\r\n"):
            raise HttpError(400, "BadRequest", f"bad character in header {name[:40]!r}")
        headers[name.lower()] = value.strip()
    if version == "HTTP/1.1" and "host" not in headers:
        headers["host"] = ""  # curl sends one; a missing Host on a local socket is harmless
    raw_path, _, raw_query = target.partition("?")
    path = unquote(raw_path, errors="strict") if "%" in raw_path else raw_path
    try:
        query = dict(parse_qsl(raw_query, keep_blank_values=True, errors="strict"))
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "BadRequest", "malformed query string") from None
    head = RequestHead(method, path, query, version, headers)
    if "transfer-encoding" in headers:
        raise HttpError(411, "LengthRequired",
                        "chunked request bodies are not supported: send Content-Length")
    head.content_length  # noqa: B018 - validates the header now
    return head


@record(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: object, *, headers: dict[str, str] | None = None) -> Response:
        data = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str) + "\n"
        return cls(status, data.encode(), headers=dict(headers or {}))

    def head_bytes(self, *, chunked: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}",
                 f"Content-Type: {self.content_type}", "Connection: close"]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {len(self.body)}")
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def to_bytes(self, *, head_only: bool = False) -> bytes:
        return self.head_bytes() + (b"" if head_only else self.body)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked response (an empty ``data`` ends the stream)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def parse_json_body(body: bytes, *, where: str) -> dict[str, object]:
    """A JSON object from a request body (an empty body reads as ``{}``)."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise HttpError(400, "BadJson", f"{where}: body is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise HttpError(400, "BadJson", f"{where}: body must be a JSON object")
    return value

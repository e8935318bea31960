"""Talking to an OCI distribution registry over ``http.client``: auth, blobs, manifests.

Registries guard the API with HTTP auth in one of two ways: Basic on every
request (distribution's htpasswd), or the token flow (Docker Hub, GHCR,
Harbor): a 401 with ``WWW-Authenticate: Bearer realm=...,service=...,
scope=...`` sends the client to the realm for a short-lived token, with
Basic credentials or anonymously.  :class:`RegistryAuthorizer` does both,
plus a static bearer token from the device settings.

Credentials are only ever sent to the registry's own origin: registries
redirect blob GETs to object stores and CDNs with presigned URLs, which
refuse (or would leak) an ``Authorization`` header.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import urllib.parse
from typing import BinaryIO

from pvinit.errors import BadInputError, NotFoundError, TransportError
from pvinit.remote.oci import OciTarget
from pvinit.transport.auth import RegistryAuth

MAX_TOKEN_BYTES = 1 << 20
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    """``('bearer', {'realm': ..., ...})`` from a WWW-Authenticate header (first challenge)."""
    scheme, _, rest = value.strip().partition(" ")
    params = {m[1].lower(): m[2] if m[2] else m[3] for m in _PARAM.finditer(rest)}
    return scheme.lower(), params


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname or "", port


class RegistryAuthorizer:
    """Adds ``Authorization`` to requests for one registry; answers its 401 challenges.

    Thread-safe: the fetcher downloads several blobs at once.
    """

    def __init__(self, base_url: str, auth: RegistryAuth | None = None, *,
                 timeout: float = 30.0) -> None:
        self.origin = _origin(base_url)
        self.auth = auth or RegistryAuth()
        self.timeout = timeout
        self._lock = threading.Lock()
        self._header: str | None = (f"Bearer {self.auth.token}" if self.auth.token
                                    else self.auth.basic())

    def headers_for(self, url: str) -> dict[str, str]:
        with self._lock:
            header = self._header
        if header is None or _origin(url) != self.origin:
            return {}
        return {"Authorization": header}

    def challenge(self, url: str, www_authenticate: str | None) -> bool:
        """Update credentials after a 401; True when the request is worth retrying."""
        if www_authenticate is None or _origin(url) != self.origin:
            return False
        scheme, params = parse_challenge(www_authenticate)
        if scheme == "basic":
            basic = self.auth.basic()
            with self._lock:
                if basic is None or self._header == basic:
                    return False
                self._header = basic
            return True
        if scheme == "bearer" and params.get("realm"):
            token = self._token(params)
            with self._lock:
                if self._header == f"Bearer {token}":
                    return False
                self._header = f"Bearer {token}"
            return True
        return False

    def _token(self, params: dict[str, str]) -> str:
        realm = params["realm"]
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {}
        basic = self.auth.basic()
        if basic is not None:
            headers["Authorization"] = basic
        status, _, body = request(url, "GET", headers=headers, timeout=self.timeout,
                                  max_body=MAX_TOKEN_BYTES)
        if status != 200:
            raise TransportError(f"token server answered HTTP {status}", where=realm,
                                 hint="check the registry credentials")
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise TransportError("token server sent no token", where=realm)
        return token


def request(url: str, method: str, *, headers: dict[str, str] | None = None,
            body: bytes | BinaryIO | None = None, timeout: float = 30.0,
            max_body: int = 1 << 20) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTP request on its own connection: (status, headers, body up to ``max_body``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInputError("not an http(s) URL", where=url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        data = b"" if method == "HEAD" else response.read(max_body + 1)
        if len(data) > max_body:
            raise TransportError(f"response over {max_body} bytes", where=url)
        return response.status, response.headers, data
    except TimeoutError:
        raise TransportError("timed out", where=url, hint="retry later") from None
    except (OSError, http.client.HTTPException) as error:
        raise TransportError(f"request failed: {error or type(error).__name__}",
                             where=url, hint="retry later") from None
    finally:
        connection.close()


class RegistryClient:
    """The few registry API calls a publisher needs (distribution spec v1.0 push)."""

    def __init__(self, target: OciTarget, auth: RegistryAuth | None = None, *,
                 timeout: float = 60.0) -> None:
        self.target = target
        self.timeout = timeout
        self.authorizer = RegistryAuthorizer(target.base_url, auth, timeout=timeout)

    def _call(self, method: str, url: str, *, headers: dict[str, str] | None = None,
              body: bytes | BinaryIO | None = None, max_body: int = 1 << 20,
              ) -> tuple[int, http.client.HTTPMessage, bytes]:
        for attempt in range(2):
            if attempt and hasattr(body, "seek"):
                body.seek(0)  # type: ignore[union-attr]
            sent = {**(headers or {}), **self.authorizer.headers_for(url)}
            status, head, data = request(url, method, headers=sent, body=body,
                                         timeout=self.timeout, max_body=max_body)
            if status == 401 and attempt == 0 and \
                    self.authorizer.challenge(url, head.get("WWW-Authenticate")):
                continue
            if status == 401:
                raise TransportError("the registry refused our credentials (HTTP 401)",
                                     where=url, hint="set PVSTATE_REGISTRY_USER/_PASSWORD "
                                                     "or PVSTATE_REGISTRY_TOKEN")
            return status, head, data
        raise AssertionError("unreachable")

    def _fail(self, what: str, url: str, status: int, data: bytes) -> TransportError:
        return TransportError(f"{what}: HTTP {status} {data[:200]!r}", where=url,
                              hint="retry later" if status >= 500 else None)

    def blob_exists(self, digest: str) -> bool:
        url = self.target.api(f"blobs/{digest}")
        status, _, data = self._call("HEAD", url)
        if status == 200:
            return True
        if status == 404:
            return False
        raise self._fail("cannot check a blob", url, status, data)

    def get_blob(self, digest: str, *, max_bytes: int) -> bytes:
        url = self.target.api(f"blobs/{digest}")
        for _ in range(5):  # follow redirects to object stores, without our credentials
            status, head, data = self._call("GET", url, max_body=max_bytes)
            if status in (301, 302, 303, 307, 308) and head.get("Location"):
                url = urllib.parse.urljoin(url, head["Location"])
                continue
            if status == 404:
                raise NotFoundError("no such blob on the registry", where=url)
            if status != 200:
                raise self._fail("cannot read a blob", url, status, data)
            return data
        raise TransportError("too many redirects", where=url)

    def upload_blob(self, digest: str, size: int, body: bytes | BinaryIO) -> None:
        """Monolithic upload: POST a session, PUT the bytes with their digest."""
        url = self.target.api("blobs/uploads/")
        status, head, data = self._call("POST", url, headers={"Content-Length": "0"})
        location = head.get("Location")
        if status != 202 or not location:
            raise self._fail("cannot start a blob upload", url, status, data)
        put = urllib.parse.urljoin(url, location)
        put += ("&" if "?" in put else "?") + urllib.parse.urlencode({"digest": digest})
        status, _, data = self._call("PUT", put, body=body, headers={
            "Content-Type": "application/octet-stream", "Content-Length": str(size)})
        if status != 201:
            raise self._fail("blob upload refused", put, status, data)

    def get_manifest(self, reference: str, media_type: str, *, max_bytes: int) -> bytes | None:
        url = self.target.api(f"manifests/{reference}")
        status, _, data = self._call("GET", url, headers={"Accept": media_type},
                                     max_body=max_bytes)
        if status == 404:
            return None
        if status != 200:
            raise self._fail("cannot read a manifest", url, status, data)
        return data

    def put_manifest(self, reference: str, media_type: str, data: bytes) -> None:
        url = self.target.api(f"manifests/{reference}")
        status, _, answer = self._call("PUT", url, body=data, headers={
            "Content-Type": media_type, "Content-Length": str(len(data))})
        if status != 201:
            raise self._fail("manifest refused", url, status, answer)


__all__ = [
    "RegistryAuth",
    "RegistryAuthorizer",
    "RegistryClient",
    "parse_challenge",
    "request",
]

"""Pulling an image from a registry over the distribution HTTP API v2.

``docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`` is pulled into a scratch
OCI image layout (manifest, config and layer blobs under ``blobs/sha256``)
and then read by :class:`pvinit.build.oci.OciLayout` like any local layout:
one code path checks every digest, whatever the source.  While pulling,
each blob is hashed as it arrives and cut off one byte past the size its
descriptor gives; a manifest fetched by tag is checked against the
``Docker-Content-Digest`` the registry announces, one fetched by digest
against that digest.

Transport: HTTPS, except for loopback hosts (``localhost``, ``127.*``,
``::1``) and when ``insecure=True``, which use plain HTTP, as Docker treats
loopback registries.  Authentication follows the registry's ``401``
challenge: ``Basic`` sends the credentials; ``Bearer realm=...,service=...,
scope=...`` first fetches a token from the realm (with the credentials when
there are some, anonymously otherwise).  Credentials come from an auth file
in the format ``docker login``/``skopeo login`` write
(``{"auths": {"HOST": {"auth": base64("user:password")}}}``): the file
given, else ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``
or ``~/.docker/config.json``.  They are never sent to another host a
redirect points to.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import json
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

from pvinit.build.oci import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_JSON_BYTES,
    REF_NAME,
    Descriptor,
    Image,
    OciLayout,
    check_digest,
    parse_json,
    select_platform,
)
from pvinit.errors import (
    BadInputError,
    IntegrityError,
    NotFoundError,
    RefusedError,
    TransportError,
)
from pvinit.record import record

ACCEPT = ", ".join(sorted(MANIFEST_TYPES | INDEX_TYPES))
MAX_REDIRECTS = 5
_CHUNK = 1 << 20
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:]+\](?::[0-9]{1,5})?")
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@record(frozen=True)
class RegistryRef:
    """``HOST[:PORT]/REPO[:TAG|@DIGEST]``: where an image lives in a registry."""

    host: str
    repository: str
    reference: str

    @classmethod
    def parse(cls, text: str) -> RegistryRef:
        where = f"docker://{text}"
        host, sep, rest = text.partition("/")
        if not sep or not rest or not _HOST.fullmatch(host):
            raise BadInputError("expected docker://HOST[:PORT]/REPO[:TAG|@DIGEST]", where=where)
        if "@" in rest:
            repository, _, reference = rest.partition("@")
            check_digest(reference, where=where)
        else:
            repository, colon, tag = rest.rpartition(":")
            if not colon or "/" in tag:
                repository, tag = rest, "latest"
            if not _TAG.fullmatch(tag):
                raise BadInputError(f"bad tag {tag!r}", where=where)
            reference = tag
        if host == "docker.io":
            host = "registry-1.docker.io"
            if "/" not in repository:
                repository = f"library/{repository}"
        if not _REPO.fullmatch(repository):
            raise BadInputError(f"bad repository name {repository!r}", where=where)
        return cls(host=host, repository=repository, reference=reference)

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"docker://{self.host}/{self.repository}{sep}{self.reference}"


def is_loopback(host: str) -> bool:
    """Whether ``host[:port]`` names this machine (plain HTTP is allowed there)."""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def load_credentials(host: str, authfile: Path | None = None) -> tuple[str, str] | None:
    """(user, password) for ``host`` from the first auth file found, if any."""
    if authfile is not None:
        candidates = [authfile]
    else:
        candidates = []
        if os.environ.get("REGISTRY_AUTH_FILE"):
            candidates.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
        if os.environ.get("XDG_RUNTIME_DIR"):
            candidates.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
        candidates.append(Path.home() / ".docker" / "config.json")
    for path in candidates:
        if not path.is_file():
            if authfile is not None:
                raise NotFoundError("no such auth file", where=str(path))
            continue
        doc = parse_json(path.read_bytes()[:MAX_JSON_BYTES], where=str(path))
        auths = doc.get("auths") if isinstance(doc, dict) else None
        if not isinstance(auths, dict):
            raise BadInputError("an auth file needs an 'auths' object", where=str(path))
        for key in (host, f"https://{host}", f"http://{host}"):
            entry = auths.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
                try:
                    user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError) as exc:
                    raise BadInputError(f"bad auth entry for {host}: {exc}",
                                        where=str(path)) from exc
                if not sep:
                    raise BadInputError(f"auth entry for {host} is not user:password",
                                        where=str(path))
                return user, password
    return None


class RegistryClient:
    """The few registry API calls a pull needs, with auth and redirects."""

    def __init__(
        self,
        ref: RegistryRef,
        *,
        credentials: tuple[str, str] | None = None,
        insecure: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self.ref = ref
        self.scheme = "http" if insecure or is_loopback(ref.host) else "https"
        self.credentials = credentials
        self.timeout = timeout
        self.authorization: str | None = None

    def url(self, kind: str, reference: str) -> str:
        return f"{self.scheme}://{self.ref.host}/v2/{self.ref.repository}/{kind}/{reference}"

    def get(self, url: str, *, accept: str | None = None) -> http.client.HTTPResponse:
        """An open 200 response for ``url`` (auth challenge answered, redirects followed)."""
        headers = {"User-Agent": "pvstate", "Accept": accept or "*/*"}
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(url, headers)
            if response.status == 401 and self.authorization is None \
                    and self._same_host(url):
                challenge = response.getheader("WWW-Authenticate", "")
                response.close()
                self.authorization = self._answer(challenge, url)
                response = self._request(url, headers)
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                response.close()
                if not location:
                    raise TransportError("redirect without Location", where=url)
                url = urllib.parse.urljoin(url, location)
                continue
            if response.status == 200:
                return response
            response.close()
            if response.status in (404, 410):
                raise NotFoundError(f"the registry has no such image or blob ({url})",
                                    where=str(self.ref))
            if response.status in (401, 403):
                raise RefusedError(
                    f"the registry refused access (HTTP {response.status})", where=str(self.ref),
                    hint="log in with an auth file (--authfile, as written by skopeo login)",
                )
            raise TransportError(f"HTTP {response.status} {response.reason}", where=url)
        raise TransportError("too many redirects", where=url)

    def _same_host(self, url: str) -> bool:
        return urllib.parse.urlsplit(url).netloc == self.ref.host

    def _request(self, url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        parts = urllib.parse.urlsplit(url)
        send = dict(headers)
        if self.authorization is not None and parts.netloc == self.ref.host:
            send["Authorization"] = self.authorization
        connection_class = (http.client.HTTPSConnection if parts.scheme == "https"
                            else http.client.HTTPConnection)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            connection = connection_class(parts.netloc, timeout=self.timeout)
            connection.request("GET", target, headers=send)
            return connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"cannot reach the registry: {exc}", where=url) from exc

    def _answer(self, challenge: str, url: str) -> str:
        """The Authorization header that answers a 401 ``challenge``."""
        scheme = challenge.split(" ", 1)[0].lower()
        basic = None
        if self.credentials is not None:
            user, password = self.credentials
            basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if scheme == "basic":
            if basic is None:
                raise RefusedError("the registry wants a user and password", where=str(self.ref),
                                   hint="give an auth file with --authfile")
            return basic
        if scheme != "bearer":
            raise RefusedError(f"unsupported authentication {challenge!r}", where=url)
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise TransportError(f"bad token realm in challenge {challenge!r}", where=url)
        params.setdefault("scope", f"repository:{self.ref.repository}:pull")
        token_url = f"{realm}{'&' if '?' in realm else '?'}{urllib.parse.urlencode(params)}"
        token_parts = urllib.parse.urlsplit(token_url)
        headers = {"User-Agent": "pvstate", "Accept": "application/json"}
        if basic is not None:
            headers["Authorization"] = basic
        connection_class = (http.client.HTTPSConnection if token_parts.scheme == "https"
                            else http.client.HTTPConnection)
        try:
            connection = connection_class(token_parts.netloc, timeout=self.timeout)
            connection.request("GET", token_url[len(f"{token_parts.scheme}://"
                                                    f"{token_parts.netloc}"):] or "/",
                               headers=headers)
            response = connection.getresponse()
            body = response.read(MAX_JSON_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"cannot reach the token service: {exc}", where=realm) from exc
        if response.status != 200:
            raise RefusedError(f"the token service refused (HTTP {response.status})",
                               where=realm, hint="check the credentials in the auth file")
        doc = parse_json(body[:MAX_JSON_BYTES], where=realm)
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise TransportError("the token service answered without a token", where=realm)
        return f"Bearer {token}"

    def manifest(self, reference: str) -> tuple[Descriptor, bytes]:
        """A manifest or index, checked against its digest, with its descriptor."""
        url = self.url("manifests", reference)
        with self.get(url, accept=ACCEPT) as response:
            body = response.read(MAX_JSON_BYTES + 1)
            announced = response.getheader("Docker-Content-Digest")
            content_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
        if len(body) > MAX_JSON_BYTES:
            raise BadInputError("manifest is too big", where=url)
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        expected = reference if reference.startswith("sha256:") else announced
        if expected is not None and expected.startswith("sha256:") and actual != expected:
            raise IntegrityError(f"manifest content is {actual}", where=expected)
        doc = parse_json(body, where=url)
        media_type = doc.get("mediaType") if isinstance(doc, dict) else None
        if not isinstance(media_type, str) or not media_type:
            media_type = content_type
        if media_type not in MANIFEST_TYPES | INDEX_TYPES:
            raise BadInputError(f"unsupported manifest type {media_type!r}", where=url)
        return Descriptor(media_type=media_type, digest=actual, size=len(body)), body

    def blob(self, desc: Descriptor, dest: Path) -> None:
        """Download a blob to ``dest``, refusing more bytes than, or others than, described."""
        hexdigest = check_digest(desc.digest, where=str(self.ref))
        digest = hashlib.sha256()
        received = 0
        with self.get(self.url("blobs", desc.digest)) as response, dest.open("wb") as out:
            while chunk := response.read(min(_CHUNK, desc.size - received + 1)):
                received += len(chunk)
                if received > desc.size:
                    raise IntegrityError(f"blob is larger than its {desc.size} bytes",
                                         where=desc.digest)
                digest.update(chunk)
                out.write(chunk)
        if received != desc.size:
            raise IntegrityError(f"blob ended after {received} of {desc.size} bytes",
                                 where=desc.digest)
        if digest.hexdigest() != hexdigest:
            raise IntegrityError("blob content does not match its digest", where=desc.digest)


def pull(
    ref: RegistryRef,
    layout: Path,
    *,
    credentials: tuple[str, str] | None = None,
    insecure: bool = False,
) -> Image:
    """Pull ``ref`` (this machine's platform) into a new OCI layout at ``layout``."""
    client = RegistryClient(ref, credentials=credentials, insecure=insecure)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def store(desc: Descriptor, body: bytes) -> None:
        (blobs / check_digest(desc.digest, where=str(ref))).write_bytes(body)

    top, body = client.manifest(ref.reference)
    store(top, body)
    manifest_desc, manifest_body = top, body
    if top.media_type in INDEX_TYPES:
        doc: Any = parse_json(body, where=top.digest)
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise BadInputError("an index must have a 'manifests' list", where=top.digest)
        child = select_platform(
            [Descriptor.from_dict(m, where=f"{top.digest}: manifests[{i}]")
             for i, m in enumerate(doc["manifests"])], where=top.digest)
        manifest_desc, manifest_body = client.manifest(child.digest)
        store(manifest_desc, manifest_body)
    manifest = parse_json(manifest_body, where=manifest_desc.digest)
    if not isinstance(manifest, dict):
        raise BadInputError("not an image manifest", where=manifest_desc.digest)
    for i, item in enumerate([manifest.get("config"), *(manifest.get("layers") or [])]):
        desc = Descriptor.from_dict(item, where=f"{manifest_desc.digest}: blob {i}")
        target = blobs / check_digest(desc.digest, where=manifest_desc.digest)
        if not target.exists():
            client.blob(desc, target)
    index = {"schemaVersion": 2, "manifests": [
        {**top.to_dict(), "annotations": {REF_NAME: "pulled"}}]}
    (layout / "index.json").write_text(json.dumps(index))
    image = OciLayout(layout).image("pulled")
    return Image(config=image.config, layers=image.layers, origin=str(ref))

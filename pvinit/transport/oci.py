"""A remote repository held by an OCI registry, seen from a device.

:class:`OciRemoteRepository` is a :class:`RemoteRepository` whose layout
paths resolve through the revision manifest (:mod:`pvinit.remote.oci`):
``channels/<name>`` is the manifest tagged ``<name>`` and its config blob,
``objects/<id>`` and ``deltas/<a>-<b>`` are the blobs the manifest's
annotations name.  Everything after that is the static remote's code: the
same size caps (``compressed_bound`` of the *signed* size), the same
decompression and hashing into the store, the same delta fallback, and
the update engine checks signatures and trust as for any other source.

The annotations are not trusted: a registry that names the wrong blob
for an object only makes the download fail its hash check.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

from pvinit.errors import IntegrityError
from pvinit.objects.store import ObjectStore
from pvinit.remote import layout
from pvinit.remote.oci import (
    MANIFEST_MEDIA_TYPE,
    MAX_MANIFEST_BYTES,
    OciTarget,
    RevisionManifest,
    channel_tag,
    is_oci_url,
    revision_tag,
)
from pvinit.transport.fetcher import (
    DEFAULT_USER_AGENT,
    Fetcher,
    HttpFetcher,
    RemoteNotFoundError,
    open_fetcher,
)
from pvinit.transport.registry import RegistryAuth, RegistryClient
from pvinit.transport.remote import RemoteRepository
from pvinit.transport.wants import ObjectWant


class OciRemoteRepository(RemoteRepository):
    """The channels, revisions, objects and deltas of ``oci://HOST/REPO``."""

    def __init__(self, target: OciTarget, *, auth: RegistryAuth | None = None,
                 timeout: float = 30.0, user_agent: str = DEFAULT_USER_AGENT) -> None:
        self.target = target
        self.client = RegistryClient(target, auth, timeout=timeout)
        fetcher = HttpFetcher(timeout=timeout, user_agent=user_agent,
                              authorizer=self.client.authorizer)
        super().__init__(target.api("").rstrip("/"), fetcher)
        self._lock = threading.Lock()
        self._objects: dict[str, str] = {}
        self._deltas: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return f"OciRemoteRepository({str(self.target)!r})"

    def url(self, relative: str) -> str:
        """The URL of a layout path: a manifest, or the blob the last manifest read names."""
        kind, _, name = relative.partition("/")
        if kind == "channels":
            return self.target.api(f"manifests/{name}")
        if kind == "revisions":
            return self.target.api(f"manifests/{revision_tag(int(name.removesuffix('.json')))}")
        with self._lock:
            if kind == "objects":
                digest = self._objects.get(name)
            elif kind == "deltas":
                base, _, target = name.partition("-")
                digest = self._deltas.get((base, target))
            else:
                digest = None
        if digest is None:
            raise RemoteNotFoundError("no manifest read so far names this blob",
                                      where=f"{self.target} {relative}")
        return self.target.api(f"blobs/{digest}")

    # -- metadata -------------------------------------------------------------------

    def manifest(self, reference: str) -> RevisionManifest:
        """Read and index a revision manifest (by tag); its blobs become fetchable."""
        where = self.target.api(f"manifests/{reference}")
        data = self.client.get_manifest(reference, MANIFEST_MEDIA_TYPE,
                                        max_bytes=MAX_MANIFEST_BYTES)
        if data is None:
            raise RemoteNotFoundError("no such tag on the registry", where=where)
        parsed = RevisionManifest.from_bytes(data, where=where)
        with self._lock:
            self._objects.update((oid, d.digest) for oid, d in parsed.objects.items())
            self._deltas.update((pair, d.digest) for pair, d in parsed.deltas.items())
        return parsed

    def _envelope(self, parsed: RevisionManifest) -> bytes:
        url = self.target.api(f"blobs/{parsed.envelope.digest}")
        data = self.fetcher.fetch_bytes(url, max_bytes=min(parsed.envelope.size,
                                                           layout.MAX_ENVELOPE_BYTES))
        if "sha256:" + hashlib.sha256(data).hexdigest() != parsed.envelope.digest:
            raise IntegrityError("envelope blob does not match its digest", where=url)
        return data

    def channel(self, name: str) -> bytes:
        return self._envelope(self.manifest(channel_tag(name)))

    def revision(self, number: int) -> bytes:
        return self._envelope(self.manifest(revision_tag(number)))

    # -- objects: the base class, with deltas only when a manifest lists them ----------

    def _try_delta(self, want: ObjectWant, base: str, store: ObjectStore, workdir: Path,
                   on_chunk: Callable[[int], None] | None) -> tuple[bool, int]:
        with self._lock:
            listed = (base, want.id) in self._deltas
        if not listed:
            return False, 0
        return super()._try_delta(want, base, store, workdir, on_chunk)


def open_remote(url: str, *, auth: RegistryAuth | None = None, timeout: float = 30.0,
                user_agent: str = DEFAULT_USER_AGENT) -> RemoteRepository:
    """The remote repository at ``url``: ``oci://HOST/REPO``, http(s)://, file:// or a path.

    The one entry point the update worker needs: whichever remote, the
    same :class:`~pvinit.transport.sources.RemoteSource` and engine run.
    """
    if is_oci_url(url):
        return OciRemoteRepository(OciTarget.parse(url), auth=auth, timeout=timeout,
                                   user_agent=user_agent)
    fetcher: Fetcher = open_fetcher(url, timeout=timeout)
    if isinstance(fetcher, HttpFetcher):
        fetcher.user_agent = user_agent
        if auth is not None:
            from pvinit.transport.registry import RegistryAuthorizer

            fetcher.authorizer = RegistryAuthorizer(url, auth, timeout=timeout)
    return RemoteRepository(url, fetcher)


__all__ = ["OciRemoteRepository", "open_remote"]

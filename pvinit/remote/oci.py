"""The remote repository mapped onto an OCI distribution registry (pure rules, no I/O).

A team that already runs a registry (distribution, Harbor, GHCR, ECR, ...)
can serve a fleet from it: the registry stores content-addressed blobs and
small JSON manifests pointing at them, which is what a pvinit remote is.

::

    oci://HOST[:PORT]/REPO                   the target / remote URL
    blob sha256:<digest of the stored bytes> each object's zstd frame, each delta, the envelope
    manifest (OCI image manifest, artifactType application/vnd.pvinit.revision.v1+json)
      config  = the signed envelope bytes    (application/vnd.pvinit.envelope.v1+json)
      layers  = the state object, every object, every delta, annotated with the pvinit id(s)
    tag rev-<N>                              the manifest of revision N
    tag <channel>                            the newest revision's manifest, pushed last

A blob's digest is the SHA256 of the *stored* bytes (the zstd frame), not
the pvinit object id (the SHA256 of the decompressed object): the registry
verifies what it stores, the device verifies what it decompresses, and
the manifest's annotations tie the two together.  The annotations are not
trusted: a device still checks every object against the signed envelope.

The manifest also records the channel's publish history (the revisions
and states it held before), which the next publish uses as delta bases,
like ``history/<channel>.json`` in a directory repository.
"""

from __future__ import annotations

import json
import re
import urllib.parse

from pvinit.errors import BadInputError
from pvinit.objects.ids import check_object_id
from pvinit.record import field, record
from pvinit.remote import layout

SCHEME = "oci"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.pvinit.revision.v1+json"
ENVELOPE_MEDIA_TYPE = "application/vnd.pvinit.envelope.v1+json"
OBJECT_MEDIA_TYPE = "application/vnd.pvinit.object.v1+zstd"
DELTA_MEDIA_TYPE = "application/vnd.pvinit.delta.v1+zstd"

ANN_OBJECT = "org.pvinit.object"
ANN_DELTA_BASE = "org.pvinit.delta.base"
ANN_DELTA_TARGET = "org.pvinit.delta.target"
ANN_REVISION = "org.pvinit.revision"
ANN_STATE = "org.pvinit.state"
ANN_CHANNEL = "org.pvinit.channel"
ANN_HISTORY = "org.pvinit.history"

#: Tags of revision manifests; channels may not take this prefix.
REVISION_TAG_PREFIX = "rev-"
#: A manifest names every object of a revision: far more than an envelope, still bounded.
MAX_MANIFEST_BYTES = layout.MAX_ENVELOPE_BYTES
HISTORY_KEEP = 32

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# distribution's repository name grammar (lowercase path components).
_REPO_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


def check_digest(value: object, *, where: str) -> str:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise BadInputError("a blob digest is sha256:<64 lowercase hex>", where=where)
    return value


def revision_tag(number: int) -> str:
    layout.revision_path(number)  # validates the number
    return f"{REVISION_TAG_PREFIX}{number}"


def channel_tag(name: str) -> str:
    """A channel's tag; ``rev-*`` is reserved for revision manifests."""
    layout.check_channel(name)
    if name.startswith(REVISION_TAG_PREFIX):
        raise BadInputError(f"on a registry a channel may not start with "
                            f"{REVISION_TAG_PREFIX!r} (revision tags use it)", where=name)
    return name


@record(frozen=True)
class OciTarget:
    """``oci://HOST[:PORT]/REPO``: a repository on a registry.

    ``insecure`` (plain HTTP) is the default only for loopback hosts, as
    docker does; ``?tls=0`` / ``?tls=1`` overrides.
    """

    host: str
    port: int | None
    repository: str
    tls: bool

    @classmethod
    def parse(cls, url: str) -> OciTarget:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != SCHEME or not parts.hostname:
            raise BadInputError("a registry is oci://HOST[:PORT]/REPO", where=url)
        try:
            port = parts.port
        except ValueError:
            raise BadInputError("bad port", where=url) from None
        repository = parts.path.strip("/")
        if not repository or not all(_REPO_COMPONENT.fullmatch(c) for c in repository.split("/")):
            raise BadInputError("the repository is lowercase path components "
                                "(a-z 0-9 . _ -), e.g. fleet/device", where=url)
        query = urllib.parse.parse_qs(parts.query)
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        tls = not loopback
        if "tls" in query:
            if query["tls"] not in (["0"], ["1"]):
                raise BadInputError("tls is 0 or 1", where=url)
            tls = query["tls"] == ["1"]
        return cls(host=parts.hostname, port=port, repository=repository, tls=tls)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = host if self.port is None else f"{host}:{self.port}"
        return f"{'https' if self.tls else 'http'}://{netloc}"

    def api(self, relative: str) -> str:
        """URL of ``/v2/<repo>/<relative>`` (relative: ``manifests/<ref>``, ``blobs/<digest>``)."""
        return f"{self.base_url}/v2/{self.repository}/{relative}"

    def __str__(self) -> str:
        return f"oci://{self.base_url.split('://', 1)[1]}/{self.repository}"


def is_oci_url(url: str) -> bool:
    return url.startswith(f"{SCHEME}://")


@record(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about one blob."""

    media_type: str
    digest: str
    size: int
    annotations: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"mediaType": self.media_type, "digest": self.digest,
                                  "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_dict(cls, data: object, *, where: str) -> Descriptor:
        if not isinstance(data, dict):
            raise BadInputError("a descriptor is an object", where=where)
        media, size, ann = data.get("mediaType"), data.get("size"), data.get("annotations", {})
        if not isinstance(media, str):
            raise BadInputError("descriptor needs a mediaType", where=where)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadInputError("descriptor size must be an integer >= 0", where=where)
        if not isinstance(ann, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in ann.items()):
            raise BadInputError("annotations must map strings to strings", where=where)
        return cls(media, check_digest(data.get("digest"), where=where), size,
                   tuple(sorted(ann.items())))

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)


@record(frozen=True)
class HistoryItem:
    revision: int
    state: str


@record(frozen=True)
class RevisionManifest:
    """One revision as published on one channel: the envelope, its blobs, the channel history."""

    revision: int
    channel: str
    envelope: Descriptor
    objects: dict[str, Descriptor] = field(default_factory=dict)
    """pvinit object id (state included) -> the blob of its zstd frame."""
    deltas: dict[tuple[str, str], Descriptor] = field(default_factory=dict)
    """(base id, target id) -> the blob of the delta."""
    state: str = ""
    history: tuple[HistoryItem, ...] = ()
    """What the channel published before this revision (oldest first, last 32)."""

    def to_dict(self) -> dict[str, object]:
        layers = [Descriptor(OBJECT_MEDIA_TYPE, d.digest, d.size, ((ANN_OBJECT, oid),)).to_dict()
                  for oid, d in sorted(self.objects.items())]
        layers += [Descriptor(DELTA_MEDIA_TYPE, d.digest, d.size,
                              ((ANN_DELTA_BASE, base), (ANN_DELTA_TARGET, target))).to_dict()
                   for (base, target), d in sorted(self.deltas.items())]
        history = [{"revision": h.revision, "state": h.state}
                   for h in self.history[-HISTORY_KEEP:]]
        return {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": ARTIFACT_TYPE,
            "config": self.envelope.to_dict(),
            "layers": layers,
            "annotations": {
                ANN_REVISION: str(self.revision),
                ANN_STATE: self.state,
                ANN_CHANNEL: self.channel,
                ANN_HISTORY: json.dumps(history, sort_keys=True, separators=(",", ":")),
            },
        }

    def to_bytes(self) -> bytes:
        """Deterministic bytes: the same revision published twice is the same manifest digest."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str) -> RevisionManifest:
        """Parse and validate a manifest; anything that is not a pvinit revision is refused."""
        try:
            doc = json.loads(data)
        except ValueError:
            raise BadInputError("manifest is not JSON", where=where) from None
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2 \
                or doc.get("mediaType") != MANIFEST_MEDIA_TYPE:
            raise BadInputError("not an OCI image manifest", where=where)
        if doc.get("artifactType") != ARTIFACT_TYPE:
            raise BadInputError(f"not a pvinit revision (artifactType must be "
                                f"{ARTIFACT_TYPE})", where=where,
                                hint="publish with 'pvstate publish --to oci://...'")
        config = Descriptor.from_dict(doc.get("config"), where=f"{where}#config")
        if config.media_type != ENVELOPE_MEDIA_TYPE or config.size > layout.MAX_ENVELOPE_BYTES:
            raise BadInputError("config must be a pvinit envelope", where=f"{where}#config")
        ann = doc.get("annotations")
        if not isinstance(ann, dict):
            raise BadInputError("manifest annotations missing", where=where)
        revision = _int(ann.get(ANN_REVISION), where=f"{where}#{ANN_REVISION}")
        channel = ann.get(ANN_CHANNEL)
        if not isinstance(channel, str):
            raise BadInputError("manifest names no channel", where=where)
        state = check_object_id(ann.get(ANN_STATE), where=f"{where}#{ANN_STATE}")
        history = _history(ann.get(ANN_HISTORY, "[]"), where=f"{where}#{ANN_HISTORY}")
        raw_layers = doc.get("layers")
        if not isinstance(raw_layers, list):
            raise BadInputError("layers must be a list", where=where)
        objects: dict[str, Descriptor] = {}
        deltas: dict[tuple[str, str], Descriptor] = {}
        for index, raw in enumerate(raw_layers):
            at = f"{where}#layers[{index}]"
            desc = Descriptor.from_dict(raw, where=at)
            if desc.media_type == OBJECT_MEDIA_TYPE:
                objects[check_object_id(desc.annotation(ANN_OBJECT), where=at)] = desc
            elif desc.media_type == DELTA_MEDIA_TYPE:
                pair = (check_object_id(desc.annotation(ANN_DELTA_BASE), where=at),
                        check_object_id(desc.annotation(ANN_DELTA_TARGET), where=at))
                deltas[pair] = desc
            # other layer types are someone else's extension: ignored, never fetched
        if state not in objects:
            raise BadInputError("manifest lacks the state object", where=where)
        return cls(revision=revision, channel=channel, envelope=config, objects=objects,
                   deltas=deltas, state=state, history=history)


def _int(value: object, *, where: str) -> int:
    if not isinstance(value, str) or not value.isdigit() or int(value) < 1:
        raise BadInputError("must be a positive integer", where=where)
    return int(value)


def _history(value: object, *, where: str) -> tuple[HistoryItem, ...]:
    try:
        raw = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if not isinstance(raw, list):
        raise BadInputError("history must be a JSON list", where=where)
    items = []
    for entry in raw:
        if not isinstance(entry, dict) or isinstance(entry.get("revision"), bool) \
                or not isinstance(entry.get("revision"), int):
            raise BadInputError("history entries are {revision, state}", where=where)
        items.append(HistoryItem(entry["revision"], check_object_id(entry.get("state"),
                                                                     where=where)))
    return tuple(items)


__all__ = [
    "ARTIFACT_TYPE",
    "DELTA_MEDIA_TYPE",
    "ENVELOPE_MEDIA_TYPE",
    "MANIFEST_MEDIA_TYPE",
    "OBJECT_MEDIA_TYPE",
    "Descriptor",
    "HistoryItem",
    "OciTarget",
    "RevisionManifest",
    "channel_tag",
    "check_digest",
    "is_oci_url",
    "revision_tag",
]

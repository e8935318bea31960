"""Where an update comes from: one interface over a remote channel and a bundle file.

The update engine does the same steps whatever the source: get the
envelope, check its trust, get the state, plan, check space, fetch.  A
source only *delivers bytes*; it never decides whether they are trusted.
What it does promise is that nothing unchecked reaches the caller's store:
the state is checked against the envelope's digest and size, and every
object against its id and signed size before it is stored.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterable
from pathlib import Path

from pvinit.bundle.reader import BundleReader
from pvinit.errors import BadInputError, IntegrityError, ObjectNotFoundError
from pvinit.objects.store import ObjectStore
from pvinit.record import record
from pvinit.remote import layout
from pvinit.signing.envelope import Envelope
from pvinit.transport.wants import FetchedObject, FetchReport, ObjectWant, Progress, plan_wants
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:  # a bundle needs no network stack (see pvinit.transport.wants)
    from pvinit.transport.remote import RemoteRepository


@record(frozen=True)
class PollPolicy:
    """How often a device asks a remote channel for news, and how it backs off.

    A fleet that polls in lock-step after an outage hammers the server
    (the thundering herd): every delay is spread by ``jitter`` (0..1, the
    fraction of the delay that is random), and failures back off
    exponentially up to ``max_interval``.  Pure: the caller supplies the
    random number, so tests and the engine's journal stay deterministic.
    """

    interval: float = 300.0
    max_interval: float = 6 * 3600.0
    factor: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (0 < self.interval <= self.max_interval) or self.factor < 1:
            raise BadInputError(
                "need 0 < interval <= max_interval and factor >= 1", where="poll policy"
            )
        if not 0 <= self.jitter <= 1:
            raise BadInputError("jitter is a fraction between 0 and 1", where="poll policy")

    @classmethod
    def from_dict(cls, data: object) -> PollPolicy:
        if not isinstance(data, dict) or set(data) - {"interval", "max_interval", "factor",
                                                       "jitter"}:
            raise BadInputError("poll policy keys: interval, max_interval, factor, jitter",
                                where="poll policy")
        values: dict[str, float] = {}
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BadInputError("must be a number", where=f"poll policy.{name}")
            values[name] = float(value)
        return cls(**values)

    def to_dict(self) -> dict[str, float]:
        return {"interval": self.interval, "max_interval": self.max_interval,
                "factor": self.factor, "jitter": self.jitter}

    def delay(self, failures: int, random_fraction: float) -> float:
        """Seconds to wait before the next poll after ``failures`` failed ones in a row.

        ``random_fraction`` is a number in [0, 1) (``random.random()``).
        """
        base = self.interval * self.factor ** min(max(failures, 0), 64)
        base = min(base, self.max_interval)
        return base * (1 - self.jitter * min(max(random_fraction, 0.0), 1.0))


def check_state_bytes(data: bytes, envelope: Envelope, *, where: str) -> bytes:
    """``data`` if it is exactly the state the envelope signs, else IntegrityError."""
    if len(data) != envelope.state_size or hashlib.sha256(data).hexdigest() != envelope.state:
        raise IntegrityError(
            f"state of {len(data)} bytes does not match the envelope's state "
            f"{envelope.state} ({envelope.state_size} bytes)",
            where=where,
        )
    return data


class UpdateSource(abc.ABC):
    """A place revisions and their objects come from."""

    @abc.abstractmethod
    def envelope_bytes(self) -> bytes:
        """The newest signed envelope this source offers (JSON, not yet trusted)."""

    @abc.abstractmethod
    def state_bytes(self, envelope: Envelope) -> bytes:
        """The state ``envelope`` names, verified against its digest and size."""

    @abc.abstractmethod
    def fetch(self, wants: Iterable[ObjectWant], store: ObjectStore, *, workdir: Path,
              progress: Progress | None = None) -> FetchReport:
        """Put every wanted object the store lacks into it (each verified)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human-readable name for logs and the progress journal."""


class RemoteSource(UpdateSource):
    """A channel of a remote repository (HTTP(S), ``file://`` or a path)."""

    def __init__(self, repo: RemoteRepository, channel: str, *, parallel: int = 4) -> None:
        self.repo = repo
        self.channel = layout.check_channel(channel)
        self.parallel = parallel

    def envelope_bytes(self) -> bytes:
        return self.repo.channel(self.channel)

    def state_bytes(self, envelope: Envelope) -> bytes:
        data = self.repo.object_bytes(envelope.state, envelope.state_size)
        return check_state_bytes(data, envelope, where=self.describe())

    def fetch(self, wants: Iterable[ObjectWant], store: ObjectStore, *, workdir: Path,
              progress: Progress | None = None) -> FetchReport:
        return self.repo.fetch_objects(wants, store, workdir=workdir,
                                       parallel=self.parallel, progress=progress)

    def describe(self) -> str:
        return f"{self.repo.url(layout.channel_path(self.channel))}"


class BundleSource(UpdateSource):
    """An offline bundle file (``pvstate export``): USB stick, inbox, control API upload.

    The bundle is opened for each call, so no descriptor outlives a step of
    the engine; every frame is checked again as it is imported.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _reader(self) -> BundleReader:
        return BundleReader(self.path)

    def envelope_bytes(self) -> bytes:
        with self._reader() as reader:
            return reader.header.envelope.to_json()

    def state_bytes(self, envelope: Envelope) -> bytes:
        with self._reader() as reader:
            return check_state_bytes(reader.header.state, envelope, where=self.describe())

    def fetch(self, wants: Iterable[ObjectWant], store: ObjectStore, *, workdir: Path,
              progress: Progress | None = None) -> FetchReport:
        """Verify the whole bundle, then import only the wanted objects the store lacks.

        A wanted object the bundle lacks, or with another size, is refused
        before anything is imported.  ``bytes_on_wire`` counts the
        compressed frames read for the import.
        """
        missing, present = plan_wants(wants, store)
        if not missing:
            return FetchReport.of((), present)
        where = self.describe()
        with self._reader() as reader:
            entries = {entry.object_id: entry for entry in reader.header.objects}
            for want in missing:
                entry = entries.get(want.id)
                if entry is None:
                    raise ObjectNotFoundError(f"object {want.id} is not in this bundle",
                                              where=where)
                if entry.size != want.size:
                    raise IntegrityError(
                        f"object {want.id} has {entry.size} bytes in the bundle, "
                        f"{want.size} were signed",
                        where=where,
                    )
            reader.verify()
            total = sum(want.size for want in missing)
            done_bytes = 0
            fetched: list[FetchedObject] = []
            for want in missing:
                entry = entries[want.id]
                stream = reader.open_object(want.id)
                store.add_stream(stream, expected_id=want.id,
                                 max_size=want.size)
                fetched.append(FetchedObject(id=want.id, bytes_on_wire=entry.zsize,
                                             via_delta=False))
                done_bytes += want.size
                if progress is not None:
                    progress(done_bytes, total)
        return FetchReport.of(fetched, present)

    def describe(self) -> str:
        return f"bundle {self.path}"

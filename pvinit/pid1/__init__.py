"""The minimal PID 1 of a pvinit device and its dev-mode launcher.

``init`` is the PID 1 loop (mounts, reaping, signals, orderly reboot),
``launcher`` runs it as PID 1 of a new PID + mount namespace on a developer's
machine and plays bootloader across its reboots.  Keep imports here light:
what PID 1 imports, every device pays for in start-up time and memory.
"""

from __future__ import annotations

# PID 1 and the dev launcher import neither ``signal`` (which builds its enums
# with ``enum``: ~0.7 MiB of PID 1's heap, ~3 ms of a start) nor
# ``contextlib``: they run on ``_signal``, the C module ``signal`` wraps, with
# the same functions and constants as ints.  mypy reads the typed ``signal``.
# TYPE_CHECKING is a plain constant, which mypy takes as true like typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as signal
else:
    import _signal as signal  # noqa: F401 - re-exported

BOOT_ID_ENV = "PVINIT_BOOT_ID"
"""Environment word the dev launcher sets for each boot; PID 1 stamps its shutdown
record with it, so the launcher can tell this boot's record from an older one.
Defined here, not in ``init``, so the launcher need not import PID 1's loop
(``ctypes``, mounts): it is on the path of every dev boot."""

HANDED_OVER_ENV = "PVINIT_HANDED_OVER"
"""``CLOCK_MONOTONIC`` (ns) at which the dev launcher started this boot's ``unshare``:
the instant a device's bootloader would hand over to the kernel.  The supervisor
logs its RUNNING against it, and the boot benchmark measures a device's boot
from it (PID 1's own start time in ``/proc`` counts in 10 ms ticks)."""


class suppress:
    """``contextlib.suppress`` for PID 1, which does not import ``contextlib``.

    ``contextlib`` brings ``collections`` and ``functools`` (~0.6 MiB of
    heap); whatever PID 1 imports before it forks the supervisor ends up
    in both processes, since the supervisor's reference counting copies
    the pages it touches.
    """

    __slots__ = ("_kinds",)

    def __init__(self, *kinds: type[BaseException]) -> None:
        self._kinds = kinds

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, value: object, trace: object) -> bool:
        return kind is not None and issubclass(kind, self._kinds)


class SlotsRecord:
    """Base of PID 1's small records: ``==`` and ``repr`` over the subclass's ``__slots__``.

    PID 1 imports neither ``typing`` (for ``NamedTuple``: with ``re`` it was
    ~1 MiB of PID 1's heap for its whole life, 5.0 -> 4.0 MiB RssAnon once
    gone) nor ``dataclasses`` (``inspect`` and ``ast``, ~1.8 MiB).  A subclass
    lists its fields in ``__slots__`` (constructor order) and assigns them in
    a typed ``__init__``.  Records are values: nothing assigns to a field once
    built, which ``__hash__`` relies on.
    """

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SlotsRecord) or type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

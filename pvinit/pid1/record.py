"""Why the last boot ended: ``<storage>/logs/last-shutdown``.

PID 1 writes the record durably at the start of every orderly shutdown, so
the next boot (and the dev launcher, and tests) can tell a requested
power-off from a supervisor crash or an internal error.  The format is
plain ``key=value`` lines -- readable with ``cat`` on a device with no
tools, and parsed without importing ``json`` into PID 1.

``boot_id`` is copied from the ``PVINIT_BOOT_ID`` environment variable the
boot was started with (the dev launcher sets a fresh one per boot), so a
reader can tell this boot's record from a stale one.
"""

# PID 1 does not import pathlib (~0.7 MiB for its whole life, ~3 ms per boot): os.path
# on purpose; pathlib.Path only in what runs outside PID 1 or at shutdown.
# ruff: noqa: PTH118

from __future__ import annotations

import os

from pvinit.errors import BadInputError
from pvinit.pid1 import SlotsRecord

TYPE_CHECKING = False  # not typing's: PID 1 does not import typing (see SlotsRecord)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import ClassVar

RECORD_RELPATH = os.path.join("logs", "last-shutdown")


class Action:
    """What PID 1 does at the end of an orderly shutdown: REBOOT, HALT or POWEROFF.

    Three fixed members, compared by identity and found by value with
    :meth:`of`: what PID 1 used of ``enum.Enum``, which it does not import
    (~0.7 MiB of heap, see :mod:`pvinit.pid1.syscalls`).
    """

    __slots__ = ("value",)
    REBOOT: ClassVar[Action]
    HALT: ClassVar[Action]
    POWEROFF: ClassVar[Action]

    def __init__(self, value: str) -> None:
        self.value = value

    @property
    def name(self) -> str:
        return self.value.upper()

    def __repr__(self) -> str:
        return f"<Action.{self.name}: {self.value!r}>"  # as an Enum member prints

    @classmethod
    def of(cls, value: str) -> Action:
        """The member whose value is ``value``; ``ValueError`` for anything else."""
        for member in (cls.REBOOT, cls.HALT, cls.POWEROFF):
            if member.value == value:
                return member
        raise ValueError(f"unknown action {value!r}")


Action.REBOOT = Action("reboot")
Action.HALT = Action("halt")
Action.POWEROFF = Action("poweroff")


class ShutdownRecord(SlotsRecord):
    """Why a boot ended (a SlotsRecord: PID 1 imports neither ``dataclasses`` nor ``typing``)."""

    __slots__ = ("action", "reason", "boot_id", "time")  # noqa: RUF023 - constructor order

    def __init__(self, action: Action, reason: str, boot_id: str = "", time: float = 0.0) -> None:
        self.action = action
        self.reason = reason
        self.boot_id = boot_id
        self.time = time

    def to_dict(self) -> dict[str, str]:
        return {
            "action": self.action.value,
            "reason": self.reason,
            "boot_id": self.boot_id,
            "time": f"{self.time:.3f}",
        }

    @classmethod
    def from_dict(cls, data: dict[str, str], *, where: str = "last-shutdown") -> ShutdownRecord:
        try:
            action = Action.of(data["action"])
        except KeyError:
            raise BadInputError("missing key 'action'", where=where) from None
        except ValueError:
            raise BadInputError(f"unknown action {data['action']!r}", where=where) from None
        try:
            stamp = float(data.get("time", "0") or "0")
        except ValueError:
            raise BadInputError(f"bad time {data['time']!r}", where=f"{where}: time") from None
        return cls(action, data.get("reason", ""), data.get("boot_id", ""), stamp)

    def to_text(self) -> str:
        # Values are single-line by construction: newlines would start a new key.
        return "".join(
            f"{key}={value.replace(chr(10), ' ')}\n" for key, value in self.to_dict().items()
        )

    @classmethod
    def from_text(cls, text: str, *, where: str = "last-shutdown") -> ShutdownRecord:
        data: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line:
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise BadInputError("line is not key=value", where=f"{where}:{number}")
            data[key] = value
        return cls.from_dict(data, where=where)


def record_path(storage: str | os.PathLike[str]) -> Path:
    """Where the record lives (``pathlib`` imported here: PID 1 needs it only at shutdown)."""
    from pathlib import Path

    return Path(storage, RECORD_RELPATH)


def write_record(storage: str | os.PathLike[str], record: ShutdownRecord) -> None:
    """Durably replace the record (temp + fsync + rename + dir fsync).

    ``durable`` is imported here, at shutdown, not at boot: it pulls in
    ``secrets`` and with it OpenSSL, ~4 MB of PID 1's RSS for its whole life.
    """
    from pvinit import durable  # deferred on purpose, see above

    path = record_path(storage)
    durable.makedirs(path.parent)
    durable.write_file(path, record.to_text().encode(), name="last-shutdown")


def read_record(storage: str | os.PathLike[str]) -> ShutdownRecord | None:
    """The last record, or None when no boot has written one yet."""
    path = record_path(storage)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise BadInputError("not UTF-8 text", where=str(path)) from None
    return ShutdownRecord.from_text(text, where=str(path))

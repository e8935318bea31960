"""The boot environment interface, its shared rules, and the file backend.

A boot environment is the small key/value store that pvinit and the
bootloader share (``pv_rev``, ``pv_try``, ``pv_trying``).  Each backend
(:class:`FileBootEnv` here, ``UBootEnv``, ``GrubEnv``) keeps one promise:
:meth:`BootEnv.update` applies every change in ONE atomic write, so a power
cut leaves the old environment or the new one, never a mix of the two.

Reading never raises for bad *content*: a bootloader must always boot
something, so a corrupt environment reads as what the bootloader would see
(usually empty), and :meth:`BootEnv.inspect` says what was wrong.
"""

# os.path, not pathlib: the dev launcher imports this before every boot (issue 3).
# ruff: noqa: PTH120

from __future__ import annotations

import abc
import os

from pvinit import durable
from pvinit.errors import BadInputError
from pvinit.record import field, record
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

POINT_NAME = "bootenv"
"""Persistence points of boot environment writes are ``bootenv.write``/``bootenv.rename``."""


@record(frozen=True)
class EnvSnapshot:
    """What a read found: the values the bootloader would use, and what was wrong.

    ``problems`` is empty for a healthy environment; each entry names the
    file (or copy) and the fault, e.g. a bad CRC that made a copy unusable.
    """

    values: dict[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {"values": dict(sorted(self.values.items())), "problems": list(self.problems)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> EnvSnapshot:
        values = data.get("values", {})
        problems = data.get("problems", [])
        if not isinstance(values, dict) or not isinstance(problems, list):
            raise BadInputError("boot environment snapshot has the wrong shape")
        return cls({str(k): str(v) for k, v in values.items()}, tuple(str(p) for p in problems))


def check_key(key: object) -> str:
    """A key every backend can store: non-empty text without ``=``, NUL or line breaks.

    Keys starting with ``#`` are refused too: GRUB and the file backend
    would read them back as comments.
    """
    if not isinstance(key, str) or not key:
        raise BadInputError("boot environment key must be non-empty text", where=repr(key))
    for bad in ("=", "\0", "\n", "\r"):
        if bad in key:
            raise BadInputError(
                f"boot environment key may not contain {bad!r}", where=f"key {key!r}"
            )
    if key.startswith("#"):
        raise BadInputError("boot environment key may not start with '#'", where=f"key {key!r}")
    return key


def check_value(key: str, value: object) -> str:
    """A value every backend can store: text without NUL or line breaks."""
    if not isinstance(value, str):
        raise BadInputError("boot environment value must be text", where=f"key {key!r}")
    for bad in ("\0", "\n", "\r"):
        if bad in value:
            raise BadInputError(
                f"boot environment value may not contain {bad!r}", where=f"key {key!r}"
            )
    return value


def apply_changes(current: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    """The environment after ``changes`` (None deletes); checks every change first.

    Pure: raises BadInputError naming the first bad key or value before
    anything is computed, so a refused update never half-applies.
    """
    checked: list[tuple[str, str | None]] = []
    for key, value in changes.items():
        check_key(key)
        checked.append((key, None if value is None else check_value(key, value)))
    result = dict(current)
    for key, value in checked:
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def sorted_items(values: Mapping[str, str]) -> Iterable[tuple[str, str]]:
    """Items in the order every backend writes them (sorted by key, like libubootenv)."""
    return sorted(values.items())


class BootEnv(abc.ABC):
    """A boot environment shared with the bootloader."""

    path: str | Path
    """Where it lives (a file, or a device node for ``uboot``)."""

    @abc.abstractmethod
    def inspect(self) -> EnvSnapshot:
        """Read the environment and report any fault; never raises for bad content."""

    def read(self) -> dict[str, str]:
        """The environment as the bootloader would see it (faults: see :meth:`inspect`)."""
        return dict(self.inspect().values)

    @abc.abstractmethod
    def update(self, changes: Mapping[str, str | None]) -> None:
        """Apply all ``changes`` (None deletes a key) in one atomic, durable write.

        Bad keys or values raise BadInputError naming them, and an environment
        that no longer fits raises NoSpaceError naming the key; either way
        nothing on disk changes.
        """


class FileBootEnv(BootEnv):
    """Development and test backend: sorted ``key=value`` lines in a text file.

    A missing file is an empty environment.  Blank lines and ``#`` comments
    are ignored; a line without ``=`` is skipped and reported.  The path is
    kept as text: the dev launcher reads this backend before every boot and
    imports no ``pathlib`` (~7 ms of its start, issue 3).
    """

    path: str

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"FileBootEnv({self.path!r})"

    def inspect(self) -> EnvSnapshot:
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return EnvSnapshot()
        values: dict[str, str] = {}
        problems: list[str] = []
        text = raw.decode("utf-8", errors="replace")
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep or not key:
                problems.append(f"{self.path}:{number}: line is not key=value, ignored")
                continue
            values[key] = value
        return EnvSnapshot(values, tuple(problems))

    def update(self, changes: Mapping[str, str | None]) -> None:
        values = apply_changes(self.read(), changes)
        data = "".join(f"{key}={value}\n" for key, value in sorted_items(values))
        durable.makedirs(os.path.dirname(self.path) or ".")
        durable.write_file(self.path, data.encode("utf-8"), name=POINT_NAME)


def open_boot_env(kind: str, path: str | os.PathLike[str], **options: object) -> BootEnv:
    """The backend ``kind`` (``file``, ``uboot`` or ``grub``) over ``path``.

    ``options`` go to the backend (``size``, ``redundant``, ``defaults``,
    ``lockfile`` for ``uboot``); an unknown kind or option is a BadInputError naming it.
    """
    if kind == "file":
        allowed: frozenset[str] = frozenset()
    elif kind == "grub":
        allowed = frozenset()
    elif kind == "uboot":
        allowed = frozenset({"size", "redundant", "defaults", "lockfile"})
    else:
        raise BadInputError(
            "unknown boot environment kind (one of file, uboot, grub)", where=repr(kind)
        )
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise BadInputError(
            f"option {unknown[0]!r} does not apply to a {kind} boot environment",
            where=str(path),
        )
    if kind == "file":
        return FileBootEnv(path)
    if kind == "grub":  # each backend imported only when it is the one used
        from pvinit.boot.grub import GrubEnv

        return GrubEnv(path)
    from pvinit.boot.uboot import UBootEnv

    return UBootEnv.from_options(path, options)

"""U-Boot environment images, as U-Boot, ``mkenvimage`` and ``fw_setenv`` lay them out.

One copy of ``size`` bytes is::

    crc32 (4 bytes, little endian)  [flags (1 byte), redundant only]  data

where ``data`` (the rest of the copy) is ``key=value\\0`` entries ended by an
empty entry (so the last entry is followed by ``\\0\\0``), then padding, and
the CRC covers all of ``data`` including the padding.  ``mkenvimage`` pads
with 0xff, U-Boot's ``saveenv`` with 0x00; readers ignore the padding, and
pvinit writes 0x00 like U-Boot.

Redundant mode keeps two copies, ``path`` and ``path + ".redundant"`` (one
regular file or device each: libubootenv's ``fw_env.config`` names them on
two lines, see :meth:`UBootEnv.fw_env_config`).  A write goes to the copy
that is *not* in use, with ``flags`` one higher (modulo 256, 255 -> 0 wraps
to newer), so a write torn by a power cut leaves a copy whose CRC fails and
every reader -- U-Boot, libubootenv, pvinit -- falls back to the other one.

A copy whose CRC fails is what U-Boot treats as "no saved environment": it
boots its built-in default environment.  pvinit reads such an image as
``defaults`` (empty unless given) and reports the fault; it refuses to
*write* over it unless ``defaults`` was given, because a saved environment
holding only ``pv_*`` keys would hide U-Boot's built-in ``bootcmd``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from pvinit import durable
from pvinit.boot.env import POINT_NAME, BootEnv, EnvSnapshot, apply_changes, sorted_items
from pvinit.errors import BadInputError, IntegrityError, NoSpaceError
from pvinit.record import record

DEFAULT_SIZE = 0x4000
DEFAULT_LOCKFILE = Path("/var/lock/fw_printenv.lock")
"""The lock libubootenv's fw_printenv/fw_setenv take: pvinit takes it too."""
MAX_SIZE = 16 * 1024 * 1024
ENCODING = "utf-8"
ERRORS = "surrogateescape"
"""Bytes that are not UTF-8 survive a read-modify-write unchanged."""


def header_size(redundant: bool) -> int:
    return 5 if redundant else 4


@record(frozen=True)
class DecodedCopy:
    """One copy of the environment as found: values, or why it is unusable."""

    values: dict[str, str] | None
    flags: int = 0
    problem: str | None = None
    short: bool = False
    """Fewer than ``size`` bytes: libubootenv cannot read a pair holding such a copy."""

    @property
    def valid(self) -> bool:
        return self.values is not None


def encode_image(
    values: Mapping[str, str], *, size: int, redundant: bool = False, flags: int = 0
) -> bytes:
    """One copy of ``size`` bytes holding ``values`` (sorted, 0x00 padding).

    Raises NoSpaceError naming the first key (in sorted order) that does
    not fit.
    """
    capacity = size - header_size(redundant)
    body = bytearray()
    for key, value in sorted_items(values):
        body += f"{key}={value}".encode(ENCODING, ERRORS) + b"\0"
        if len(body) + 1 > capacity:
            raise NoSpaceError(
                f"U-Boot environment of {size:#x} bytes is full at this key "
                f"(needs more than {capacity} data bytes)",
                where=f"key {key!r}",
            )
    body += b"\0"
    data = bytes(body) + b"\0" * (capacity - len(body))
    head = zlib.crc32(data).to_bytes(4, "little")
    if redundant:
        head += bytes([flags & 0xFF])
    return head + data


def decode_image(image: bytes, *, size: int, redundant: bool = False) -> DecodedCopy:
    """Parse one copy; a short copy, bad CRC or unterminated data is a problem, not an error."""
    if len(image) < size:
        return DecodedCopy(None, problem=f"copy is {len(image)} bytes, expected {size}", short=True)
    image = image[:size]
    hsize = header_size(redundant)
    data = image[hsize:]
    flags = image[4] if redundant else 0
    stored = int.from_bytes(image[:4], "little")
    actual = zlib.crc32(data)
    if stored != actual:
        return DecodedCopy(
            None, flags, problem=f"bad CRC (stored {stored:#010x}, computed {actual:#010x})"
        )
    values: dict[str, str] = {}
    pos = 0
    while True:
        end = data.find(b"\0", pos)
        if end < 0:
            return DecodedCopy(None, flags, problem="data is not terminated by an empty entry")
        if end == pos:
            return DecodedCopy(values, flags)
        key, sep, value = data[pos:end].partition(b"=")
        if sep and key:  # like U-Boot and libubootenv, an entry without '=' is skipped
            values[key.decode(ENCODING, ERRORS)] = value.decode(ENCODING, ERRORS)
        pos = end + 1


def newer_copy(first: int, second: int) -> int:
    """Index (0 or 1) of the newer of two valid copies by their flags, as U-Boot decides.

    The higher counter wins, except that 0 is newer than 255 (the counter
    wrapped); equal counters pick the first copy.
    """
    if first == 0xFF and second == 0:
        return 1
    if second == 0xFF and first == 0:
        return 0
    return 1 if second > first else 0


def _read_copy(path: Path, size: int) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except FileNotFoundError:
        return None


def _write_copy(path: Path, image: bytes, name: str) -> None:
    """Durably replace one copy: rename for a regular file, in place for a device.

    A device node (an eMMC boot partition, an MTD block) must never be
    replaced by a regular file, so it is written in place and fsynced;
    there the redundant copy is what survives a torn write.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    if stat.S_ISREG(mode):
        durable.makedirs(path.parent)
        durable.write_file(path, image, name=name)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        durable.point(f"{name}.write")
        written = os.pwrite(fd, image, 0)
        if written != len(image):
            raise NoSpaceError(f"short write ({written} of {len(image)} bytes)", where=str(path))
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_size(value: object) -> int:
    if isinstance(value, bool):
        raise BadInputError("U-Boot environment size must be a number", where=repr(value))
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise BadInputError("U-Boot environment size must be a number", where=repr(value))


class UBootEnv(BootEnv):
    """A U-Boot environment image in a file or device (optionally redundant)."""

    path: Path

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        size: int = DEFAULT_SIZE,
        redundant: bool = False,
        defaults: Mapping[str, str] | None = None,
        lockfile: str | Path | None = DEFAULT_LOCKFILE,
    ) -> None:
        self.path = Path(path)
        self.lockfile = None if lockfile is None else Path(lockfile)
        size = _parse_size(size)
        if not header_size(redundant) + 2 <= size <= MAX_SIZE:
            raise BadInputError(
                f"U-Boot environment size {size:#x} is out of range", where=str(self.path)
            )
        self.size = size
        self.redundant = bool(redundant)
        self.defaults = None if defaults is None else dict(defaults)

    @classmethod
    def from_options(cls, path: str | os.PathLike[str], options: Mapping[str, object]) -> UBootEnv:
        """Build from loosely typed options (a config file, ``open_boot_env``)."""
        redundant = options.get("redundant", False)
        if not isinstance(redundant, bool):
            raise BadInputError("option 'redundant' must be true or false", where=str(path))
        defaults = options.get("defaults")
        if defaults is not None and not (
            isinstance(defaults, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in defaults.items())
        ):
            raise BadInputError("option 'defaults' must map text to text", where=str(path))
        lockfile = options.get("lockfile", DEFAULT_LOCKFILE)
        if lockfile is not None and not isinstance(lockfile, str | Path):
            raise BadInputError("option 'lockfile' must be a path", where=str(path))
        return cls(
            path,
            size=_parse_size(options.get("size", DEFAULT_SIZE)),
            redundant=redundant,
            defaults=defaults,
            lockfile=lockfile,
        )

    def __repr__(self) -> str:
        return f"UBootEnv({str(self.path)!r}, size={self.size:#x}, redundant={self.redundant})"

    @property
    def copies(self) -> tuple[Path, ...]:
        """The files (or devices) holding the copies, in ``fw_env.config`` order."""
        if self.redundant:
            return (self.path, Path(f"{self.path}.redundant"))
        return (self.path,)

    def fw_env_config(self) -> str:
        """The ``fw_env.config`` text that lets ``fw_printenv``/``fw_setenv -c`` use this image."""
        return "".join(f"{copy} 0x0 {self.size:#x}\n" for copy in self.copies)

    def _load(self) -> tuple[list[DecodedCopy | None], int | None]:
        """Every copy (None = missing) and the index of the one in use (None = no valid one)."""
        found: list[DecodedCopy | None] = []
        for copy in self.copies:
            image = _read_copy(copy, self.size)
            found.append(
                None
                if image is None
                else decode_image(image, size=self.size, redundant=self.redundant)
            )
        valid = [i for i, c in enumerate(found) if c is not None and c.valid]
        if not valid:
            return found, None
        if len(valid) == 1:
            return found, valid[0]
        first, second = found[0], found[1]
        assert first is not None and second is not None
        return found, newer_copy(first.flags, second.flags)

    def _inspect(self) -> EnvSnapshot:
        found, current = self._load()
        problems = [
            f"{copy}: {c.problem}"
            for copy, c in zip(self.copies, found, strict=True)
            if c is not None and c.problem
        ]
        if all(c is None for c in found):
            return EnvSnapshot()
        if any(c is None for c in found):
            problems += [
                f"{copy}: missing" for copy, c in zip(self.copies, found, strict=True) if c is None
            ]
        if current is None:
            problems.append(
                f"{self.path}: no valid copy, the bootloader uses its default environment"
            )
            return EnvSnapshot(dict(self.defaults or {}), tuple(problems))
        chosen = found[current]
        assert chosen is not None and chosen.values is not None
        return EnvSnapshot(dict(chosen.values), tuple(problems))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold libubootenv's lock so a concurrent ``fw_setenv`` cannot interleave.

        Skipped when the lock cannot be opened (an early boot without
        ``/var/lock``, a lock file owned by root), as libubootenv does.
        """
        fd = -1
        if self.lockfile is not None and self.lockfile.parent.is_dir():
            # Best effort, like libubootenv (which ignores a lock it cannot open).
            with contextlib.suppress(OSError):
                fd = os.open(self.lockfile, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        if fd < 0:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def inspect(self) -> EnvSnapshot:
        with self._locked():
            return self._inspect()

    def update(self, changes: Mapping[str, str | None]) -> None:
        with self._locked():
            self._update(changes)

    def _update(self, changes: Mapping[str, str | None]) -> None:
        found, current = self._load()
        fresh = all(c is None for c in found)
        if current is not None:
            chosen = found[current]
            assert chosen is not None and chosen.values is not None
            base, flags = chosen.values, chosen.flags
        elif fresh:
            base, flags, current = {}, 0, len(self.copies) - 1
        elif self.defaults is not None:
            base, current = self.defaults, 0
            flags = found[0].flags if found[0] is not None else 0
        else:
            raise IntegrityError(
                "no copy of the U-Boot environment has a good CRC; refusing to replace "
                "the bootloader's default environment",
                where=str(self.path),
                hint="give defaults= (U-Boot's built-in environment) or re-create the image",
            )
        values = apply_changes(base, changes)
        target = (current + 1) % len(self.copies)
        new_flags = (flags + 1) & 0xFF
        image = encode_image(values, size=self.size, redundant=self.redundant, flags=new_flags)
        names = (POINT_NAME, f"{POINT_NAME}-redundant")
        _write_copy(self.copies[target], image, names[target])
        if self.redundant:
            other = 1 - target
            spare = found[other]
            if spare is None or spare.short:
                # libubootenv cannot read a redundant pair with a copy missing:
                # give it the same data as an older copy.
                older = encode_image(
                    values, size=self.size, redundant=True, flags=(new_flags - 1) & 0xFF
                )
                _write_copy(self.copies[other], older, names[other])

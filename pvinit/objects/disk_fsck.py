"""The filesystem side of :meth:`DiskObjectStore.fsck`: walk, classify, quarantine.

Kept apart from :mod:`pvinit.objects.disk` so the hot add/read path stays
small.  Nothing here hashes: the store re-hashes the objects this module
finds and hands back what must be repaired.

Repair never deletes what might be somebody's data: corrupt objects and
stray entries are *moved* to ``<root>/quarantine/<n>/<relative path>``
(a new ``<n>`` per repair), so a wrong diagnosis can be undone by hand.
Only temp files of dead writers are deleted: they are by construction
copies of a stream that was never acknowledged.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from pvinit import durable
from pvinit.objects.store import FsckProblem
from pvinit.record import record

TMP_DIR = "tmp"
QUARANTINE_DIR = "quarantine"
#: Names allowed at the top of a store besides fan-out, tmp and quarantine:
#: a repository keeps its ``objects/`` directory in git with these.
IGNORED_ROOT_NAMES = frozenset({".gitignore", "README", "README.md"})

FANOUT_RE = re.compile(r"[0-9a-f]{2}")
REST_RE = re.compile(r"[0-9a-f]{62}")


@record(frozen=True)
class Found:
    """One entry met while walking a store: an object to re-hash, or a problem."""

    path: Path
    object_id: str | None = None
    problem: FsckProblem | None = None


def walk(root: Path) -> Iterator[Found]:
    """Every top-level and fan-out entry of the store at ``root``, classified."""
    with os.scandir(root) as top:
        entries = sorted(top, key=lambda entry: entry.name)
    for entry in entries:
        name = entry.name
        if name in (TMP_DIR, QUARANTINE_DIR) and entry.is_dir(follow_symlinks=False):
            continue
        if name in IGNORED_ROOT_NAMES:
            continue
        if not (FANOUT_RE.fullmatch(name) and entry.is_dir(follow_symlinks=False)):
            yield _stray(Path(entry.path), "not a fan-out directory (two lowercase hex)")
            continue
        with os.scandir(entry.path) as inner:
            objects = sorted(inner, key=lambda item: item.name)
        for item in objects:
            if not REST_RE.fullmatch(item.name):
                yield _stray(Path(item.path), "name is not the 62 lowercase hex rest of an id")
            elif not item.is_file(follow_symlinks=False):
                yield _stray(Path(item.path), "not a regular file")
            else:
                yield Found(Path(item.path), object_id=name + item.name)


def stale_temps(tmp_dir: Path) -> list[FsckProblem]:
    """Entries of ``tmp_dir`` no live writer holds locked: their writer died."""
    if not tmp_dir.is_dir():
        return []
    with os.scandir(tmp_dir) as entries:
        names = sorted(entry.name for entry in entries)
    return [
        FsckProblem("temp", str(tmp_dir / name), "left over by an interrupted write")
        for name in names
        if not is_locked(tmp_dir / name)
    ]


def is_locked(target: Path) -> bool:
    """True when some open file description holds ``flock`` on ``target``.

    flock belongs to the open file description, so this also sees a lock
    taken by the calling process through another descriptor.
    """
    try:
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False  # a symlink or something unopenable: not a live writer's file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def repair(root: Path, problems: list[FsckProblem]) -> tuple[str, ...]:
    """Quarantine corrupt and stray entries, delete stale temp files; durably."""
    repaired: list[str] = []
    quarantine: Path | None = None
    touched: set[Path] = set()
    for problem in problems:
        source = Path(problem.path)
        touched.add(source.parent)
        if problem.kind == "temp" and not (source.is_dir() and not source.is_symlink()):
            durable.point("object.fsck-unlink")
            with contextlib.suppress(FileNotFoundError):
                source.unlink()
            repaired.append(f"removed {problem.path}")
            continue
        quarantine = quarantine or _new_quarantine(root / QUARANTINE_DIR)
        _move(root, source, quarantine)
        repaired.append(f"quarantined {problem.path}")
    if quarantine is not None:
        # the moved entries' new names, then the directories holding them
        for directory in sorted(quarantine.rglob("*"), reverse=True):
            if directory.is_dir() and not directory.is_symlink():
                durable.fsync_dir(directory)
        durable.fsync_dir(quarantine)
    for directory in sorted(touched):
        durable.fsync_dir(directory)
    return tuple(repaired)


def _new_quarantine(quarantine_dir: Path) -> Path:
    """A fresh ``quarantine/<n>``: the next free counter, claimed by mkdir."""
    durable.makedirs(quarantine_dir)
    with os.scandir(quarantine_dir) as entries:
        numbers = [int(entry.name) for entry in entries if entry.name.isdigit()]
    number = max(numbers, default=0) + 1
    while True:
        candidate = quarantine_dir / str(number)
        try:
            candidate.mkdir()
        except FileExistsError:
            number += 1
            continue
        durable.fsync_dir(quarantine_dir)
        return candidate


def _move(root: Path, source: Path, quarantine: Path) -> None:
    """Move ``source`` to its same relative path under ``quarantine``."""
    target = quarantine / source.relative_to(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    durable.point("object.quarantine")
    source.rename(target)


def _stray(path: Path, detail: str) -> Found:
    return Found(path, problem=FsckProblem("stray", str(path), detail))

"""The revision pointers ``current``, ``try``, ``done`` and ``factory``.

Each ref is a tiny file holding a revision number.  A ref moves only by
compare-and-swap (:func:`move_ref` with the value the caller last read), under
an exclusive ``flock`` on ``refs/.lock``, and through a durable write, so two
writers (the supervisor and an update, a technician's rollback) can never
both believe they moved it, and a power cut leaves the old or the new value.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from pvinit import durable
from pvinit.errors import BadInputError, ConflictError
from pvinit.trails.layout import StorageLayout, check_revision

REF_NAMES = frozenset({"current", "try", "done", "factory"})


def _check_ref_name(name: str) -> str:
    if name not in REF_NAMES:
        raise BadInputError(f"unknown ref (one of {', '.join(sorted(REF_NAMES))})", where=name)
    return name


def read_ref(layout: StorageLayout, name: str) -> int | None:
    """The revision a ref points at, or None when it is not set."""
    path = layout.ref(_check_ref_name(name))
    try:
        text = path.read_bytes().decode("ascii").strip()  # not a text open: no codec import
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise BadInputError("ref is not a revision number", where=str(path)) from None
    if not text.isdigit():
        raise BadInputError(f"ref holds {text[:40]!r}, not a revision number", where=str(path))
    return int(text)


@contextlib.contextmanager
def _locked(layout: StorageLayout) -> Iterator[None]:
    durable.makedirs(layout.refs)
    fd = os.open(layout.refs / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def move_ref(layout: StorageLayout, name: str, new: int | None, *, expect: int | None) -> None:
    """Set ref ``name`` to ``new`` (None removes it) if it still holds ``expect``.

    Raises ConflictError naming the ref when it holds something else, and
    then changes nothing.
    """
    _check_ref_name(name)
    if new is not None:
        check_revision(new, where=f"ref {name}")
    with _locked(layout):
        actual = read_ref(layout, name)
        if actual != expect:
            raise ConflictError(
                f"ref moved: expected {expect}, found {actual}",
                where=f"refs/{name}",
                hint="read the ref again and retry",
            )
        if new == actual:
            return
        if new is None:
            durable.remove_file(layout.ref(name), name=f"ref.{name}")
        else:
            durable.write_file(layout.ref(name), f"{new}\n".encode(), name=f"ref.{name}")

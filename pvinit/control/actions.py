"""What the control API changes on the device: busy rules, install, rollback, who may connect.

Kept apart from the HTTP routing so the rules read as rules.  Busy: a
reboot, rollback, install or GC asked while an update is in flight (a
journal in QUEUED..TESTING, a revision under test, or an update handed to
the loop) is refused with :class:`BusyError` and a retry hint, before
anything is written.

A local rollback to revision N (``POST /v1/rollback``) is a *committed*
move, not a try: N must be stored, and must not have failed (ERROR/WONTGO).
The order of writes is: a note in N's journal and in
``progress/local-rollbacks.json`` ("local rollback by uid X from R"), then
one atomic boot-environment write ``pv_rev=N`` (``pv_try``/``pv_trying``
cleared), then ``refs/done`` -> N, then a reboot.  A power cut before the
boot-environment write leaves the device on R; after it, the device boots N
(``refs/current`` follows at boot; ``refs/done`` is re-pointed by the
rollback or already there).  N may be lower than R: that is the point of an
explicit local rollback, and the trust rule (revisions only grow) is about
what comes over the air, not about what a technician chooses to boot.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from pvinit import durable
from pvinit.errors import BadInputError, BusyError, NotFoundError, PvError, RefusedError
from pvinit.record import replace
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import move_ref, read_ref
from pvinit.update.journal import Step, list_journals, read_journal, utc_now, write_journal
from pvinit.update.machine import COMMITTED, UpdateState

Log = Callable[[str], None]
IN_FLIGHT = frozenset({UpdateState.QUEUED, UpdateState.DOWNLOADING, UpdateState.INSTALLING,
                       UpdateState.TESTING})
RETRY_AFTER = 10


def busy_reason(layout: StorageLayout, testing: int | None, handed_over: bool) -> str | None:
    """Why an update is in progress now, or None."""
    copying = copies_in_flight()
    if copying:
        return f"{copying[0]} is being copied into the inbox"
    if testing is not None:
        return f"revision {testing} is being tested before commit"
    for journal in list_journals(layout):
        if journal.state in IN_FLIGHT:
            return f"the update to revision {journal.revision} is {journal.state.value}"
    if handed_over:
        return "an update is being applied"
    return None


def refuse_if_busy(reason: str | None, what: str) -> None:
    if reason is not None:
        raise BusyError(f"cannot {what} now: {reason}",
                        hint=f"retry in {RETRY_AFTER}s, or watch 'pvctl status'")


def stored_revisions(layout: StorageLayout) -> list[int]:
    if not layout.trails.is_dir():
        return []
    return sorted(int(p.name) for p in layout.trails.iterdir() if p.name.isdigit() and p.is_dir())


def rollback_target(layout: StorageLayout, running: int | None, wanted: int | None) -> int:
    """Where a rollback goes: ``wanted``, else ``done``, else the newest earlier good one."""
    stored = stored_revisions(layout)
    states = {j.revision: j.state for j in list_journals(layout)}
    target = wanted
    if target is None:
        done = read_ref(layout, "done")
        if done is not None and done != running and done in stored:
            target = done
        else:
            earlier = [r for r in stored if running is not None and r < running
                       and (r not in states or states[r] in COMMITTED)]
            if not earlier:
                raise RefusedError("no earlier committed revision is stored to roll back to",
                                   hint="'pvctl revisions' lists what is stored")
            target = earlier[-1]
    if target == running:
        raise RefusedError(f"revision {target} is already running")
    if target not in stored:
        raise NotFoundError(f"revision {target} is not stored on this device",
                            hint="'pvctl revisions' lists what is stored")
    state = states.get(target)
    if state in (UpdateState.ERROR, UpdateState.WONTGO):
        journal = read_journal(layout, target)
        why = journal.reason if journal is not None else ""
        raise RefusedError(f"revision {target} failed ({state}): {why}".rstrip(": "))
    return target


def record_rollback(layout: StorageLayout, *, target: int, running: int | None, uid: int) -> str:
    """Write the rollback note durably (journal of ``target`` and the rollback log)."""
    note = f"local rollback by uid {uid} from revision {running}"
    journal = read_journal(layout, target)
    if journal is not None:
        step = Step(state=journal.state, time=utc_now(), note=note)
        write_journal(layout, replace(journal, history=(*journal.history, step)))
    path = layout.root / "progress" / "local-rollbacks.json"
    try:
        entries = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        entries = []
    if not isinstance(entries, list):
        entries = []
    entries.append({"time": utc_now(), "from": running, "to": target, "uid": uid})
    durable.makedirs(path.parent)
    durable.write_file(path, (json.dumps(entries[-100:], indent=1) + "\n").encode())
    return note


def point_done(layout: StorageLayout, target: int) -> None:
    old = read_ref(layout, "done")
    if old != target:
        move_ref(layout, "done", target, expect=old)


def bundle_revision(path: Path) -> int:
    """The revision a bundle file carries, from its header alone (no object is read).

    Read in a short-lived fork (:mod:`pvinit.forked`): decoding the header
    loads ``msgpack`` and ``typing``, which the supervisor would otherwise
    keep after every ``pvctl install``.
    """
    from pvinit.forked import run_forked

    revision = run_forked(lambda log: read_bundle_revision(path),
                          what="reading the bundle header", where="uploaded bundle")
    if not isinstance(revision, int):
        raise BadInputError("the bundle header names no revision", where="uploaded bundle")
    return revision


def read_bundle_revision(path: Path) -> int:
    """:func:`bundle_revision`'s work, in the process that calls it."""
    from pvinit.bundle.format import PREFIX_SIZE, decode_header, decode_prefix

    where = "uploaded bundle"
    with open(path, "rb") as handle:
        length = decode_prefix(handle.read(PREFIX_SIZE), where=where)
        body = handle.read(length)
    if len(body) != length:
        raise BadInputError("bundle header is truncated", where=where)
    return decode_header(body, where=where).envelope.revision


def take_upload(upload: Path, inbox: Path, revision: int) -> Path:
    """Make an uploaded file durable and move it into the inbox as ``api-<rev>-<n>.pvb``."""
    fd = os.open(upload, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    target = _free_name(inbox, revision)
    os.replace(upload, target)
    durable.fsync_dir(inbox)
    return target


_copying: set[Path] = set()
_copying_lock = threading.Lock()


def copies_in_flight() -> list[str]:
    """Names of bundles being copied into the inbox by :func:`place_in_inbox` threads."""
    with _copying_lock:
        return sorted(p.name for p in _copying)


def place_in_inbox(source: Path, inbox: Path, revision: int, *, log: Log) -> tuple[Path, str]:
    """Put a bundle that is on the device into the inbox without blocking the caller.

    On the inbox's filesystem it is hard-linked (under a dot name, then renamed,
    so the watcher sees one ``IN_MOVED_TO`` of a complete file): instant, and
    the technician's file stays where it was.  Elsewhere (a USB stick, /tmp on
    tmpfs) a thread copies it durably; until the copy is renamed into place
    the install counts as busy and its progress says ``copying``.  Returns the
    inbox path and ``"linked"`` or ``"copying"``.
    """
    durable.makedirs(inbox)
    target = _free_name(inbox, revision)
    if source.stat().st_dev == inbox.stat().st_dev:
        temp = durable.temp_path(target)
        try:
            os.link(source, temp)
        except OSError:
            pass  # a filesystem without hard links, or a protected file: copy it
        else:
            os.replace(temp, target)
            durable.fsync_dir(inbox)
            return target, "linked"
    with _copying_lock:
        _copying.add(target)
    thread = threading.Thread(target=_copy, args=(source, target, log), daemon=True,
                              name=f"pvinit-copy-{target.name}")
    thread.start()
    return target, "copying"


def _copy(source: Path, target: Path, log: Log) -> None:
    try:
        with open(source, "rb") as reader, durable.save_file(target, name="inbox") as writer:
            while block := reader.read(1 << 20):
                writer.write(block)
    except (OSError, PvError) as error:
        reason = f"could not copy {source} into the inbox: {error}"
        log(f"install: {reason}")
        failed = target.parent / "failed"
        with contextlib.suppress(OSError, PvError):
            durable.makedirs(failed)
            durable.write_file(failed / f"{target.name}.reason", (reason + "\n").encode())
    else:
        log(f"install: {source} copied into the inbox as {target.name}")
    finally:
        with _copying_lock:
            _copying.discard(target)


def _free_name(inbox: Path, revision: int) -> Path:
    durable.makedirs(inbox)
    n = 0
    while True:
        target = inbox / f"api-{revision}-{n}.pvb"
        with _copying_lock:
            copying = target in _copying
        if not copying and not any(p.exists() for p in (
                target, inbox / "done" / target.name, inbox / "failed" / target.name,
                inbox / "failed" / f"{target.name}.reason")):
            return target
        n += 1


def inbox_state(inbox: Path, revision: int) -> dict[str, str] | None:
    """Where bundles of ``revision`` sent through the API stand in the inbox, if any."""
    copying = [n for n in copies_in_flight() if n.startswith(f"api-{revision}-")]
    if copying:
        return {"inbox": "copying", "file": copying[-1]}
    for where in ("", "failed", "done"):
        directory = inbox / where if where else inbox
        found = sorted(directory.glob(f"api-{revision}-*.pvb")) if directory.is_dir() else []
        if found:
            latest = found[-1]
            state = {"": "waiting", "failed": "failed", "done": "done"}[where]
            result = {"inbox": state, "file": latest.name}
            reason = latest.with_name(latest.name + ".reason")
            if reason.is_file():
                result["reason"] = reason.read_text(errors="replace").strip()
            return result
    failed = sorted((inbox / "failed").glob(f"api-{revision}-*.pvb.reason")) \
        if (inbox / "failed").is_dir() else []
    if failed:  # a copy that never made it into the inbox
        return {"inbox": "failed", "file": failed[-1].name.removesuffix(".reason"),
                "reason": failed[-1].read_text(errors="replace").strip()}
    return None


def group_id(value: object) -> int | None:
    """The gid of the configured ``control.group`` (a name or a number)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value:
        import grp

        try:
            return grp.getgrnam(value).gr_gid
        except KeyError:
            return None
    return None


def control_group(layout: StorageLayout) -> int | None:
    """``control.group`` from ``<storage>/config/pvinit.json`` (absent or unknown: None)."""
    try:
        data = json.loads((layout.root / "config" / "pvinit.json").read_bytes())
    except (OSError, ValueError):
        return None
    control = data.get("control") if isinstance(data, dict) else None
    return group_id(control.get("group")) if isinstance(control, dict) else None


def peer_groups(pid: int, gid: int) -> set[int]:
    groups = {gid}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                groups.update(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    return groups

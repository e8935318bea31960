"""Garbage collection on the device: keep what may boot, reclaim the rest.

Kept: the running (``current``), trying (``try``), last committed (``done``)
and ``factory`` revisions — their trails and every object they reference,
including their state objects.  Other trails are removed first (their files
are hard links, so an object's space only returns once no trail links it),
then unreferenced objects.  Partial trails left by a power cut go too.
"""

from __future__ import annotations

from collections.abc import Callable

from pvinit import durable
from pvinit.objects.store import GcReport, ObjectStore
from pvinit.trails.install import load_trail
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import REF_NAMES, read_ref
from pvinit.update.journal import list_journals
from pvinit.update.machine import UpdateState

Log = Callable[[str], None]


def kept_revisions(layout: StorageLayout) -> set[int]:
    """Revisions GC must keep: every ref, and any update still in flight."""
    kept = set()
    for name in REF_NAMES:
        revision = read_ref(layout, name)
        if revision is not None:
            kept.add(revision)
    for journal in list_journals(layout):
        if journal.state in (UpdateState.INSTALLING, UpdateState.TESTING):
            kept.add(journal.revision)
    return kept


def collect_garbage(layout: StorageLayout, store: ObjectStore, *, log: Log) -> GcReport:
    kept = kept_revisions(layout)
    keep_ids: set[str] = set()
    for revision in sorted(kept):
        if not layout.trail(revision).is_dir():
            continue
        installed = load_trail(layout, revision)
        keep_ids.update(installed.state.object_ids())
        keep_ids.add(installed.state.digest)
    removed_trails = 0
    if layout.trails.is_dir():
        for trail in sorted(layout.trails.iterdir()):
            name = trail.name
            number = name[1:].split(".", 1)[0] if name.startswith(".") else name
            if number.isdigit() and int(number) in kept and not name.startswith("."):
                continue
            if trail.is_dir():
                durable.remove_tree(trail)
                removed_trails += 1
    report = store.gc(keep_ids)
    log(f"gc: kept revisions {sorted(kept)}, removed {removed_trails} trail(s) and "
        f"{len(report.removed)} object(s), {report.reclaimed_bytes} bytes")
    return report

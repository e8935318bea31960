"""Finishing what a power cut interrupted: a commit past its commit point, temp files.

A commit is three writes that cannot be one: the boot environment (``pv_rev``,
the *commit point*: what the bootloader boots from then on), the revision's
journal (TESTING -> DONE/UPDATED) and the ``current``/``done`` refs.  The
engine writes the boot environment first, so a power cut between the writes
leaves a device that boots the new revision with its journal still saying
TESTING, or ``done`` still naming the old one; :func:`settle_committed`,
called at boot for the revision the environment names committed, finishes
the job.  It is idempotent and cheap (one journal and two refs read), so it
runs on every boot.

The object store's temp files (``objects/tmp/``) of a write the power cut
are swept by :func:`sweep_store_temps` before the next download: only temp
files no live writer holds locked go, so it is safe beside a running import.
Imports are light (no cryptography, no zstandard): PID 1's boot path uses this.
"""

from __future__ import annotations

from collections.abc import Callable

from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import move_ref, read_ref
from pvinit.typecheck import TYPE_CHECKING
from pvinit.update.journal import read_journal, write_journal
from pvinit.update.machine import UpdateState

if TYPE_CHECKING:
    from pvinit.objects.disk import DiskObjectStore

Log = Callable[[str], None]

#: The journal note of a commit finished at boot (the environment already named the revision).
FINISHED_AT_BOOT = "committed (finished at boot: the boot environment already named it)"


def settle_committed(layout: StorageLayout, revision: int, *, log: Log) -> bool:
    """Make the journal and refs agree with a boot environment that commits ``revision``.

    Returns True when something had to be finished.  Call only with the
    revision the device runs *and* the environment names ``pv_rev``
    (:attr:`pvinit.update.bootplan.BootPlan.committed`).
    """
    changed = False
    journal = read_journal(layout, revision)
    if journal is not None and journal.state is UpdateState.TESTING:
        final = UpdateState.DONE if journal.reboot else UpdateState.UPDATED
        write_journal(layout, journal.advance(final, FINISHED_AT_BOOT))
        log(f"update {revision}: {final.value}: {FINISHED_AT_BOOT}")
        changed = True
    for name in ("current", "done"):
        old = read_ref(layout, name)
        if old != revision:
            move_ref(layout, name, revision, expect=old)
            changed = True
    return changed


def sweep_store_temps(store: DiskObjectStore, *, log: Log) -> int:
    """Delete temp files of dead writers in the store's ``tmp/``; returns how many.

    Cheaper than :meth:`DiskObjectStore.fsck` (nothing is re-hashed): what a
    power cut during an object write leaves behind, and nothing else.
    """
    from pvinit.objects import disk_fsck  # the update engine's, not every boot's (settle)

    stale = disk_fsck.stale_temps(store.tmp_dir)
    if not stale:
        return 0
    disk_fsck.repair(store.root, stale)
    log(f"objects: removed {len(stale)} temp file(s) left by an interrupted write")
    return len(stale)

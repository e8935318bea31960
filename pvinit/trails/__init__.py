"""On-device revision storage: objects, trails, refs, persistent disks and logs.

See :mod:`pvinit.trails.layout` for the directory layout,
:mod:`pvinit.trails.refs` for the compare-and-swap pointers and
:mod:`pvinit.trails.install` for putting a revision (or a bundle) in place.
"""

from __future__ import annotations

from pvinit.trails.install import InstalledRevision, install_bundle, install_revision, load_trail
from pvinit.trails.layout import PERSISTENCE_SCOPES, StorageLayout
from pvinit.trails.refs import REF_NAMES, move_ref, read_ref

__all__ = [
    "PERSISTENCE_SCOPES",
    "REF_NAMES",
    "InstalledRevision",
    "StorageLayout",
    "install_bundle",
    "install_revision",
    "load_trail",
    "move_ref",
    "read_ref",
]

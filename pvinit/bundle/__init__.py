"""Offline update bundles: one file with a signed revision, its state and its objects."""

from __future__ import annotations

from pvinit.bundle.format import DEFAULT_LEVEL, MAGIC, BundleEntry, BundleHeader
from pvinit.bundle.reader import BundleReader, ImportReport
from pvinit.bundle.writer import write_bundle

__all__ = [
    "DEFAULT_LEVEL",
    "MAGIC",
    "BundleEntry",
    "BundleHeader",
    "BundleReader",
    "ImportReport",
    "write_bundle",
]

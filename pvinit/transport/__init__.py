"""Where revisions and objects come from: size-capped, resumable, parallel fetches.

``fetcher`` moves bytes (HTTP(S), local files) under caps; ``remote`` reads
the static repository layout and stores verified objects (whole or by
delta); ``sources`` gives the update engine one interface over a remote
channel and a bundle file.  See ``docs/decisions/transport.md``.
"""

from __future__ import annotations

from pvinit.transport.fetcher import (
    Fetcher,
    FileFetcher,
    HttpFetcher,
    RemoteNotFoundError,
    open_fetcher,
)
from pvinit.transport.remote import FetchedObject, FetchReport, ObjectWant, RemoteRepository
from pvinit.transport.sources import BundleSource, PollPolicy, RemoteSource, UpdateSource

__all__ = [
    "BundleSource",
    "FetchReport",
    "FetchedObject",
    "Fetcher",
    "FileFetcher",
    "HttpFetcher",
    "ObjectWant",
    "PollPolicy",
    "RemoteNotFoundError",
    "RemoteRepository",
    "RemoteSource",
    "UpdateSource",
    "open_fetcher",
]

"""Where revisions and objects come from: size-capped, resumable, parallel fetches.

``fetcher`` moves bytes (HTTP(S), local files) under caps; ``remote`` reads
the static repository layout and stores verified objects (whole or by
delta); ``sources`` gives the update engine one interface over a remote
channel and a bundle file; ``oci``/``registry`` do the same over an OCI
registry.  See ``docs/decisions/transport.md``.

Nothing is re-exported here: importing a light submodule (``auth``) must
not load the network stack and zstandard into a device's supervisor.
"""

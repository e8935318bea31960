"""Single-file bundles: a msgpack header and one zstd frame per object (``docs/formats/bundle.md``).

Import from :mod:`.format`, :mod:`.reader`, :mod:`.writer`; nothing is
re-exported, so code that never opens a bundle does not load msgpack and zstandard.
"""

"""pvinit's benchmarks side by side with its peers: ``tools/bench`` runs them all.

See ``benchmarks/context.py`` for what a section is, and
``docs/benchmarks.md`` (written by ``tools/bench``) for the figures.
"""

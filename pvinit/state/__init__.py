"""State revisions: the typed model, canonical JSON, keys, diffs and update plans.

- :mod:`pvinit.state.canonical` — canonical bytes, digests, strict JSON parsing
- :mod:`pvinit.state.paths` — revision key rules
- :mod:`pvinit.state.documents` — typed views of device.json, bsp/run.json, <name>/run.json
- :mod:`pvinit.state.model` — :class:`~pvinit.state.model.State`, validated as a whole
- :mod:`pvinit.state.diff` — what changed between two revisions, and applying that back
- :mod:`pvinit.state.plan` — what to fetch, stop, start, and whether to reboot
"""

from __future__ import annotations

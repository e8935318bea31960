"""Figures the peers publish about themselves: quoted, never measured here.

They sit beside pvinit's measured figures in the report (and in a plot,
hatched) so a reader can place pvinit, but they come from the peers' own
pages and were taken on other hardware with other workloads.  They are not
in ``figures`` of ``--json`` (which holds only what this run measured); the
JSON carries them under ``published`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedFigure:
    """One figure as its project states it."""

    peer: str
    what: str
    value_mb: float
    #: How the project words it, for the report ("~119 MB").
    quoted: str

    def to_dict(self) -> dict[str, str | float]:
        return {"peer": self.peer, "what": self.what, "value_mb": self.value_mb,
                "quoted": self.quoted}


PUBLISHED: tuple[PublishedFigure, ...] = (
    PublishedFigure("Docker (dockerd + containerd)", "idle memory", 119.0, "~119 MB"),
    PublishedFigure("Atym agent", "idle memory", 10.1, "10.1 MB"),
    PublishedFigure("Atym agent", "install size", 11.75, "11.75 MB"),
    PublishedFigure("Pantavisor", "binary size", 1.0, "~1 MB"),
)

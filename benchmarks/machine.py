"""What machine and which peer versions a run measured: printed atop the report.

Figures from different machines or peer versions are not comparable; the
report and the JSON carry this so a reader comparing two runs can tell.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

#: Peer and tool versions worth recording: (label, argv, how to pick the version line).
_VERSIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lxc", ("lxc-start", "--version")),
    ("ostree", ("ostree", "--version")),
    ("casync", ("casync", "--version")),
    ("zstd", ("zstd", "--version")),
    ("mksquashfs", ("mksquashfs", "-version")),
)


def _first_version_line(argv: tuple[str, ...]) -> str:
    """The version a tool prints: a ``Version:`` field, else the first dotted number."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    for line in lines:
        if "Version:" in line:  # ostree prints a YAML-ish block
            return line.split("Version:", 1)[1].strip().strip("'")
    for line in lines:
        found = _VERSION.search(line)
        if found:
            return found.group(1)
    return lines[0].split()[-1] if lines else "unknown"


_VERSION = re.compile(r"\bv?(\d+(?:\.\d+)+)\b")


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _debian() -> str:
    try:
        return Path("/etc/debian_version").read_text().strip()
    except OSError:
        return "not Debian"


def describe_machine() -> dict[str, str | int | float]:
    """Cores, memory, kernel, distribution, Python and peer versions of this run."""
    described: dict[str, str | int | float] = {
        "cores": os.cpu_count() or 0,
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "debian": _debian(),
        "python": platform.python_version(),
    }
    for label, argv in _VERSIONS:
        described[label] = _first_version_line(argv)
    return described

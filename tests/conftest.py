"""Shared test conventions.

``@pytest.mark.root`` marks a test that needs real root powers (mounts, loop
devices, namespaces, LXC).  Without root it is skipped with the reason; when
the ``CI`` environment variable is set, that skip becomes a failure, so CI
can never pass by skipping the real-component tests.  :func:`need_tool` does
the same for external programs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IN_CI = bool(os.environ.get("CI"))


def skip_or_fail(reason: str) -> None:
    """Skip locally; fail under CI, where every real-component test must run."""
    if IN_CI:
        pytest.fail(f"CI is set, so this may not skip: {reason}", pytrace=False)
    pytest.skip(reason)


def need_tool(name: str) -> str:
    """Path of an external program, or skip/fail when it is not installed."""
    path = shutil.which(name)
    if path is None and Path(f"/usr/sbin/{name}").exists():
        path = f"/usr/sbin/{name}"
    if path is None:
        skip_or_fail(f"needs the {name!r} program (run tools/bootstrap)")
    assert path is not None
    return path


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        skip_or_fail("needs root (mounts, loop devices, namespaces or LXC)")


def settled_log_lines(path: Path, *, quiet: float = 0.15, limit: float = 5.0) -> list[str]:
    """The lines of a server's log once it stopped growing for ``quiet`` seconds.

    A server (nginx, a registry) writes its access-log line just after it
    answers, so a client can be faster than the log; the wait is bounded.
    """
    import time

    lines = path.read_text().splitlines()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(quiet)
        again = path.read_text().splitlines()
        if len(again) == len(lines):
            return again
        lines = again
    return lines

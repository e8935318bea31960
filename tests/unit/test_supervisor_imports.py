"""What the supervisor holds for the device's whole life: only what a boot needs.

Every module imported at boot stays in the supervisor's heap until the next
reboot (issue 3: idle memory, boot time).  ``typing``, ``dataclasses`` (with
``inspect`` and ``ast``), ``datetime``, ``shutil`` (with ``bz2`` and
``lzma``), ``runpy`` and OpenSSL are each used by updates, builds or type
checking only, so they must be imported where those need them.  python-lxc
(``_lxc`` with liblxc, ~1.4 MiB) is imported only in the short-lived forks of
:mod:`pvinit.containers.liblxc`, and its ``lxc`` package (with ``subprocess``
and ``locale``) not at all; the control and notify sockets are the C type
``_socket.socket``, without ``socket``'s enums and ``selectors``.  The update
worker, the inbox watcher and the control server are imported once every
group started; ``queue`` is not needed at all.  An update is prepared in a
short-lived fork (:mod:`pvinit.forked`): the update engine and its libraries
never enter the supervisor.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOOT_MODULES = (
    "pvinit.pid1.init",
    "pvinit.supervisor.main",
    "pvinit.supervisor.updates",
    "pvinit.containers.lxc_driver",
    "pvinit.control.server",
    "pvinit.control.handlers",
    "pvinit.control.actions",
    "pvinit.update.recovery",
)
NOT_AT_BOOT = (
    "typing", "dataclasses", "inspect", "ast", "datetime", "shutil", "bz2", "lzma", "runpy",
    "hashlib", "_hashlib", "argparse", "logging", "lxc", "_lxc", "subprocess", "locale", "copy",
    "weakref", "queue", "socket", "selectors",
)


def _held_after_importing(modules: tuple[str, ...], asked: tuple[str, ...]) -> list[str]:
    """Which of ``asked`` a fresh interpreter holds once it imported ``modules``."""
    code = (
        f"import sys\nfor name in {modules!r}: __import__(name)\n"
        f"print(*[n for n in {asked!r} if n in sys.modules])"
    )
    site = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *site]))
    out = subprocess.run(
        [sys.executable, "-S", "-P", "-c", code], env=env, capture_output=True, text=True,
        check=True,
    )
    return out.stdout.split()


def test_supervisor_boot_modules_leave_out_what_only_updates_and_builds_use() -> None:
    assert _held_after_importing(BOOT_MODULES, NOT_AT_BOOT) == []


BEFORE_THE_FIRST_CONTAINER = (
    "pvinit.pid1.init",
    "pvinit.supervisor.main",
    "pvinit.supervisor.updates",
    "pvinit.containers.lxc_driver",
    "pvinit.update.recovery",
)
"""What runs between PID 1's fork and the first ``lxc-start`` (issue 3: boot time)."""
NOT_BEFORE_THE_FIRST_CONTAINER = (
    "pvinit.control.server", "pvinit.control.handlers", "pvinit.objects.disk",
    "pvinit.objects.disk_fsck", "pvinit.objects.store",
)


def test_the_way_to_the_first_container_imports_neither_control_nor_the_object_store() -> None:
    held = _held_after_importing(BEFORE_THE_FIRST_CONTAINER, NOT_BEFORE_THE_FIRST_CONTAINER)
    assert held == []


AFTER_AN_UPDATE = (
    *BOOT_MODULES,
    "pvinit.supervisor.worker",
    "pvinit.update.trying",
    "pvinit.state.plan",
    "pvinit.trails.install",
)
"""What the supervisor itself imports to take an update: the worker and the loop's half."""
ONLY_IN_THE_FORK = (
    "pvinit.update.engine", "pvinit.signing.trust", "pvinit.bundle.reader",
    "pvinit.transport.sources", "cryptography", "zstandard", "msgpack", "http.client",
    "_hashlib", "typing",
)


def test_an_update_leaves_the_engine_s_modules_in_its_fork() -> None:
    """The engine's half that needs them runs in :mod:`pvinit.forked` (~8.5 MiB, issue 3)."""
    assert _held_after_importing(AFTER_AN_UPDATE, ONLY_IN_THE_FORK) == []

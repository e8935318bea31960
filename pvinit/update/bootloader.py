"""The bootloader's part, played by the dev-mode launcher (and by ``tools/vm`` for QEMU).

Before each boot it reads the device's boot environment, applies the
``pv_try``/``pv_trying``/``pv_rev`` rule (:func:`pvinit.boot.rule.choose_boot`),
writes the marker change back in one atomic write, and hands PID 1 the
chosen revision as environment words, exactly as U-Boot would on the kernel
command line.  A device whose environment is blank boots with no revision
named: the supervisor then runs ``refs/current`` or installs the factory bundle.
"""

# os.path, not pathlib: the dev launcher imports this before every boot (issue 3).
# ruff: noqa: PTH118, PTH120

from __future__ import annotations

import os

from pvinit import durable
from pvinit.boot.env import BootEnv, open_boot_env
from pvinit.boot.rule import choose_boot
from pvinit.errors import PvError
from pvinit.typecheck import TYPE_CHECKING
from pvinit.update.settings import DeviceSettings, load_settings_of

if TYPE_CHECKING:
    from pvinit.trails.layout import StorageLayout


def open_device_bootenv(layout: StorageLayout, settings: DeviceSettings) -> BootEnv:
    """The device's boot environment, where and as its settings say (relative to storage)."""
    return open_bootenv_of(layout.root, settings)


def open_bootenv_of(storage: str | os.PathLike[str], settings: DeviceSettings) -> BootEnv:
    """:func:`open_device_bootenv` on a plain storage path (no ``pathlib``: the dev launcher)."""
    path = os.path.join(storage, settings.bootenv_path)  # an absolute bootenv_path wins
    durable.makedirs(os.path.dirname(path))
    return open_boot_env(settings.bootenv_kind, path, **dict(settings.bootenv_options))


def dev_choose_boot(storage: str | os.PathLike[str]) -> dict[str, str]:
    """Pick the revision to boot from ``storage``'s boot environment; returns PID 1's env words.

    Imports nothing heavy (no ``pathlib``, no ``json`` without a settings
    file): it runs in the dev launcher before every boot, ahead of PID 1.
    """
    try:
        env = open_bootenv_of(storage, load_settings_of(storage))
        choice = choose_boot(env.read())
        if choice.changes:
            env.update(choice.changes)
    except PvError:
        return {}  # a bootloader always boots something: the supervisor falls back to refs
    return choice.as_environ()

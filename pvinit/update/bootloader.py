"""The bootloader's part, played by the dev-mode launcher (and by ``tools/vm`` for QEMU).

Before each boot it reads the device's boot environment, applies the
``pv_try``/``pv_trying``/``pv_rev`` rule (:func:`pvinit.boot.rule.choose_boot`),
writes the marker change back in one atomic write, and hands PID 1 the
chosen revision as environment words, exactly as U-Boot would on the kernel
command line.  A device whose environment is blank boots with no revision
named: the supervisor then runs ``refs/current`` or installs the factory bundle.
"""

from __future__ import annotations

from pathlib import Path

from pvinit import durable
from pvinit.boot.env import BootEnv, open_boot_env
from pvinit.boot.rule import choose_boot
from pvinit.errors import PvError
from pvinit.trails.layout import StorageLayout
from pvinit.update.settings import DeviceSettings, load_settings


def open_device_bootenv(layout: StorageLayout, settings: DeviceSettings) -> BootEnv:
    """The device's boot environment, where and as its settings say (relative to storage)."""
    path = Path(settings.bootenv_path)
    if not path.is_absolute():
        path = layout.root / path
    durable.makedirs(path.parent)
    return open_boot_env(settings.bootenv_kind, path, **dict(settings.bootenv_options))


def dev_choose_boot(storage: Path) -> dict[str, str]:
    """Pick the revision to boot from ``storage``'s boot environment; returns PID 1's env words."""
    layout = StorageLayout(storage)
    try:
        env = open_device_bootenv(layout, load_settings(layout))
        choice = choose_boot(env.read())
        if choice.changes:
            env.update(choice.changes)
    except PvError:
        return {}  # a bootloader always boots something: the supervisor falls back to refs
    return choice.as_environ()

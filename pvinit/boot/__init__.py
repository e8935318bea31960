"""Boot environments shared with the bootloader, and the try-boot rule.

Backends: :class:`FileBootEnv` (dev and tests), :class:`UBootEnv` (a U-Boot
environment image ``fw_printenv``/``fw_setenv`` use), :class:`GrubEnv` (a
GRUB environment block ``grub-editenv`` uses).  :mod:`pvinit.boot.rule` is
the pure ``pv_rev``/``pv_try``/``pv_trying`` contract.
"""

from pvinit.boot.env import BootEnv, EnvSnapshot, FileBootEnv, open_boot_env
from pvinit.boot.rule import BootChoice, abandon_try, begin_try, choose_boot, commit
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from pvinit.boot.grub import GrubEnv
    from pvinit.boot.uboot import UBootEnv

__all__ = [
    "BootChoice",
    "BootEnv",
    "EnvSnapshot",
    "FileBootEnv",
    "GrubEnv",
    "UBootEnv",
    "abandon_try",
    "begin_try",
    "choose_boot",
    "commit",
    "open_boot_env",
]


def __getattr__(name: str) -> object:
    """``GrubEnv`` and ``UBootEnv`` on first use: a device runs one backend, not three."""
    if name == "GrubEnv":
        from pvinit.boot.grub import GrubEnv

        return GrubEnv
    if name == "UBootEnv":
        from pvinit.boot.uboot import UBootEnv

        return UBootEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

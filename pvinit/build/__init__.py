"""Building store objects: reproducible squashfs images and safe rootfs extraction.

``squashfs`` turns a directory tree into the same bytes on every build;
``rootfs`` unpacks someone else's tar archive without letting it write
outside its destination.  The image recipes themselves live in ``images/``
and the BSP gatherer in ``bsp/`` at the top of the repository.
"""

from __future__ import annotations

from pvinit.build.rootfs import check_member, extract_tar
from pvinit.build.squashfs import make_squashfs

__all__ = ["check_member", "extract_tar", "make_squashfs"]

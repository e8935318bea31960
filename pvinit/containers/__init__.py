"""The container layer of the device runtime: LXC containers, their volumes and readiness.

The supervisor talks to containers only through :class:`ContainerSpec` (what to
run) and :class:`ContainerDriver` (how to run it), so the state model and the
LXC details never meet.  :mod:`.lxc_driver` is the one module that imports
``lxc``; everything else here can be imported on a machine without liblxc.
"""

from __future__ import annotations

from pvinit.containers.driver import ContainerDriver
from pvinit.containers.spec import BindMount, ContainerSpec, RuntimeStatus

__all__ = ["BindMount", "ContainerDriver", "ContainerSpec", "RuntimeStatus"]

"""The container layer of the device runtime: LXC containers, their volumes and readiness.

The supervisor talks to containers only through :class:`ContainerSpec` (what to
run) and :class:`ContainerDriver` (how to run it), so the state model and the
LXC details never meet.  :mod:`.lxc_driver` runs them with LXC's tools, and
:mod:`.liblxc` is the one module that uses python-lxc (``_lxc``), only in
short-lived forks; everything here can be imported on a machine without
liblxc.
"""

from __future__ import annotations

from pvinit.containers.driver import ContainerDriver
from pvinit.containers.spec import BindMount, ContainerSpec, RuntimeStatus

__all__ = ["BindMount", "ContainerDriver", "ContainerSpec", "RuntimeStatus"]

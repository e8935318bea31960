"""Where the control socket lives, on the host and inside a ``mgmt`` container.

The socket sits alone in its own directory, ``<run-dir>/pvinit/ctl/ctl.sock``,
so that directory can be bind-mounted into a container granted the ``mgmt``
role without showing it anything else of ``<run-dir>/pvinit`` (mounts, LXC
definitions, other containers' notify sockets).  Binding the directory, not
the socket file, matters: the supervisor re-creates the socket on every
start (unlink + bind), and a bind of the old file would keep pointing at a
dead inode.  ``<run-dir>/pvinit/ctl.sock`` stays the well-known path (what
``pvctl`` and ``curl --unix-socket /run/pvinit/ctl.sock`` use): a relative
symlink to ``ctl/ctl.sock``.
"""

from __future__ import annotations

from pathlib import Path

SOCKET_DIR = "ctl"
SOCKET_NAME = "ctl.sock"
#: Where a ``mgmt`` container finds the socket's directory (below its notify dir).
MGMT_MOUNT = "/run/pvinit/ctl"
MGMT_ROLE = "mgmt"


def socket_dir(run_dir: Path) -> Path:
    return run_dir / "pvinit" / SOCKET_DIR


def socket_path(run_dir: Path) -> Path:
    """The socket itself, in its own directory."""
    return socket_dir(run_dir) / SOCKET_NAME


def well_known_path(run_dir: Path) -> Path:
    """``<run-dir>/pvinit/ctl.sock``: a symlink to :func:`socket_path`."""
    return run_dir / "pvinit" / SOCKET_NAME

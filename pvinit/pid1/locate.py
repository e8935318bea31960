"""Finding a dev-mode device from the host: its PID 1, status file and control socket.

A dev device (``pvinit --storage DIR``) keeps its ``/run`` on a tmpfs in its
own mount namespace, so the host reaches it through ``/proc/<its PID 1>/root``:
nothing of the device leaks onto the host.  ``pvctl --storage DIR``, the
launcher's status table, the tests and the benchmarks all find it this way.
"""

from __future__ import annotations

from pathlib import Path

PID1_SCRIPT = b"/pvinit/pid1/__main__.py"
"""How a dev PID 1 shows in its command line when run as a file (the launcher's way)."""


def find_dev_pid1(storage: Path) -> int | None:
    """Host pid of the PID 1 a dev launcher booted on ``storage`` (scans /proc)."""
    wanted = str(storage.absolute()).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        pid1 = b"pvinit.pid1" in words or any(w.endswith(PID1_SCRIPT) for w in words)
        if pid1 and b"--storage" in words and wanted in words \
                and not words[0].endswith(b"unshare"):
            return int(entry.name)
    return None


def status_path(init_pid: int, storage: Path) -> Path:
    """The device's status file seen from the host, through its PID 1's root."""
    relative = (storage.absolute() / "run" / "pvinit" / "status.json").relative_to("/")
    return Path(f"/proc/{init_pid}/root") / relative


def dev_socket_path(init_pid: int, storage: Path) -> Path:
    """The device's control socket seen from the host, through its PID 1's root."""
    relative = (storage.absolute() / "run" / "pvinit" / "ctl" / "ctl.sock").relative_to("/")
    return Path(f"/proc/{init_pid}/root") / relative

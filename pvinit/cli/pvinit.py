"""``pvinit``: the device.

As ``/sbin/init`` (PID 1) it runs the PID-1 loop.  On a dev machine
``pvinit --storage DIR [--factory BUNDLE]`` boots the same code as PID 1 of
a new PID and mount namespace (:mod:`pvinit.pid1.launcher`), prints the
status table (name, group, status, pid, uptime) whenever it changes, and on
Ctrl-C asks the device for an orderly power-off.

``--factory`` copies the bundle to ``<storage>/factory.pvb`` when the device
is blank (no ``refs/current``): the supervisor installs it on first boot,
as a device flashed at the factory would.  The status is read from the
device's own ``/run`` (a tmpfs in the namespace's private mounts) through
``/proc/<its PID 1>/root``, so nothing of the device leaks onto the host.
Other arguments are passed to PID 1 (``--supervisor-cmd``, ``--stop-grace``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from pvinit import __version__, durable
from pvinit.errors import BadInputError, PvError
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from pvinit.pid1.launcher import Launcher


def _copy_factory(storage: Path, bundle: Path) -> None:
    """Put ``bundle`` where a blank device looks for it (a no-op once the device has booted)."""
    from pvinit.bundle.reader import BundleReader
    from pvinit.trails.layout import StorageLayout
    from pvinit.trails.refs import read_ref

    layout = StorageLayout(storage)
    with BundleReader(bundle):  # a bad bundle fails here, before anything boots
        pass
    if read_ref(layout, "current") is not None or layout.factory_bundle.exists():
        return
    durable.makedirs(layout.root)
    with open(bundle, "rb") as source, durable.save_file(
        layout.factory_bundle, name="factory"
    ) as target:
        import shutil  # first boot with --factory only

        shutil.copyfileobj(source, target, 1 << 20)


def status_path(init_pid: int, storage: Path) -> Path:
    """The device's status file seen from the host, through its PID 1's root."""
    relative = (storage / "run" / "pvinit" / "status.json").relative_to("/")
    return Path(f"/proc/{init_pid}/root") / relative


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


def dev_socket_path(init_pid: int, storage: Path) -> Path:
    """The dev device's control socket seen from the host, through its PID 1's root."""
    relative = (storage.absolute() / "run" / "pvinit" / "ctl" / "ctl.sock").relative_to("/")
    return Path(f"/proc/{init_pid}/root") / relative


def _print_status_loop(
    launcher: Launcher, storage: Path, interval: float, stop: threading.Event
) -> None:
    from pvinit.supervisor.status import StatusDocument, format_table, read_status

    last: StatusDocument | None = None
    while not stop.wait(interval):
        pid = launcher.init_pid
        if pid is None:
            continue
        try:
            document = read_status(status_path(pid, storage))
        except (PvError, OSError):
            continue
        if document is None or document.same_content(last):
            continue
        last = document
        sys.stdout.write(format_table(document) + "\n\n")
        sys.stdout.flush()


def _run_pid1(args: list[str]) -> int:
    signal.pthread_sigmask(
        signal.SIG_BLOCK, set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
    )
    from pvinit.pid1.init import main as pid1_main

    return pid1_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pvinit",
        description="boot a pvinit device in a PID + mount namespace (dev mode)",
        epilog="other arguments are passed to PID 1 (e.g. --supervisor-cmd, --stop-grace)",
    )
    parser.add_argument("--version", action="version", version=f"pvinit {__version__}")
    parser.add_argument("--storage", type=Path, required=True, help="the device's storage dir")
    parser.add_argument("--factory", type=Path, help="bundle to install on a blank device")
    parser.add_argument(
        "--status-interval", type=float, default=1.0, help="seconds between status checks"
    )
    parser.add_argument("--max-boots", type=int, default=None, help="stop after N boots")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os

    words = list(sys.argv[1:] if argv is None else argv)
    if os.getpid() == 1:
        return _run_pid1(words)
    args, passthrough = build_parser().parse_known_args(words)
    from pvinit.pid1.launcher import BootEnd, LaunchConfig, Launcher

    storage = Path(args.storage).absolute()
    try:
        if args.status_interval <= 0:
            raise BadInputError("must be a positive number of seconds", where="--status-interval")
        if args.factory is not None:
            _copy_factory(storage, Path(args.factory).absolute())
        launcher = Launcher(
            LaunchConfig(storage=storage, max_boots=args.max_boots, pid1_args=tuple(passthrough))
        )

        def on_signal(signo: int, frame: object) -> None:
            del signo, frame
            launcher.request_poweroff()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        stop = threading.Event()
        printer = threading.Thread(
            target=_print_status_loop,
            args=(launcher, storage, args.status_interval, stop),
            daemon=True,
        )
        printer.start()
        try:
            results = launcher.run()
        finally:
            stop.set()
    except PvError as error:
        sys.stderr.write(f"pvinit: error: {error}\n")
        return error.exit_code
    return 0 if results and results[-1].end in (BootEnd.POWEROFF, BootEnd.REBOOT) else 1


if __name__ == "__main__":
    raise SystemExit(main())

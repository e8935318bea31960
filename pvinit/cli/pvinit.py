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
``/proc/<its PID 1>/root`` (:mod:`pvinit.pid1.locate`), so nothing of the
device leaks onto the host.  Other arguments are passed to PID 1
(``--supervisor-cmd``, ``--stop-grace``).

This command is in front of every dev boot, so its usual path imports no
``argparse`` (nor ``pathlib``): :func:`parse_launch_args` reads the four
options itself and hands anything else -- ``--help``, ``--version``, a
missing or malformed value, an abbreviation -- to the ``argparse`` parser
built from the same table, which answers exactly as before.
"""

# os.path, not pathlib: the dev launcher imports this before every boot (issue 3).
# ruff: noqa: PTH100

from __future__ import annotations

import os
import sys

from pvinit import __version__
from pvinit.errors import BadInputError, PvError
from pvinit.record import record
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from pvinit.supervisor.status import StatusDocument

# (option, metavar, help, parse): the one definition both parsers read.
LAUNCH_OPTIONS: tuple[tuple[str, str, str, Callable[[str], object]], ...] = (
    ("--storage", "DIR", "the device's storage dir", str),
    ("--factory", "BUNDLE", "bundle to install on a blank device", str),
    ("--status-interval", "SECONDS", "seconds between status checks (default 1)", float),
    ("--max-boots", "N", "stop after N boots", int),
)


@record(frozen=True)
class LaunchArgs:
    storage: str
    factory: str | None = None
    status_interval: float = 1.0
    max_boots: int | None = None
    passthrough: tuple[str, ...] = ()
    """Words for PID 1 (``--supervisor-cmd``, ``--stop-grace``)."""


def build_parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="pvinit",
        description="boot a pvinit device in a PID + mount namespace (dev mode)",
        epilog="other arguments are passed to PID 1 (e.g. --supervisor-cmd, --stop-grace)",
    )
    parser.add_argument("--version", action="version", version=f"pvinit {__version__}")
    for option, metavar, text, parse in LAUNCH_OPTIONS:
        parser.add_argument(
            option, metavar=metavar, help=text, type=parse, required=option == "--storage"
        )
    return parser


def _quick_parse(words: Sequence[str]) -> LaunchArgs | None:
    """The launch options from ``words``, or None for anything :func:`build_parser` must judge."""
    parsers = {option: parse for option, _, _, parse in LAUNCH_OPTIONS}
    found: dict[str, object] = {}
    passthrough: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        name, equals, value = word.partition("=")
        if name in ("-h", "--help", "--version"):
            return None
        if name not in parsers:
            if word.startswith("--") and any(o.startswith(name) for o in parsers):
                return None  # an abbreviation: argparse's rules decide
            passthrough.append(word)
            continue
        if not equals:
            if index >= len(words) or words[index].startswith("-"):
                return None
            value = words[index]
            index += 1
        try:
            found[name] = parsers[name](value)
        except ValueError:
            return None
    storage = found.get("--storage")
    if not isinstance(storage, str):
        return None
    factory, interval, boots = (found.get(o) for o in ("--factory", "--status-interval",
                                                         "--max-boots"))
    return LaunchArgs(
        storage=storage,
        factory=factory if isinstance(factory, str) else None,
        status_interval=interval if isinstance(interval, float) else 1.0,
        max_boots=boots if isinstance(boots, int) else None,
        passthrough=tuple(passthrough),
    )


def parse_launch_args(words: Sequence[str]) -> LaunchArgs:
    """The launcher's options; exits with argparse's usage message (code 2) on bad ones."""
    quick = _quick_parse(words)
    return quick if quick is not None else parse_with_argparse(words)


def parse_with_argparse(words: Sequence[str]) -> LaunchArgs:
    """:func:`parse_launch_args` the slow way: help, version, errors, abbreviations."""
    args, passthrough = build_parser().parse_known_args(list(words))
    return LaunchArgs(
        storage=args.storage,
        factory=args.factory,
        status_interval=1.0 if args.status_interval is None else args.status_interval,
        max_boots=args.max_boots,
        passthrough=tuple(passthrough),
    )


def _copy_factory(storage: str, bundle: str) -> None:
    """Put ``bundle`` where a blank device looks for it (a no-op once the device has booted)."""
    import shutil
    from pathlib import Path

    from pvinit import durable
    from pvinit.bundle.reader import BundleReader
    from pvinit.trails.layout import StorageLayout
    from pvinit.trails.refs import read_ref

    layout = StorageLayout(Path(storage))
    with BundleReader(Path(bundle)):  # a bad bundle fails here, before anything boots
        pass
    if read_ref(layout, "current") is not None or layout.factory_bundle.exists():
        return
    durable.makedirs(layout.root)
    with open(bundle, "rb") as source, durable.save_file(
        layout.factory_bundle, name="factory"
    ) as target:
        shutil.copyfileobj(source, target, 1 << 20)


class StatusPrinter:
    """Prints the device's status table when it changed (the launcher's watcher).

    Reads the status through the namespace's PID 1 (:mod:`pvinit.pid1.locate`);
    its modules load at the first look, one interval after the launch, so they
    are not in front of the boot.
    """

    def __init__(self, storage: str) -> None:
        self.storage = storage
        self.last: StatusDocument | None = None

    def __call__(self, init_pid: int) -> None:
        from pathlib import Path

        from pvinit.pid1.locate import status_path
        from pvinit.supervisor.status import format_table, read_status

        try:
            document = read_status(status_path(init_pid, Path(self.storage)))
        except (PvError, OSError):
            return
        if document is None or document.same_content(self.last):
            return
        self.last = document
        sys.stdout.write(format_table(document) + "\n\n")
        sys.stdout.flush()


def _run_pid1(args: list[str]) -> int:
    from pvinit.pid1 import signal

    signal.pthread_sigmask(
        signal.SIG_BLOCK, set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
    )
    from pvinit.pid1.init import main as pid1_main

    return pid1_main(args)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if os.getpid() == 1:
        return _run_pid1(words)
    args = parse_launch_args(words)
    from pvinit.pid1 import signal
    from pvinit.pid1.launcher import BootEnd, LaunchConfig, Launcher

    storage = os.path.abspath(args.storage)
    try:
        if not args.status_interval > 0:
            raise BadInputError("must be a positive number of seconds", where="--status-interval")
        if args.factory is not None:
            _copy_factory(storage, os.path.abspath(args.factory))
        launcher = Launcher(
            LaunchConfig(storage=storage, max_boots=args.max_boots, pid1_args=args.passthrough),
            watch=StatusPrinter(storage),
            watch_interval=args.status_interval,
        )

        def on_signal(signo: int, frame: object) -> None:
            del signo, frame
            launcher.request_poweroff()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        results = launcher.run()
    except PvError as error:
        sys.stderr.write(f"pvinit: error: {error}\n")
        return error.exit_code
    return 0 if results and results[-1].end in (BootEnd.POWEROFF, BootEnd.REBOOT) else 1


if __name__ == "__main__":
    raise SystemExit(main())

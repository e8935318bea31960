"""Command line of the supervisor, the child PID 1 starts.

``python3 -m pvinit.supervisor [--storage DIR] [--run-dir DIR] [--factory BUNDLE]``

``--storage`` defaults to ``$PVINIT_STORAGE`` (PID 1 sets it), else
``/storage``.  ``--run-dir`` defaults to ``/run`` on a device and to
``<storage>/run`` in dev mode (``$PVINIT_DEV``): PID 1 mounts a tmpfs there,
and the dev launcher outside the namespace reads the status file through
``/proc/<pid 1>/root<storage>/run/pvinit/status.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pvinit.errors import PvError
from pvinit.supervisor.log import SupervisorLog
from pvinit.supervisor.loop import Supervisor, SupervisorConfig


def default_run_dir(storage: Path, environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return storage / "run" if env.get("PVINIT_DEV") else Path("/run")


def parse_args(argv: Sequence[str]) -> SupervisorConfig:
    parser = argparse.ArgumentParser(prog="pvinit-supervisor", description=__doc__)
    parser.add_argument("--storage", type=Path, default=None)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--factory", type=Path, default=None, help="bundle for a blank device")
    parser.add_argument("--stop-grace", type=float, default=SupervisorConfig.stop_grace)
    args = parser.parse_args(list(argv))
    storage = (args.storage or Path(os.environ.get("PVINIT_STORAGE", "/storage"))).absolute()
    run_dir = (args.run_dir or default_run_dir(storage)).absolute()
    return SupervisorConfig(
        storage=storage,
        run_dir=run_dir,
        factory=args.factory.absolute() if args.factory else None,
        stop_grace=args.stop_grace,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    log = SupervisorLog()
    try:
        from pvinit.containers.lxc_driver import LxcDriver

        driver = LxcDriver(config.lxcpath)
    except (ImportError, PvError, OSError) as error:
        log(f"cannot set up the container driver: {error}")
        return 10
    return Supervisor(config, driver=driver, log=log).run()

"""Command line of the supervisor, the child PID 1 starts.

``python3 -m pvinit.supervisor [--storage DIR] [--run-dir DIR] [--factory BUNDLE]``

``--storage`` defaults to ``$PVINIT_STORAGE`` (PID 1 sets it), else
``/storage``.  ``--run-dir`` defaults to ``/run`` on a device and to
``<storage>/run`` in dev mode (``$PVINIT_DEV``): PID 1 mounts a tmpfs there,
and the dev launcher outside the namespace reads the status file through
``/proc/<pid 1>/root<storage>/run/pvinit/status.json``.
"""

from __future__ import annotations

import _thread
import gc
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


USAGE = "pvinit-supervisor [--storage DIR] [--run-dir DIR] [--factory BUNDLE] [--stop-grace S]"
_OPTIONS = ("--storage", "--run-dir", "--factory", "--stop-grace")


def parse_args(argv: Sequence[str]) -> SupervisorConfig:
    """The supervisor's config from its command line (ValueError names a bad word).

    Parsed by hand, not with argparse: only PID 1 starts the supervisor, and
    argparse (with gettext) is ~4 ms and ~0.5 MB on every boot of every device.
    """
    values: dict[str, str] = {}
    words = list(argv)
    while words:
        name, equals, value = words.pop(0).partition("=")
        if name not in _OPTIONS:
            raise ValueError(f"unknown argument {name!r}; usage: {USAGE}")
        if not equals:
            if not words:
                raise ValueError(f"{name} needs a value; usage: {USAGE}")
            value = words.pop(0)
        values[name] = value
    try:
        stop_grace = float(values.get("--stop-grace", SupervisorConfig.stop_grace))
    except ValueError:
        raise ValueError(f"--stop-grace needs seconds, not {values['--stop-grace']!r}") from None
    storage = Path(values.get("--storage") or os.environ.get("PVINIT_STORAGE", "/storage"))
    storage = storage.absolute()
    run_dir = Path(values["--run-dir"]) if values.get("--run-dir") else default_run_dir(storage)
    factory = values.get("--factory")
    return SupervisorConfig(
        storage=storage,
        run_dir=run_dir.absolute(),
        factory=Path(factory).absolute() if factory else None,
        stop_grace=stop_grace,
    )


THREAD_STACK_BYTES = 1 << 20
"""Stack of each thread the supervisor starts (the update worker, a bundle copy).

Not the default (``RLIMIT_STACK``, 8 MiB): where the kernel backs anonymous
memory with transparent huge pages (``enabled`` = ``always``, as Debian's
kernel does), the first touch of an 8 MiB stack maps a whole 2 MiB page for a
thread that uses a few KiB -- 2 MiB of the 16 MiB budget, found on the VM.
A stack under 2 MiB cannot hold an aligned huge page.  1 MiB is 40 times
what the worker uses (Python calls do not grow the C stack in 3.11+).
"""


def main(argv: Sequence[str] | None = None) -> int:
    _thread.stack_size(THREAD_STACK_BYTES)
    # Garbage collection waits until every group started (release_free_memory, in the
    # loop): the boot allocates in one burst, and passes over it would only slow it.
    gc.disable()
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as error:
        sys.stderr.write(f"pvinit-supervisor: {error}\n")
        return 2
    log = SupervisorLog()
    try:
        from pvinit.containers.lxc_driver import LxcDriver

        driver = LxcDriver(config.lxcpath)
    except (ImportError, PvError, OSError) as error:
        log(f"cannot set up the container driver: {error}")
        return 10
    return Supervisor(config, driver=driver, log=log).run()

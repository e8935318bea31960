"""``pvinit``: the device.

As ``/sbin/init`` (PID 1) it runs the PID-1 loop; on a dev machine
``pvinit --storage DIR`` boots the same code as PID 1 of a new PID and mount
namespace.  Until the supervisor lands, booting says so plainly.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pvinit import __version__
from pvinit.errors import RefusedError


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--version"]:
        print(f"pvinit {__version__}")
        return 0
    err = RefusedError("not yet: the device runtime (supervisor) is not built in this version")
    sys.stderr.write(f"pvinit: {err}\n")
    return err.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

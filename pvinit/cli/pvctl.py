"""``pvctl``: the field technician's tool (control API client).

The control API lands with its own issue; until then every command says so
plainly instead of pretending.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pvinit import __version__
from pvinit.errors import RefusedError


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--version"]:
        print(f"pvctl {__version__}")
        return 0
    err = RefusedError("not yet: the control API and pvctl are not built in this version")
    sys.stderr.write(f"pvctl: {err}\n")
    return err.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

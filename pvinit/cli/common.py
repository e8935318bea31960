"""What the three CLIs share: error handling and exit codes.

A command function takes the parsed arguments and an :class:`Output` and
returns an exit code.  :func:`run` turns every :class:`PvError` into one line
on stderr and its exit code, so no traceback ever reaches a user for input
they got wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from pvinit.cli.output import Output
from pvinit.errors import PvError, UsageError

Command = Callable[[argparse.Namespace, Output], int]


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so in-process callers get codes."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"see '{self.prog} --help'")


def run(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv``, run the selected command, map errors to exit codes."""
    json_mode = False
    try:
        args = parser.parse_args(argv)
        json_mode = bool(getattr(args, "json", False))
        out = Output(json_mode=json_mode)
        func: Command | None = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return UsageError.exit_code
        return func(args, out)
    except PvError as err:
        _report(prog, err, json_mode)
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        sys.stderr.write(f"{prog}: error: {where}{err.strerror or err}\n")
        return 1


def _report(prog: str, err: PvError, json_mode: bool) -> None:
    if json_mode:
        import json

        payload = {
            "error": type(err).__name__,
            "message": err.message,
            "where": err.where,
            "hint": err.hint,
            "exit_code": err.exit_code,
        }
        sys.stderr.write(json.dumps(payload, sort_keys=True) + "\n")
    else:
        sys.stderr.write(f"{prog}: error: {err}\n")


def parse_assignments(items: Sequence[str] | None, what: str) -> dict[str, str]:
    """``["A=1", "B=2"]`` -> ``{"A": "1", "B": "2"}``; a missing ``=`` is a UsageError."""
    result: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} must look like KEY=VALUE", where=item)
        result[key] = value
    return result

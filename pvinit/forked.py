"""Work in a short-lived fork: what it imports never enters the caller's memory.

The supervisor runs for the device's whole life and holds every module it
ever imported until the next boot.  Some work needs big modules for a
moment: installing a bundle or preparing an update (``cryptography``,
``zstandard``, ``msgpack``, ``http.client``: ~8.5 MiB of a supervisor that
idles at ~10), asking liblxc (~1.4 MiB).  :func:`run_forked` runs such work
in a fork of the caller; the child answers over a pipe and exits, and its
memory goes with it.  A fork, not a new interpreter: the child starts with
everything the caller already imported, and nothing is re-read from disk.

The child writes one JSON object per line:

- ``{"log": text}``: a line for the caller's log, passed on as it comes;
- the last line: ``{"value": ...}`` (the work's JSON-able result),
  ``{"error": class name, "message", "where", "hint"}`` (a :class:`PvError`,
  raised again in the caller as the same class, or its nearest ancestor in
  :mod:`pvinit.errors`; an ``OSError`` keeps its errno) or
  ``{"crash": point}`` (a simulated power cut, tests only).  It also
  carries ``"points"``: the persistence points the child passed, which the
  caller adds to its own record (:func:`pvinit.durable.seen_points`), so a
  test that cuts the power at the k-th point sees the child's steps too.

The answer ends at that last line, not at end-of-file: a container started
with ``daemonize`` leaves a monitor behind that may hold the pipe open.

The child first restores default signal dispositions (the caller's Python
handlers would only set flags for a loop the child does not run), so
SIGTERM ends it; signals are blocked from the fork until then.  It never
returns into the caller's code: every path ends in ``os._exit``, which
flushes none of the caller's buffers.  A caller with
threads (the supervisor's update worker forks beside the main loop) is
safe as long as the work takes no lock another thread may have held at the
fork: the child logs through the pipe, never through the caller's log, and
builds its own objects.
"""

from __future__ import annotations

import json
import os

from pvinit import durable, errors
from pvinit.errors import ExternalToolError, PvError
from pvinit.pid1 import signal
from pvinit.pid1.spawn import ALL_CATCHABLE, reset_signals
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    Log = Callable[[str], None]

_FINAL = ("value", "error", "crash")


def run_forked(
    work: Callable[[Log], object],
    *,
    what: str,
    where: str | None = None,
    log: Log | None = None,
    started: Callable[[int], None] | None = None,
) -> object:
    """``work(log)`` in a fork of this process; its JSON-able result, or its error again.

    ``what`` names the work in errors ("the liblxc helper"); ``where`` is the
    default ``where`` of an error the child did not place.  ``log`` receives the
    child's log lines; ``started`` the child's pid (to end it early with SIGTERM).
    A child that dies without answering is an :class:`ExternalToolError`.
    """
    read_end, write_end = os.pipe()
    # Signals stay blocked from the fork until the child has default dispositions:
    # one sent meanwhile would run (or be dropped by) the caller's Python handler.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ALL_CATCHABLE)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            os.close(read_end)
            _child(write_end, work)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(write_end)
    if started is not None:
        started(pid)
    answer: dict[str, object] | None = None
    try:
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                message = _parse(line)
                if message is None:
                    continue
                if any(key in message for key in _FINAL):
                    answer = message
                    break
                if log is not None:
                    log(str(message.get("log", "")))
    finally:
        _, status = os.waitpid(pid, 0)
    if answer is None:
        raise ExternalToolError(
            f"{what} ended without an answer ({_wait_status(status)})", where=where
        )
    points = answer.get("points")
    if isinstance(points, list):
        durable.note_points([str(p) for p in points])
    if "crash" in answer:
        raise durable.SimulatedCrash(str(answer["crash"]))
    if "error" in answer:
        raise _error(answer, what=what, where=where)
    return answer.get("value")


def _parse(line: bytes) -> dict[str, object] | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _wait_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _child(write_end: int, work: Callable[[Log], object]) -> None:  # pragma: no cover
    """The child's side of :func:`run_forked`: never returns, never runs the caller's cleanup."""
    code = 0
    try:
        reset_signals()
        first_point = len(durable.seen_points())

        def send(message: dict[str, object]) -> None:
            data = (json.dumps(message) + "\n").encode()
            while data:
                data = data[os.write(write_end, data):]

        def child_log(text: str) -> None:
            send({"log": text})

        answer: dict[str, object]
        try:
            answer = {"value": work(child_log)}
        except durable.SimulatedCrash as crash:
            answer = {"crash": str(crash)}
        except PvError as error:
            answer = {"error": _public_class(error), "message": error.message,
                      "where": None if error.where is None else str(error.where),
                      "hint": error.hint}
            reason = getattr(error, "reason", None)  # TrustRejectedError's
            if isinstance(reason, str):
                answer["reason"] = reason
        except OSError as error:
            answer = {"error": "OSError", "errno": error.errno, "message": error.strerror,
                      "where": error.filename}
        except Exception as error:  # noqa: BLE001 - told to the caller, which raises it
            answer = {"error": "Exception", "message": f"{error!r}", "where": None}
        answer["points"] = durable.seen_points()[first_point:]
        send(answer)
    except BaseException:  # noqa: BLE001 - the caller reports a missing answer
        code = 1
    finally:
        os._exit(code)


def _public_class(error: PvError) -> str:
    """The name of ``error``'s nearest class in :mod:`pvinit.errors` (so the caller has it)."""
    for kind in type(error).__mro__:
        name: str = kind.__name__
        if getattr(errors, name, None) is kind:
            return name
    return "PvError"


def _error(answer: dict[str, object], *, what: str, where: str | None) -> Exception:
    """The error the child raised, as the same class (ExternalToolError if unknown)."""
    placed = answer.get("where")
    place = str(placed) if placed is not None else where
    message = str(answer.get("message"))
    if answer.get("error") == "OSError":
        number = answer.get("errno")
        return OSError(number if isinstance(number, int) else 0, message, place)
    kind = getattr(errors, str(answer.get("error")), None)
    if not (isinstance(kind, type) and issubclass(kind, PvError)):
        kind = ExternalToolError
        message = f"{what}: {message}"
    hint = answer.get("hint")
    extra = {"reason": str(answer["reason"])} if "reason" in answer else {}
    try:
        return kind(message, where=place, hint=hint if isinstance(hint, str) else None, **extra)
    except TypeError:  # a class built another way: keep the message, lose the class
        return ExternalToolError(f"{what}: {message}", where=place)

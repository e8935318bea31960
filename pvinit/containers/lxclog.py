"""Read liblxc's own log: why a start failed, and how a container's init ended (pure).

python-lxc reports failures as ``False``/``-1`` with no reason; the reason is
in the container's ``lxc.log.file``.  liblxc logs a cascade of errors for one
failure ("Failed to exec" then "sync_wait", "ABORTING", "Failed to spawn"):
the *first* ERROR after the start is the cause, the rest is fallout.

At level INFO liblxc also records a non-zero exit of the container's init
(``Child <pid> ended on error (7)`` or ``ended on signal Killed(9)``); a clean exit
leaves no line, so "stopped and no such line" means status 0.
"""

from __future__ import annotations

import re

#: A log line; its prefix is the program liblxc runs in: ``lxc`` under python-lxc,
#: ``lxc-start`` when the driver starts containers with that tool.
_LINE = re.compile(
    r"^lxc(?:-[a-z]+)?(?: \S+)? \d+\.\d+ (?P<level>[A-Z]+)\s+(?P<source>\S+)"
    r" - (?P<origin>\S+) - (?P<message>.*)$"
)
_CHILD_END = re.compile(
    r"Child <(?P<pid>\d+)> ended on (?P<how>error|signal) ?[A-Za-z ]*\((?P<code>\d+)\)"
)

#: Errors liblxc logs after every failed start; they never explain it.
_FALLOUT = (
    "An error occurred in another process",
    "Received container state",
    "Failed to spawn container",
    "Failed to receive",
    "Failed to execute command",
    "Failed to receive state from monitor",
)


def first_error(log_text: str) -> str | None:
    """The message of the first ERROR line that explains a failure, if any."""
    fallback = None
    for raw in log_text.splitlines():
        match = _LINE.match(raw)
        if match is None or match["level"] not in {"ERROR", "CRIT", "ALERT", "FATAL"}:
            continue
        message = match["message"].strip()
        if any(noise in message for noise in _FALLOUT):
            fallback = fallback or message
            continue
        return message
    return fallback


def exit_status(log_text: str, init_pid: int) -> int | None:
    """The init's wait status as a shell would show it (N, or 128+signal), if logged.

    None means liblxc logged nothing for ``init_pid``: a clean exit (0) when
    the container is known to be stopped.
    """
    status = None
    for match in _CHILD_END.finditer(log_text):
        if int(match["pid"]) != init_pid:
            continue
        code = int(match["code"])
        status = code if match["how"] == "error" else 128 + code
    return status


_STARTED = re.compile(r'Started "[^"]*" with pid "(?P<pid>\d+)"')


def started_pid(log_text: str) -> int | None:
    """Host pid of the last init liblxc started (its NOTICE line), if logged.

    An init that exits at once is gone before ``init_pid`` can be asked; this
    line still names it, so its exit status can be found.
    """
    pid = None
    for match in _STARTED.finditer(log_text):
        pid = int(match["pid"])
    return pid

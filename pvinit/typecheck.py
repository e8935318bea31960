"""What the type checker needs from ``typing``, without importing it at run time.

``typing`` (with the ``re`` and ``functools`` machinery it drags along when
nothing else has yet) stays in the supervisor's heap for the device's whole
life: ~0.5 MiB and a few ms of every boot, for names that only mypy reads.
With ``from __future__ import annotations`` an annotation is a string, so a
module imports ``Any``, ``BinaryIO`` ... under ``if TYPE_CHECKING:`` and
pays nothing.  The few names used *outside* annotations come from here:

- :class:`Protocol`: to mypy the real one (structural typing); at run time
  a plain base class, which is all a protocol class is once checked (nothing
  in pvinit uses ``runtime_checkable``).
- :func:`dataclass_transform` and :func:`overload`: to mypy the real ones;
  at run time decorators that return what they are given.

PID 1 follows the same rule with its own ``TYPE_CHECKING = False``
(:mod:`pvinit.pid1`), and a unit test keeps ``typing`` out of both.
"""

from __future__ import annotations

__all__ = ["TYPE_CHECKING", "Protocol", "dataclass_transform", "overload"]

TYPE_CHECKING = False
"""``False`` at run time; mypy treats any ``TYPE_CHECKING`` as true."""

if TYPE_CHECKING:
    from typing import Protocol, dataclass_transform, overload
else:

    class Protocol:
        """Run-time stand-in for ``typing.Protocol``: an ordinary base class."""

        __slots__ = ()

    def dataclass_transform(**_: object):
        return lambda decorated: decorated

    def overload(function):
        return function

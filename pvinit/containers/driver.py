"""The interface between the supervisor and whatever runs containers.

The supervisor drives containers only through :class:`ContainerDriver`, so it
can be tested against a fake and so LXC stays behind one module
(:mod:`pvinit.containers.lxc_driver`).  Every method names the container as
the ``where`` of the :mod:`pvinit.errors` it raises, with the runtime's own
reason (for LXC: the first real error in liblxc's log) in the message.

How the supervisor learns that a container ended: :meth:`exit_fd` gives a
file descriptor that becomes readable when the container's init exits (a
pidfd), so a select/poll loop wakes up at once without polling; then
:meth:`exited` confirms and :meth:`exit_status` says how it ended.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

from pvinit.containers.spec import ContainerSpec
from pvinit.errors import PvError


class ContainerDriver(abc.ABC):
    """Create, start, stop and watch containers by name."""

    @abc.abstractmethod
    def create(self, spec: ContainerSpec) -> None:
        """Define (or redefine) the container from ``spec``; it is not started.

        Redefining a running container is refused (BusyError).  Bad extra keys
        are refused (BadInputError naming the key) before anything is written.
        """

    @abc.abstractmethod
    def start(self, name: str) -> int:
        """Start the container; return its init's host pid once it runs.

        Raises NotFoundError for an unknown name, BusyError when it already
        runs, ExternalToolError with the runtime's reason when it fails to start.
        """

    def start_all(
        self, names: Sequence[str], meanwhile: Callable[[], None] | None = None
    ) -> dict[str, int | PvError | OSError]:
        """Start a group's containers together: each name -> its init pid, or why it failed.

        One container failing does not stop the others.  ``meanwhile`` is work
        the caller wants done while the containers set up (the supervisor
        mounts the next group's volumes there); it is called once, after every
        start has begun.  This default starts them one by one; a runtime whose
        start has a long set-up (LXC) overlaps them and runs ``meanwhile`` in
        that wait.
        """
        results: dict[str, int | PvError | OSError] = {}
        for name in names:
            try:
                results[name] = self.start(name)
            except (PvError, OSError) as error:
                results[name] = error
        if meanwhile is not None:
            meanwhile()
        return results

    @abc.abstractmethod
    def stop(self, name: str, grace: float) -> None:
        """Send the halt signal, wait up to ``grace`` seconds, then kill.

        Returns once the container is stopped; stopping a stopped container is a no-op.
        """

    @abc.abstractmethod
    def state(self, name: str) -> str:
        """The runtime's state word (for LXC: STOPPED, STARTING, RUNNING, STOPPING, ...)."""

    @abc.abstractmethod
    def init_pid(self, name: str) -> int | None:
        """Host pid of the container's init, or None when it is not running."""

    @abc.abstractmethod
    def exit_fd(self, name: str) -> int | None:
        """A descriptor readable once the init started by :meth:`start` has exited.

        None when the container was not started by this driver instance.  The
        driver owns it and closes it on the next start, on destroy and on close.
        """

    @abc.abstractmethod
    def exited(self, name: str) -> bool:
        """True when the container was started by this driver and its init has ended."""

    @abc.abstractmethod
    def exit_status(self, name: str) -> int | None:
        """How the last run ended: the exit code, 128+signal, or None while it runs/unknown."""

    @abc.abstractmethod
    def destroy(self, name: str) -> None:
        """Stop (killing at once) and forget the container; unknown names are a no-op."""

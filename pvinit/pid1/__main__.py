"""``python3 -m pvinit.pid1``: PID 1 of a device, or of a dev-mode namespace.

Signals are blocked before anything else is imported: until then a SIGINT
would raise KeyboardInterrupt in PID 1 (NOTES), and a SIGTERM sent to a
namespace's init while it is not yet blocked would be dropped.
"""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
else:  # not signal: PID 1 does not import enum (see pvinit.pid1)
    import _signal as signal

signal.pthread_sigmask(
    signal.SIG_BLOCK, set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
)

from pvinit.pid1.init import main  # noqa: E402 - after the mask, on purpose

sys.exit(main(sys.argv[1:]))

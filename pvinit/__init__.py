"""pvinit: an update-safe PID-1 supervisor for embedded Linux devices.

Three commands, one per user: ``pvinit`` (the device), ``pvstate`` (the
release engineer) and ``pvctl`` (the field technician).  The library below
them is split into pure rules (state model, diff, update plan, signature
policy) and thin I/O shells (object store, checkout, CLIs).
"""

__version__ = "0.1.0"

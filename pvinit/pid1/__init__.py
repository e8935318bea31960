"""The minimal PID 1 of a pvinit device and its dev-mode launcher.

``init`` is the PID 1 loop (mounts, reaping, signals, orderly reboot),
``launcher`` runs it as PID 1 of a new PID + mount namespace on a developer's
machine and plays bootloader across its reboots.  Keep imports here light:
what PID 1 imports, every device pays for in start-up time and memory.
"""

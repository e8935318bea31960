"""The supervisor: runs the current revision's containers, group by group, and keeps them up.

:mod:`.loop` is the main loop, :mod:`.runtime` mounts and defines containers,
:mod:`.recovery` decides restarts (pure), :mod:`.status` is the status
document others read, :mod:`.main` the command line.
"""

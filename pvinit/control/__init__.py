"""The local control API: a small HTTP/1.1 server on a Unix socket, its handlers, and a client.

:mod:`pvinit.control.http` parses requests (pure), :mod:`pvinit.control.server`
drives connections from the supervisor's select loop (no threads),
:mod:`pvinit.control.handlers` answers them, :mod:`pvinit.control.client` is
what ``pvctl`` uses.  See ``docs/formats/control-api.md``.
"""

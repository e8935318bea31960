"""The one error hierarchy of pvinit.

Every error carries a message that says what was wrong and, where known,
*where* (a file, a key, an object id), plus the exit code a CLI returns for
it.  The CLIs print ``str(error)`` on one line and exit with
``error.exit_code``; nothing else maps exceptions to codes.

Exit codes are distinct per family so scripts can tell them apart:

====  ===============================================================
code  meaning
====  ===============================================================
1     failed (an operation that was valid but did not succeed)
2     usage (bad command line)
3     bad input (malformed state, id, path, key, bundle, JSON)
4     not found (revision, object, key, container)
5     integrity (an object or file whose content does not match its id)
6     trust (signature missing, invalid, untrusted or too few)
7     conflict (a pointer moved under us, a dirty working tree)
8     busy (another operation holds the lock; retry later)
9     refused (valid request the policy does not allow)
10    external tool failed (mksquashfs, tar, lxc-*)
11    no space left for the operation
12    transport (a remote unreachable or answering wrongly; retry may help)
====  ===============================================================
"""

from __future__ import annotations


class PvError(Exception):
    """Base of every error pvinit raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        return text


class UsageError(PvError):
    exit_code = 2


class BadInputError(PvError):
    """Input that does not follow a format: never partially applied."""

    exit_code = 3


class InvalidObjectIdError(BadInputError):
    """An object id that is not exactly 64 lowercase hex digits."""


class InvalidPathError(BadInputError):
    """A revision key or file path that is empty, absolute or escapes its root."""


class InvalidStateError(BadInputError):
    """A state revision that breaks the format or its rules; ``where`` names the key."""


class InvalidJSONError(BadInputError):
    """Bytes that are not the JSON (or canonical JSON) that was expected."""


class BundleFormatError(BadInputError):
    """A bundle file that is truncated, has a bad header or bad framing."""


class KeyFormatError(BadInputError):
    """A key or trust file that cannot be parsed."""


class NotFoundError(PvError):
    exit_code = 4


class ObjectNotFoundError(NotFoundError):
    pass


class RevisionNotFoundError(NotFoundError):
    pass


class IntegrityError(PvError):
    """Content that does not hash to the id it claims."""

    exit_code = 5


class TrustError(PvError):
    """A signature or trust-policy failure."""

    exit_code = 6


class ConflictError(PvError):
    """The world changed under us: a compare-and-swap lost, or local changes in the way."""

    exit_code = 7


class BusyError(PvError):
    exit_code = 8


class RefusedError(PvError):
    exit_code = 9


class ExternalToolError(PvError):
    """An external program (mksquashfs, tar, lxc) failed or is missing."""

    exit_code = 10


class NoSpaceError(PvError):
    exit_code = 11


class TrustRejectedError(TrustError):
    """A signed document a device refuses, with a stable ``reason`` code.

    The update engine journals ``reason`` (``unsigned``, ``unknown-key``,
    ``bad-signature``, ``threshold``, ``expired``, ``replay``,
    ``state-mismatch``) so a fleet can count refusals by cause without
    parsing messages.
    """

    def __init__(
        self, message: str, *, reason: str, where: str | None = None, hint: str | None = None
    ) -> None:
        self.reason = reason
        super().__init__(message, where=where, hint=hint)


class TransportError(PvError):
    """A remote could not be reached or answered wrongly (retry may help)."""

    exit_code = 12

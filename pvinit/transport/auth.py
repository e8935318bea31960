"""Registry credentials (a small module: device settings load it on every boot).

Kept apart from :mod:`pvinit.transport.registry`, which pulls in ``http.client``
and ``ssl``, so reading ``config/pvinit.json`` costs no network stack.
"""

from __future__ import annotations

from pvinit.errors import BadInputError
from pvinit.record import record


@record(frozen=True)
class RegistryAuth:
    """Credentials for a registry: Basic (``username``/``password``) and/or a bearer ``token``."""

    username: str | None = None
    password: str | None = None
    token: str | None = None

    @classmethod
    def from_dict(cls, data: object, *, where: str) -> RegistryAuth:
        if not isinstance(data, dict) or set(data) - {"username", "password", "token"} \
                or not all(isinstance(v, str) for v in data.values()):
            raise BadInputError("auth is {username, password} and/or {token}, strings",
                                where=where)
        if ("username" in data) != ("password" in data):
            raise BadInputError("auth needs both username and password", where=where)
        return cls(data.get("username"), data.get("password"), data.get("token"))

    def to_dict(self) -> dict[str, str]:
        out = {"username": self.username, "password": self.password, "token": self.token}
        return {k: v for k, v in out.items() if v is not None}

    def __repr__(self) -> str:  # never print secrets in logs
        return f"RegistryAuth(username={self.username!r}, password=***, token=***)"

    def basic(self) -> str | None:
        if self.username is None or self.password is None:
            return None
        import base64  # only a fetch from a registry with a password needs it

        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

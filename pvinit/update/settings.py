"""Device settings for updates: ``<storage>/config/pvinit.json`` and the trust file.

::

    {"bootenv": {"kind": "file", "path": "boot/env"},   # or uboot / grub, path relative to storage
                                                          # uboot also takes "size", "redundant"
     "commit_delay": 10,                                  # seconds a try must stay healthy
     "remote": {"url": "https://...", "channel": "stable", "poll_interval": 300,
                # url may be oci://HOST[:PORT]/REPO (a registry); auth is optional:
                "auth": {"username": "...", "password": "..."} or {"token": "..."}}}

Every field is optional; a device with no trust file refuses every update
(there is no safe default key).
"""

# os.path, not pathlib: the dev launcher imports this before every boot (issue 3).
# ruff: noqa: PTH118

from __future__ import annotations

import os

from pvinit.errors import BadInputError
from pvinit.record import record
from pvinit.typecheck import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from pvinit.trails.layout import StorageLayout
    from pvinit.transport.auth import RegistryAuth

SETTINGS_FILE = "config/pvinit.json"
"""The settings' place, relative to the storage directory."""

DEFAULT_COMMIT_DELAY = 10.0
DEFAULT_POLL_INTERVAL = 300.0
MAX_INBOX_PATHS = 8


@record(frozen=True)
class RemoteSettings:
    url: str
    channel: str
    poll_interval: float = DEFAULT_POLL_INTERVAL
    auth: RegistryAuth | None = None
    """Credentials for a registry or a protected web server (Basic or bearer token)."""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"url": self.url, "channel": self.channel,
                                  "poll_interval": self.poll_interval}
        if self.auth is not None:
            out["auth"] = self.auth.to_dict()
        return out


@record(frozen=True)
class DeviceSettings:
    bootenv_kind: str = "file"
    bootenv_path: str = "boot/env"
    bootenv_options: tuple[tuple[str, object], ...] = ()
    """Backend options (U-Boot: size, redundant, defaults), as given."""
    commit_delay: float = DEFAULT_COMMIT_DELAY
    remote: RemoteSettings | None = None
    inbox_paths: tuple[str, ...] = ()
    """Extra directories watched for bundles besides ``<storage>/inbox`` (USB sticks)."""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "bootenv": {"kind": self.bootenv_kind, "path": self.bootenv_path,
                        **dict(self.bootenv_options)},
            "commit_delay": self.commit_delay,
        }
        if self.remote is not None:
            out["remote"] = self.remote.to_dict()
        if self.inbox_paths:
            out["inbox_paths"] = list(self.inbox_paths)
        return out

    @classmethod
    def from_dict(cls, data: object, *, where: str) -> DeviceSettings:
        if not isinstance(data, dict):
            raise BadInputError("settings must be a JSON object", where=where)
        bootenv = data.get("bootenv", {})
        if not isinstance(bootenv, dict):
            raise BadInputError("'bootenv' must be an object", where=f"{where}#bootenv")
        kind = bootenv.get("kind", "file")
        path = bootenv.get("path", "boot/env")
        if kind not in ("file", "uboot", "grub") or not isinstance(path, str) or not path:
            raise BadInputError("bootenv needs kind file|uboot|grub and a path",
                                where=f"{where}#bootenv")
        options = tuple(sorted((k, v) for k, v in bootenv.items() if k not in ("kind", "path")))
        delay = data.get("commit_delay", DEFAULT_COMMIT_DELAY)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise BadInputError("'commit_delay' must be seconds >= 0",
                                where=f"{where}#commit_delay")
        remote = None
        raw_remote = data.get("remote")
        if raw_remote is not None:
            if not isinstance(raw_remote, dict) or not isinstance(raw_remote.get("url"), str) \
                    or not isinstance(raw_remote.get("channel"), str):
                raise BadInputError("'remote' needs a url and a channel", where=f"{where}#remote")
            interval = raw_remote.get("poll_interval", DEFAULT_POLL_INTERVAL)
            if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
                    or interval <= 0:
                raise BadInputError("'poll_interval' must be seconds > 0",
                                    where=f"{where}#remote.poll_interval")
            auth = None
            if raw_remote.get("auth") is not None:
                from pvinit.transport.auth import RegistryAuth  # only a device with credentials

                auth = RegistryAuth.from_dict(raw_remote["auth"], where=f"{where}#remote.auth")
            remote = RemoteSettings(raw_remote["url"], raw_remote["channel"], float(interval),
                                    auth)
        return cls(bootenv_kind=kind, bootenv_path=path, bootenv_options=options,
                   commit_delay=float(delay), remote=remote,
                   inbox_paths=_inbox_paths(data.get("inbox_paths", []),
                                            where=f"{where}#inbox_paths"))


def _inbox_paths(raw: object, *, where: str) -> tuple[str, ...]:
    """Validate ``inbox_paths``: a short list of distinct absolute, normalised paths."""
    if not isinstance(raw, list) or len(raw) > MAX_INBOX_PATHS:
        raise BadInputError(f"'inbox_paths' must be a list of at most {MAX_INBOX_PATHS} paths",
                            where=where)
    paths: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, str) or not item.startswith("/") or item == "/" \
                or os.path.normpath(item) != item or "\0" in item or "\n" in item:
            raise BadInputError("each inbox path must be an absolute, normalised directory "
                                "path other than /", where=f"{where}[{index}]")
        if item in paths:
            raise BadInputError(f"{item} is listed twice", where=f"{where}[{index}]")
        paths.append(item)
    return tuple(paths)


def settings_path(layout: StorageLayout) -> Path:
    return layout.root / SETTINGS_FILE


def trust_path(layout: StorageLayout) -> Path:
    return layout.root / "config" / "trust.json"


def load_settings(layout: StorageLayout) -> DeviceSettings:
    return load_settings_of(layout.root)


def load_settings_of(storage: str | os.PathLike[str]) -> DeviceSettings:
    """The settings of the device whose storage directory is ``storage`` (defaults if none).

    Works on a plain path, and imports ``json`` only when there is a file to
    read: the dev launcher calls it before every boot (issue 3's launch time).
    """
    path = os.path.join(storage, SETTINGS_FILE)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return DeviceSettings()
    import json

    try:
        data = json.loads(raw)
    except ValueError:
        raise BadInputError("settings file is not JSON", where=path) from None
    return DeviceSettings.from_dict(data, where=path)

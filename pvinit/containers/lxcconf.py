"""Turn a :class:`ContainerSpec` into liblxc configuration lines (pure).

The driver writes these lines as the container's ``config`` file; keeping the
mapping pure means every rule below is tested with plain values, and the
generated file is what an engineer reads (or feeds to ``lxc-start``) when
debugging a device.

Rules that came from trying things on real liblxc 5.0 (see NOTES.md and
docs/decisions/containers.md):

* ``lxc.init.cmd`` is split by liblxc's own quoting rules, which mangle
  quotes and ``;``.  We never quote: an argument with whitespace, quotes,
  backslashes or control characters is refused, with a hint to put the
  command in a script inside the rootfs.
* ``lxc.pty.max`` must be set, or liblxc fails to bind the console on hosts
  whose ``/dev/pts`` is not the initial devpts instance ("Failed to setup
  console"), and without a console there is no console log.
* Config values are whitespace-trimmed by liblxc, so environment values with
  leading or trailing blanks are refused rather than silently changed.
* Mount entries are fstab lines: blanks and backslashes in paths are written
  as octal escapes (``\\040``), which liblxc's getmntent decodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pvinit.containers.spec import NOTIFY_MOUNT, NOTIFY_SOCKET_NAME, BindMount, ContainerSpec
from pvinit.errors import BadInputError

ConfigLines = list[tuple[str, str]]

#: Characters liblxc's lxc.init.cmd splitter would treat specially.
_UNQUOTABLE = frozenset(" \t\n\r\v\f'\"\\")

#: Ptys for the container's devpts; also what makes the console log work.
PTY_MAX = "16"

_APPARMOR_PROBES = (
    Path("/sys/module/apparmor/parameters/enabled"),
    Path("/sys/kernel/security/apparmor"),
)


def host_has_apparmor(probes: tuple[Path, ...] = _APPARMOR_PROBES) -> bool:
    """True when the host kernel runs AppArmor, so containers need a profile.

    Without ``lxc.apparmor.profile`` liblxc then fails with "Failed to
    initialize LSM" (seen in a VM with Debian's kernel).
    """
    enabled, securityfs = probes
    try:
        # bytes.decode("ascii") has a fast path; a text open would import encodings.ascii
        return enabled.read_bytes().decode("ascii").strip().upper().startswith("Y")
    except OSError:
        return securityfs.is_dir()


def check_lxc_key(key: str, value: str, *, where: str) -> None:
    """Refuse an extra key that could not be a single liblxc config line."""
    if not isinstance(key, str) or not key.startswith("lxc.") or len(key) <= len("lxc."):
        raise BadInputError("extra key must start with 'lxc.'", where=f"{where}: lxc {key!r}")
    if any(ch.isspace() or ch == "=" for ch in key):
        raise BadInputError(
            "extra key may not contain blanks or '='", where=f"{where}: lxc {key!r}"
        )
    if not isinstance(value, str):
        raise BadInputError("extra key value must be a string", where=f"{where}: lxc {key}")
    if "\n" in value or "\r" in value or "\0" in value:
        raise BadInputError("extra key value may not contain newlines", where=f"{where}: lxc {key}")


def init_cmd(argv: tuple[str, ...], *, where: str) -> str:
    """Join argv for ``lxc.init.cmd``, refusing what liblxc cannot carry unquoted."""
    for index, arg in enumerate(argv):
        if not arg or any(ch in _UNQUOTABLE or not ch.isprintable() for ch in arg):
            raise BadInputError(
                f"init argument {index} ({arg!r}) is empty or holds blanks, quotes or "
                "backslashes, which lxc.init.cmd cannot carry",
                where=f"{where}: init",
                hint="put the command line in a script inside the rootfs and run that",
            )
    return " ".join(argv)


def fstab_escape(path: str) -> str:
    """Escape a path for one field of an fstab-style ``lxc.mount.entry``."""
    return (
        path.replace("\\", "\\134")
        .replace(" ", "\\040")
        .replace("\t", "\\011")
        .replace("\n", "\\012")
    )


def mount_entry(mount: BindMount) -> str:
    """The ``lxc.mount.entry`` value of one bind mount (target relative to the rootfs)."""
    options = ["bind", f"create={mount.kind}"]
    if mount.readonly:
        options.append("ro")
    if mount.optional:
        options.append("optional")
    target = mount.target.lstrip("/")
    return f"{fstab_escape(str(mount.source))} {fstab_escape(target)} none {','.join(options)} 0 0"


def _environment(env: Mapping[str, str], *, where: str) -> list[str]:
    lines = []
    for key in sorted(env):
        value = env[key]
        if value != value.strip():
            raise BadInputError(
                "environment value has leading or trailing blanks, which liblxc strips",
                where=f"{where}: env {key}",
            )
        lines.append(f"{key}={value}")
    return lines


def _process(spec: ContainerSpec) -> ConfigLines:
    """Working directory and ids of the init; nothing when run.json sets none.

    ``lxc.init.groups`` is written only when there are supplementary groups,
    so a liblxc without that key still runs the other cases; without it
    liblxc drops the supervisor's supplementary groups when it sets the ids
    (checked on liblxc 5.0.2 with the supervisor in groups 5,6).
    """
    lines: ConfigLines = []
    if spec.cwd is not None:
        lines.append(("lxc.init.cwd", spec.cwd))
    if spec.uid is not None and spec.gid is not None:
        lines.append(("lxc.init.uid", str(spec.uid)))
        lines.append(("lxc.init.gid", str(spec.gid)))
        if spec.groups:
            lines.append(("lxc.init.groups", ",".join(str(g) for g in spec.groups)))
    return lines


def lxc_config(spec: ContainerSpec, *, apparmor: bool = False) -> ConfigLines:
    """The liblxc config of ``spec``: generated keys first, then its extra keys.

    ``apparmor`` says whether the host runs AppArmor (:func:`host_has_apparmor`);
    the container is then set ``unconfined`` unless an extra key chooses a
    profile.  Extra keys come last so they may override anything generated.
    """
    where = spec.name
    for key, value in spec.lxc_keys.items():
        check_lxc_key(key, value, where=where)
    lines: ConfigLines = [
        ("lxc.log.file", str(spec.lxc_log)),
        # INFO is what records the init's exit status ("Child <pid> ended on error (N)").
        ("lxc.log.level", "INFO"),
        ("lxc.rootfs.path", f"dir:{spec.rootfs}"),
        ("lxc.uts.name", spec.name),
        ("lxc.net.0.type", "empty"),
        ("lxc.mount.auto", "proc:mixed sys:ro cgroup:mixed"),
        ("lxc.autodev", "1"),
        ("lxc.pty.max", PTY_MAX),
        ("lxc.tty.max", "0"),
        ("lxc.init.cmd", init_cmd(spec.init, where=where)),
        ("lxc.signal.halt", "SIGTERM"),
        ("lxc.console.logfile", str(spec.console_log)),
        ("lxc.console.size", str(spec.log_size_bytes)),
        ("lxc.console.rotate", "1"),
    ]
    lines.extend(_process(spec))
    if apparmor:
        lines.append(("lxc.apparmor.profile", "unconfined"))
    lines.extend(("lxc.environment", item) for item in _environment(spec.env, where=where))
    if spec.notify_dir is not None:
        lines.append(("lxc.environment", f"NOTIFY_SOCKET={NOTIFY_MOUNT}/{NOTIFY_SOCKET_NAME}"))
        notify = BindMount(source=spec.notify_dir, target=NOTIFY_MOUNT)
        lines.append(("lxc.mount.entry", mount_entry(notify)))
    lines.extend(("lxc.mount.entry", mount_entry(m)) for m in spec.mounts)
    lines.extend(spec.lxc_keys.items())
    return lines


def render_config(lines: ConfigLines) -> str:
    """The text of a liblxc config file holding ``lines``, one ``key = value`` each."""
    return "".join(f"{key} = {value}\n" for key, value in lines)


def parse_config(text: str) -> ConfigLines:
    """The ``(key, value)`` lines of a config :func:`render_config` wrote (blank lines and
    ``#`` comments skipped; liblxc trims the blanks around both)."""
    lines = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            lines.append((key.strip(), value.strip()))
    return lines

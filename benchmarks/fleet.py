"""A device state with N extra app containers, as a signed factory bundle (scale benchmarks).

The default state (``state/``: the BSP, the platform container, the
dashboard and sensor apps) plus ``extra_apps`` more app containers
``app01``, ``app02``, ... that all run the dashboard's image: content
addressing stores that squashfs once, whatever N is, and each app still
gets its own name, LXC container, overlay and logs on the device.
Optionally one more app, ``crashloop``, whose init exits with status 3
about a second after it starts, so the supervisor restarts it again and
again (see :func:`crashloop_run`).

Built the release engineer's way with real ``pvstate`` commands, in a
fresh checkout under ``work`` with its own object store (the repository's
``state/`` and ``objects/`` are only read): ``pvstate init``, the working
tree copied from ``state/``, the extra ``run.json`` files written,
``pvstate commit``, ``pvstate keygen`` + ``sign``, ``pvstate export`` to
``factory.pvb`` for ``pvinit --storage DIR --factory factory.pvb``.
A build is cached in ``work/fleet-<N>[-crashloop]`` under a stamp of its
inputs (the ids of the repository's state objects, the parameters).

    fleet = build_fleet(ctx.work, 25, crashloop=True, pvstate=ctx.tool("pvstate"))
    with running_device(storage, factory=fleet.factory) as dev:
        wait_for_goals(dev, ignore=fleet.unsettled)
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.context import REPO, sh
from benchmarks.device import remove_tree

#: The image every extra app reuses (its object is stored once).
IMAGE_OF = "dashboard"
#: Name of the crash-looping app.
CRASHLOOP = "crashloop"
#: The default state's containers and its two groups, in boot order.
DEFAULT_GROUPS: tuple[tuple[str, ...], ...] = (("platform",), ("dashboard", "sensor"))
#: Copied from state/ into the fleet checkout (everything a revision holds).
_STATE_ENTRIES = ("device.json", "bsp", "platform", "sensor", "dashboard")
_FORMAT = 2  # bump when the build changes in a way the stamp cannot see


@dataclass(frozen=True)
class Fleet:
    """A built fleet state.

    ``checkout``: the pvstate checkout (its working tree is the state:
    ``<name>/run.json``, ``<name>/root.squashfs``, ``bsp/``); ``factory``:
    its signed revision as a bundle; ``key``: the private key that signed it
    (``key.with_suffix(".pub")`` is the public one, for a trust policy);
    ``containers``: every container name, in boot order; ``crashloop``: the
    crash-looping app's name or None; ``groups``: container names per boot
    group (platform first, then the apps), as the supervisor starts them.
    """

    checkout: Path
    factory: Path
    key: Path
    containers: tuple[str, ...]
    crashloop: str | None
    groups: tuple[tuple[str, ...], ...]

    @property
    def extra_apps(self) -> tuple[str, ...]:
        """The added app containers (not the default state's, not the crash-looper)."""
        return tuple(name for name in self.containers if name.startswith("app"))

    @property
    def unsettled(self) -> tuple[str, ...]:
        """Containers that never stay at their goal (what ``wait_for_goals(ignore=)`` takes)."""
        return (self.crashloop,) if self.crashloop else ()


def app_name(number: int) -> str:
    """``app01`` ... ``app99``, ``app100``: sorted names sort in boot order up to 99."""
    return f"app{number:02d}"


def extra_app_run(name: str, template: dict[str, Any]) -> dict[str, Any]:
    """The run.json of an extra app: the dashboard's, under its own name."""
    run = copy.deepcopy(template)
    run["name"] = name
    return run


def crashloop_run(
    template: dict[str, Any], *, retry_delay: float = 1.0, backoff_factor: float = 1.05
) -> dict[str, Any]:
    """The run.json of an app whose init exits (status 3) ~1 s after it starts, forever.

    Restart policy ``container`` (a ``system`` one would reboot the device
    on its first exit) and ``auto_recovery`` ``on-failure``: after the n-th
    exit in a row the supervisor waits ``retry_delay * backoff_factor**n``
    seconds and starts it again (:mod:`pvinit.supervisor.recovery`).
    ``max_retries`` is a million, so it never runs out of retries (running
    out would reboot the device), and ``stable_timeout`` is an hour, longer
    than any run lasts, so the count never resets and the backoff keeps
    growing.  With the defaults (1 s, x1.05) it restarts ~68 times in 10
    minutes, the last delay ~30 s; ``backoff_factor=1`` restarts it every
    ~2 s.  Its goal is STARTED, which it keeps reaching and losing: wait
    for goals with ``ignore=fleet.unsettled``.  A factory install has no
    try-boot, so nothing here can make the device roll back.
    """
    run = copy.deepcopy(template)
    run["name"] = CRASHLOOP
    # lxc.init.cmd cannot carry blanks or quotes, and the image has no script
    # for this: ${IFS} splits the words inside the shell instead.
    run["init"] = ["/bin/sh", "-c", "echo${IFS}crashloop:${IFS}up;sleep${IFS}1;exit${IFS}3"]
    run["auto_recovery"] = {
        "policy": "on-failure",
        "max_retries": 1_000_000,
        "retry_delay": retry_delay,
        "backoff_factor": backoff_factor,
        "stable_timeout": 3600,
    }
    run["restart_policy"] = "container"
    run["status_goal"] = "STARTED"
    return run


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _stamp(state: Path, extra_apps: int, crashloop: bool, recovery: tuple[float, float]) -> str:
    """What a cached build depends on: the state's files (by stat cache ids or size+mtime)."""
    digest = hashlib.sha256(repr((_FORMAT, extra_apps, crashloop, recovery)).encode())
    for entry in _STATE_ENTRIES:
        root = state / entry
        paths = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in paths:
            if path.is_file():
                st = path.stat()
                digest.update(f"{path.relative_to(state)}|{st.st_size}|{st.st_mtime_ns}".encode())
                if path.suffix == ".json":
                    digest.update(path.read_bytes())
    return digest.hexdigest()


def _copy_tree_entry(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def build_fleet(
    work: Path,
    extra_apps: int,
    *,
    crashloop: bool = False,
    state: Path | None = None,
    pvstate: str | None = None,
    crashloop_retry_delay: float = 1.0,
    crashloop_backoff: float = 1.05,
) -> Fleet:
    """Build (or reuse) the default state + ``extra_apps`` apps [+ a crash-looper] in ``work``.

    ``state`` is the checkout to start from (default: the repository's
    ``state/``, which must have been built by ``tools/build-default-state``);
    ``pvstate`` the command (default: the one beside this interpreter).
    Takes ~1-2 s (a 35 MB bundle is written); a second call with the same
    inputs returns the cached build at once.
    """
    if extra_apps < 0:
        raise ValueError("extra_apps must be >= 0")
    state = (state or REPO / "state").absolute()
    tool = pvstate or str(Path(sys.executable).parent / "pvstate")
    root = work.absolute() / (f"fleet-{extra_apps}" + ("-crashloop" if crashloop else ""))
    checkout, factory, key = root / "checkout", root / "factory.pvb", root / "keys" / "fleet.key"
    template = _read_json(state / IMAGE_OF / "run.json")
    names = [app_name(n) for n in range(1, extra_apps + 1)]
    if crashloop:
        names.append(CRASHLOOP)
    apps = tuple(name for group in DEFAULT_GROUPS[1:] for name in group) + tuple(names)
    fleet = Fleet(
        checkout=checkout,
        factory=factory,
        key=key,
        containers=(*DEFAULT_GROUPS[0], *apps),
        crashloop=CRASHLOOP if crashloop else None,
        groups=(DEFAULT_GROUPS[0], apps),
    )
    stamp = _stamp(state, extra_apps, crashloop, (crashloop_retry_delay, crashloop_backoff))
    stamp_file = root / "stamp"
    if factory.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return fleet
    remove_tree(root)
    root.mkdir(parents=True)
    env = {"SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH", "1767225600")}
    sh([tool, "init", str(checkout), "--objects", str(root / "objects"), "--no-device"], env=env)
    for entry in _STATE_ENTRIES:
        _copy_tree_entry(state / entry, checkout / entry)
    image = checkout / IMAGE_OF / _read_json(checkout / IMAGE_OF / "run.json")["root-volume"]
    for name in names:
        app = checkout / name
        app.mkdir()
        os.link(image, app / image.name)  # same bytes, same object: stored once
        run = (crashloop_run(template, retry_delay=crashloop_retry_delay,
                             backoff_factor=crashloop_backoff)
               if name == CRASHLOOP else extra_app_run(name, template))
        (app / "run.json").write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")
    message = f"default state + {extra_apps} extra apps" + (" + crashloop" if crashloop else "")
    sh([tool, "-C", str(checkout), "commit", "-m", message], env=env)
    key.parent.mkdir()
    sh([tool, "keygen", str(key.with_suffix(""))])
    sh([tool, "-C", str(checkout), "sign", "HEAD", "--key", str(key)], env=env)
    sh([tool, "-C", str(checkout), "export", "HEAD", "-o", str(factory)], env=env)
    stamp_file.write_text(stamp)
    return fleet


def group_names(fleet: Fleet) -> Sequence[str]:
    """Every container of ``fleet`` in boot order (a flat view of ``groups``)."""
    return [name for group in fleet.groups for name in group]


if __name__ == "__main__":
    import time

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    began = time.monotonic()
    built = build_fleet(REPO / "build" / "bench" / "fleet", count, crashloop="--crashloop" in
                        sys.argv)
    print(built, f"{time.monotonic() - began:.2f}s")

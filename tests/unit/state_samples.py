"""A realistic state revision, shaped like DESIGN.md's example, for any test to reuse.

``sample_state_dict()`` returns a fresh dict every call (edit it freely):
a BSP with kernel, initrd, modules and firmware; four groups; a ``mgmt``
platform container with the system restart policy; an app container
``sensor`` with auto-recovery, storage, init, env and lxc settings; and an
app container ``logger`` with an extra volume.  Object ids are the SHA256 of
``sample_blob(name)``, so a test can put the real bytes in a store.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from pvinit.objects.ids import sha256_hex


def sample_blob(key: str) -> bytes:
    """The bytes of the sample object at ``key`` (content is irrelevant, ids must be real)."""
    return f"sample object for {key}\n".encode()


def sample_id(key: str) -> str:
    return sha256_hex(sample_blob(key))


SAMPLE_OBJECT_KEYS = (
    "bsp/kernel.img",
    "bsp/initrd.img",
    "bsp/modules.squashfs",
    "bsp/firmware.squashfs",
    "mgmt/root.squashfs",
    "sensor/root.squashfs",
    "logger/root.squashfs",
    "logger/tools.squashfs",
)


def _group(name: str, goal: str, policy: str) -> dict[str, Any]:
    return {"name": name, "status_goal": goal, "restart_policy": policy, "timeout": 30}


def sample_state_dict() -> dict[str, Any]:
    state: dict[str, Any] = {
        "#spec": "pvinit-state@1",
        "device.json": {
            "groups": [
                _group("data", "MOUNTED", "system"),
                _group("root", "STARTED", "system"),
                _group("platform", "STARTED", "system"),
                _group("app", "STARTED", "container"),
            ]
        },
        "bsp/run.json": {
            "linux": "kernel.img",
            "initrd": "initrd.img",
            "modules": "modules.squashfs",
            "firmware": "firmware.squashfs",
        },
        "mgmt/run.json": {
            "name": "mgmt",
            "type": "lxc",
            "root-volume": "root.squashfs",
            "group": "platform",
            "status_goal": "STARTED",
            "init": ["/sbin/init"],
            "roles": ["mgmt"],
            "storage": {"lxc-overlay": {"persistence": "permanent"}},
        },
        "sensor/run.json": {
            "name": "sensor",
            "type": "lxc",
            "root-volume": "root.squashfs",
            "group": "app",
            "status_goal": "READY",
            "restart_policy": "container",
            "auto_recovery": {
                "policy": "on-failure",
                "max_retries": 5,
                "retry_delay": 1,
                "backoff_factor": 2.0,
                "stable_timeout": 30,
            },
            "storage": {
                "data": {"persistence": "permanent"},
                "lxc-overlay": {"persistence": "boot"},
            },
            "init": ["/bin/sensor"],
            "env": {"RATE": "5"},
            "lxc": {"lxc.cgroup2.memory.max": "64M"},
        },
        "logger/run.json": {
            "name": "logger",
            "root-volume": "root.squashfs",
            "volumes": ["tools.squashfs"],
            "group": "app",
            "init": ["/bin/logger", "--stdout"],
            "logs": {"max_size": 1048576},
        },
    }
    for key in SAMPLE_OBJECT_KEYS:
        state[key] = sample_id(key)
    return state


# -- hypothesis strategies of valid revisions -----------------------------------


_POOL_IDS = tuple(sha256_hex(bytes([n])) for n in range(12))
_CONTAINER_NAMES = ("alpha", "beta", "gamma", "delta", "mgmt")
_FILES = ("root.squashfs", "lib.squashfs", "conf/app.conf", "data.img")


def _container(draw: Any, name: str) -> dict[str, Any]:
    files = draw(st.lists(st.sampled_from(_FILES[1:]), unique=True, max_size=3))
    doc: dict[str, Any] = {
        "name": name,
        "root-volume": "root.squashfs",
        "group": draw(st.sampled_from(("platform", "app"))),
    }
    if draw(st.booleans()):
        doc["restart_policy"] = draw(st.sampled_from(("system", "container")))
    if draw(st.booleans()):
        doc["env"] = {"N": str(draw(st.integers(0, 3)))}
    if draw(st.booleans()):
        doc["init"] = ["/bin/app", draw(st.sampled_from(("-a", "-b")))]
    entries = {f"{name}/run.json": doc}
    for f in ("root.squashfs", *files):
        entries[f"{name}/{f}"] = draw(st.sampled_from(_POOL_IDS))
    return entries


@st.composite
def state_dicts(draw: Any) -> dict[str, Any]:
    """Small valid revisions that overlap a lot, so diffs are interesting."""
    app_policy = draw(st.sampled_from(("container", "system")))
    state: dict[str, Any] = {
        "#spec": "pvinit-state@1",
        "device.json": {
            "groups": [
                {
                    "name": "platform",
                    "status_goal": "STARTED",
                    "restart_policy": "system",
                    "timeout": 30,
                },
                {
                    "name": "app",
                    "status_goal": "STARTED",
                    "restart_policy": app_policy,
                    "timeout": draw(st.sampled_from((30, 30.0, 60))),
                },
            ]
        },
    }
    if draw(st.booleans()):
        state["bsp/run.json"] = {"linux": "kernel.img"}
        state["bsp/kernel.img"] = draw(st.sampled_from(_POOL_IDS))
    for name in draw(st.lists(st.sampled_from(_CONTAINER_NAMES), unique=True, max_size=4)):
        state.update(_container(draw, name))
    if draw(st.booleans()):
        state["README.json"] = {"text": draw(st.sampled_from(("a", "b")))}
    return state

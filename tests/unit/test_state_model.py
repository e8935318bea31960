"""The State model: exact round trips, typed views, and one clear error per bad input."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from pvinit.errors import (
    BadInputError,
    InvalidJSONError,
    InvalidObjectIdError,
    InvalidPathError,
    InvalidStateError,
    NotFoundError,
)
from pvinit.state.canonical import canonical_bytes
from pvinit.state.documents import split_user
from pvinit.state.model import AutoRecovery, Bsp, Container, DeviceConfig, Group, State
from tests.unit.state_samples import sample_id, sample_state_dict

ZERO = "0" * 64


def test_sample_state_loads_with_typed_views() -> None:
    state = State.from_dict(sample_state_dict())
    assert [g.name for g in state.device.groups] == ["data", "root", "platform", "app"]
    assert state.bsp == Bsp(
        linux="kernel.img",
        initrd="initrd.img",
        modules="modules.squashfs",
        firmware="firmware.squashfs",
    )
    assert list(state.containers) == ["logger", "mgmt", "sensor"]
    sensor = state.containers["sensor"]
    assert sensor.auto_recovery == AutoRecovery(
        policy="on-failure", max_retries=5, retry_delay=1, backoff_factor=2.0, stable_timeout=30
    )
    assert sensor.storage["data"].persistence == "permanent"
    assert sensor.init == ("/bin/sensor",)
    assert sensor.env == {"RATE": "5"}
    assert state.containers["mgmt"].roles == ("mgmt",)
    assert state.containers["logger"].volume_paths() == ("root.squashfs", "tools.squashfs")


def test_inherited_goal_and_policy_come_from_the_group() -> None:
    state = State.from_dict(sample_state_dict())
    assert state.restart_policy_of("mgmt") == "system"
    assert state.restart_policy_of("logger") == "container"
    assert state.status_goal_of("logger") == "STARTED"
    assert state.status_goal_of("sensor") == "READY"


def test_raw_views_split_objects_from_documents() -> None:
    state = State.from_dict(sample_state_dict())
    assert state.objects["bsp/kernel.img"] == sample_id("bsp/kernel.img")
    assert "sensor/run.json" in state.documents
    assert "#spec" not in state.objects
    assert "#spec" not in state.documents
    assert state.entries["#spec"] == "pvinit-state@1"
    assert sample_id("logger/tools.squashfs") in state.object_ids()
    assert state.container_keys("logger") == [
        "logger/root.squashfs",
        "logger/run.json",
        "logger/tools.squashfs",
    ]


def test_container_keys_of_unknown_container_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        State.from_dict(sample_state_dict()).container_keys("nope")


def test_read_then_write_is_byte_identical_with_unknown_fields() -> None:
    d = sample_state_dict()
    d["sensor/run.json"]["future_field"] = {"x": [1, 2.5]}
    d["sensor/run.json"]["auto_recovery"]["jitter"] = 0.5
    d["device.json"]["groups"][0]["future"] = True
    d["device.json"]["watchdog"] = {"timeout": 10}
    d["bsp/run.json"]["cmdline"] = "quiet"
    state = State.from_dict(d)
    assert state.to_dict() == d
    assert state.canonical_bytes() == canonical_bytes(d)
    again = State.from_bytes(json.dumps(d, indent=2).encode(), where="state.json")
    assert again.canonical_bytes() == state.canonical_bytes()


def test_typed_documents_reproduce_their_input_dicts() -> None:
    d = sample_state_dict()
    d["sensor/run.json"]["x-vendor"] = "kept"
    for key in ("sensor/run.json", "mgmt/run.json", "logger/run.json"):
        assert Container.from_dict(d[key], where=key).to_dict() == d[key]
    assert DeviceConfig.from_dict(d["device.json"], where="d").to_dict() == d["device.json"]
    assert Bsp.from_dict(d["bsp/run.json"], where="b").to_dict() == d["bsp/run.json"]


def test_cwd_and_user_are_typed_fields_that_round_trip() -> None:
    d = sample_state_dict()
    d["sensor/run.json"].update(cwd="/data/app", user="nobody:nogroup")
    state = State.from_dict(d)
    sensor = state.containers["sensor"]
    assert (sensor.cwd, sensor.user) == ("/data/app", "nobody:nogroup")
    assert "cwd" not in sensor.extra and "user" not in sensor.extra
    assert state.to_dict() == d
    assert state.canonical_bytes() == canonical_bytes(d)
    built = Container(name="a", root_volume="r", group="g", cwd="/w", user="1000")
    assert built.to_dict() == {"name": "a", "root-volume": "r", "group": "g", "cwd": "/w",
                               "user": "1000"}  # fmt: skip
    plain = Container(name="a", root_volume="r", group="g").to_dict()
    assert "cwd" not in plain and "user" not in plain


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("0", ("0", None)),
        ("1000:1000", ("1000", "1000")),
        ("nobody", ("nobody", None)),
        ("www-data:www-data", ("www-data", "www-data")),
        ("app:0", ("app", "0")),
        ("4294967294", ("4294967294", None)),
        ("_svc.x-1$", ("_svc.x-1$", None)),
        ("a" * 32, ("a" * 32, None)),
    ],
)
def test_user_accepts_ids_names_and_pairs(value: str, parts: tuple[str, str | None]) -> None:
    assert split_user(value) == parts


def test_a_bad_user_error_says_what_the_forms_are() -> None:
    d = sample_state_dict()
    d["sensor/run.json"]["user"] = "1000:"
    with pytest.raises(InvalidStateError) as info:
        State.from_dict(d)
    assert str(info.value).startswith("state.json:sensor/run.json#user: '1000:' is not uid")


def test_optional_field_given_with_its_default_is_written_back() -> None:
    doc = {"name": "a", "root-volume": "r", "group": "g", "type": "lxc", "env": {}, "roles": []}
    assert Container.from_dict(doc, where="a/run.json").to_dict() == doc


def test_document_built_in_code_does_not_grow_default_fields() -> None:
    container = Container(name="a", root_volume="r", group="g", env={"A": "1"})
    assert container.to_dict() == {
        "name": "a",
        "root-volume": "r",
        "group": "g",
        "env": {"A": "1"},
    }
    group = Group(name="g", status_goal="STARTED", restart_policy="system", timeout=2.5)
    assert Group.from_dict(group.to_dict(), where="g") == group


def test_input_dict_is_copied_not_kept() -> None:
    d = sample_state_dict()
    state = State.from_dict(d)
    before = state.digest
    d["sensor/run.json"]["env"]["RATE"] = "6"
    state.to_dict()["sensor/run.json"]["env"]["RATE"] = "7"
    assert state.digest == before


def test_states_compare_by_canonical_bytes_so_int_and_float_differ() -> None:
    a = sample_state_dict()
    b = copy.deepcopy(a)
    b["device.json"]["groups"][0]["timeout"] = 30.0
    assert State.from_dict(a) == State.from_dict(copy.deepcopy(a))
    assert State.from_dict(a) != State.from_dict(b)
    assert len({State.from_dict(a), State.from_dict(copy.deepcopy(a))}) == 1


def test_state_without_bsp_is_allowed() -> None:
    d = sample_state_dict()
    for key in [k for k in d if k.startswith("bsp/")]:
        del d[key]
    assert State.from_dict(d).bsp is None


def test_with_entries_returns_a_new_validated_state() -> None:
    state = State.from_dict(sample_state_dict())
    bsp = state.to_dict()["bsp/run.json"]
    del bsp["initrd"]
    edited = state.with_entries(
        {"sensor/extra.bin": ZERO, "bsp/run.json": bsp}, removals=["bsp/initrd.img"]
    )
    assert edited.objects["sensor/extra.bin"] == ZERO
    assert edited.bsp is not None
    assert edited.bsp.initrd is None
    assert "bsp/initrd.img" in state.objects  # the original is untouched


def test_with_entries_that_break_a_reference_is_refused() -> None:
    state = State.from_dict(sample_state_dict())
    with pytest.raises(InvalidStateError) as info:
        state.with_entries(removals=["logger/tools.squashfs"])
    assert info.value.where == "state.json:logger/run.json#volumes[0]"


def test_with_entries_refuses_a_key_both_updated_and_removed() -> None:
    state = State.from_dict(sample_state_dict())
    with pytest.raises(InvalidStateError) as info:
        state.with_entries({"mgmt/root.squashfs": ZERO}, removals=["mgmt/root.squashfs"])
    assert info.value.where == "state.json:mgmt/root.squashfs"


def test_with_entries_refuses_removing_a_missing_key() -> None:
    state = State.from_dict(sample_state_dict())
    with pytest.raises(NotFoundError) as info:
        state.with_entries(removals=["nope/file"])
    assert info.value.where == "state.json:nope/file"


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        d[key] = value

    return edit


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        del d[key]

    return edit


def _field(key: str, path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """Set d[key][p0][p1]... = value, with int parts as list indexes."""

    def edit(d: dict[str, Any]) -> None:
        node: Any = d[key]
        parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split("/")]
        for part in parts[:-1]:
            node = node[part]
        if value is _DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value

    return edit


_DELETE = object()
SENSOR = "sensor/run.json"
S = "state.json:sensor/run.json"

BAD_INPUTS: list[tuple[str, Callable[[dict[str, Any]], None], type[BadInputError], str]] = [
    ("spec missing", _delete("#spec"), InvalidStateError, "state.json:#spec"),
    ("spec unknown", _set("#spec", "pvinit-state@2"), InvalidStateError, "state.json:#spec"),
    ("spec not text", _set("#spec", 1), InvalidStateError, "state.json:#spec"),
    (
        "object id uppercase",
        _set("bsp/kernel.img", "A" * 64),
        InvalidObjectIdError,
        "state.json:bsp/kernel.img",
    ),
    ("object id short", _set("mgmt/x", "abc"), InvalidObjectIdError, "state.json:mgmt/x"),
    (
        "object key holding a document",
        _set("sensor/root.squashfs", {"a": 1}),
        InvalidStateError,
        "state.json:sensor/root.squashfs",
    ),
    ("object key holding a number", _set("mgmt/n", 5), InvalidStateError, "state.json:mgmt/n"),
    ("json key holding text", _set(SENSOR, ZERO), InvalidStateError, S),
    ("json key holding a list", _set("x.json", []), InvalidStateError, "state.json:x.json"),
    ("key escapes", _set("../etc/passwd", ZERO), InvalidPathError, "state.json:../etc/passwd"),
    ("key absolute", _set("/etc/shadow", ZERO), InvalidPathError, "state.json:/etc/shadow"),
    ("key reserved", _set(".pv/progress", ZERO), InvalidPathError, "state.json:.pv/progress"),
    ("key backslash", _set("a\\b", ZERO), InvalidPathError, "state.json:a\\b"),
    ("key not text", _set(7, ZERO), InvalidPathError, "state.json:7"),  # type: ignore[arg-type]
    (
        "file and directory",
        _set("sensor/root.squashfs/x", ZERO),
        InvalidStateError,
        "state.json:sensor/root.squashfs",
    ),
    ("device.json missing", _delete("device.json"), InvalidStateError, "state.json:device.json"),
    (
        "groups empty",
        _field("device.json", "groups", []),
        InvalidStateError,
        "state.json:device.json#groups",
    ),
    (
        "group timeout as text",
        _field("device.json", "groups/0/timeout", "30"),
        InvalidStateError,
        "state.json:device.json#groups[0].timeout",
    ),
    (
        "group timeout negative",
        _field("device.json", "groups/2/timeout", -1),
        InvalidStateError,
        "state.json:device.json#groups[2].timeout",
    ),
    (
        "group defined twice",
        _field("device.json", "groups/1/name", "data"),
        InvalidStateError,
        "state.json:device.json#groups[1]",
    ),
    (
        "group goal unknown",
        _field("device.json", "groups/0/status_goal", "UP"),
        InvalidStateError,
        "state.json:device.json#groups[0].status_goal",
    ),
    ("unknown group", _field(SENSOR, "group", "apps"), InvalidStateError, f"{S}#group"),
    ("name differs from dir", _field(SENSOR, "name", "sensor2"), InvalidStateError, f"{S}#name"),
    ("name missing", _field(SENSOR, "name", _DELETE), InvalidStateError, f"{S}#name"),
    (
        "root volume missing field",
        _field(SENSOR, "root-volume", _DELETE),
        InvalidStateError,
        f"{S}#root-volume",
    ),
    (
        "root volume names a missing key",
        _field(SENSOR, "root-volume", "rootfs.squashfs"),
        InvalidStateError,
        f"{S}#root-volume",
    ),
    (
        "root volume names a document",
        _field(SENSOR, "root-volume", "run.json"),
        InvalidStateError,
        f"{S}#root-volume",
    ),
    (
        "root volume escapes",
        _field(SENSOR, "root-volume", "../mgmt/root.squashfs"),
        InvalidPathError,
        f"{S}#root-volume",
    ),
    (
        "volume names a missing key",
        _field("logger/run.json", "volumes/0", "nope.squashfs"),
        InvalidStateError,
        "state.json:logger/run.json#volumes[0]",
    ),
    (
        "bsp names a missing file",
        _delete("bsp/firmware.squashfs"),
        InvalidStateError,
        "state.json:bsp/run.json#firmware",
    ),
    (
        "bsp files without run.json",
        _delete("bsp/run.json"),
        InvalidStateError,
        "state.json:bsp/run.json",
    ),
    (
        "bsp linux missing",
        _field("bsp/run.json", "linux", _DELETE),
        InvalidStateError,
        "state.json:bsp/run.json#linux",
    ),
    (
        "status goal unknown",
        _field(SENSOR, "status_goal", "RUNNING"),
        InvalidStateError,
        f"{S}#status_goal",
    ),
    (
        "restart policy unknown",
        _field(SENSOR, "restart_policy", "always"),
        InvalidStateError,
        f"{S}#restart_policy",
    ),
    ("type unknown", _field(SENSOR, "type", "docker"), InvalidStateError, f"{S}#type"),
    ("init empty", _field(SENSOR, "init", []), InvalidStateError, f"{S}#init"),
    ("init relative", _field(SENSOR, "init/0", "sensor"), InvalidStateError, f"{S}#init[0]"),
    ("init not a list", _field(SENSOR, "init", "/bin/sensor"), InvalidStateError, f"{S}#init"),
    ("env value not text", _field(SENSOR, "env/RATE", 5), InvalidStateError, f'{S}#env["RATE"]'),
    ("env name bad", _field(SENSOR, "env/A=B", "1"), InvalidStateError, f'{S}#env["A=B"]'),
    (
        "lxc key without prefix",
        _field(SENSOR, "lxc/cgroup.x", "1"),
        InvalidStateError,
        f'{S}#lxc["cgroup.x"]',
    ),
    (
        "lxc value with newline",
        _field(SENSOR, "lxc/lxc.x", "1\nlxc.apparmor.profile = unconfined"),
        InvalidStateError,
        f'{S}#lxc["lxc.x"]',
    ),
    (
        "max retries negative",
        _field(SENSOR, "auto_recovery/max_retries", -1),
        InvalidStateError,
        f"{S}#auto_recovery.max_retries",
    ),
    (
        "max retries boolean",
        _field(SENSOR, "auto_recovery/max_retries", True),
        InvalidStateError,
        f"{S}#auto_recovery.max_retries",
    ),
    (
        "backoff below one",
        _field(SENSOR, "auto_recovery/backoff_factor", 0.5),
        InvalidStateError,
        f"{S}#auto_recovery.backoff_factor",
    ),
    (
        "recovery policy unknown",
        _field(SENSOR, "auto_recovery/policy", "sometimes"),
        InvalidStateError,
        f"{S}#auto_recovery.policy",
    ),
    (
        "persistence unknown",
        _field(SENSOR, "storage/data/persistence", "forever"),
        InvalidStateError,
        f'{S}#storage["data"].persistence',
    ),
    (
        "NaN inside a document",
        _field("logger/run.json", "logs/max_size", math.nan),
        InvalidJSONError,
        "state.json:logger/run.json#logs.max_size",
    ),
    (
        "roles twice",
        _field("mgmt/run.json", "roles", ["mgmt", "mgmt"]),
        InvalidStateError,
        "state.json:mgmt/run.json#roles",
    ),
    ("cwd relative", _field(SENSOR, "cwd", "app"), InvalidStateError, f"{S}#cwd"),
    ("cwd with newline", _field(SENSOR, "cwd", "/app\nx"), InvalidStateError, f"{S}#cwd"),
    ("cwd with NUL", _field(SENSOR, "cwd", "/app\x00"), InvalidStateError, f"{S}#cwd"),
    ("cwd trailing blank", _field(SENSOR, "cwd", "/app "), InvalidStateError, f"{S}#cwd"),
    ("cwd empty", _field(SENSOR, "cwd", ""), InvalidStateError, f"{S}#cwd"),
    ("cwd not text", _field(SENSOR, "cwd", ["/app"]), InvalidStateError, f"{S}#cwd"),
    ("user not text", _field(SENSOR, "user", 1000), InvalidStateError, f"{S}#user"),
    ("user empty", _field(SENSOR, "user", ""), InvalidStateError, f"{S}#user"),
    ("user name bad", _field(SENSOR, "user", "-rf"), InvalidStateError, f"{S}#user"),
    ("user name blank", _field(SENSOR, "user", "app user"), InvalidStateError, f"{S}#user"),
    ("user name too long", _field(SENSOR, "user", "a" * 33), InvalidStateError, f"{S}#user"),
    ("user id too big", _field(SENSOR, "user", "4294967295"), InvalidStateError, f"{S}#user"),
    ("user id negative", _field(SENSOR, "user", "-1"), InvalidStateError, f"{S}#user"),
    ("user group empty", _field(SENSOR, "user", "1000:"), InvalidStateError, f"{S}#user"),
    ("user user empty", _field(SENSOR, "user", ":1000"), InvalidStateError, f"{S}#user"),
    ("user three parts", _field(SENSOR, "user", "a:b:c"), InvalidStateError, f"{S}#user"),
    ("gid too big", _field(SENSOR, "user", "0:99999999999"), InvalidStateError, f"{S}#user"),
    (
        "container named other",
        _set("other/run.json", {"name": "other", "root-volume": "r", "group": "app"}),
        InvalidStateError,
        "state.json:other/run.json",
    ),
]


@pytest.mark.parametrize(
    ("edit", "error", "where"),
    [pytest.param(e, err, w, id=name) for name, e, err, w in BAD_INPUTS],
)
def test_bad_input_is_refused_naming_the_key(
    edit: Callable[[dict[str, Any]], None], error: type[BadInputError], where: str
) -> None:
    d = sample_state_dict()
    edit(d)
    before = copy.deepcopy(d)
    with pytest.raises(error) as info:
        State.from_dict(d)
    assert info.value.where == where, str(info.value)
    assert where in str(info.value)
    assert d == before  # the input is never changed, even on error


def test_there_are_at_least_twenty_distinct_bad_input_cases() -> None:
    assert len({name for name, *_ in BAD_INPUTS}) >= 20


def test_duplicate_keys_in_state_bytes_are_refused() -> None:
    data = b'{"#spec":"pvinit-state@1","device.json":{},"device.json":{}}'
    with pytest.raises(InvalidJSONError) as info:
        State.from_bytes(data, where="trails/3/state.json")
    assert info.value.where == "trails/3/state.json"
    assert "duplicate key 'device.json'" in str(info.value)


def test_a_revision_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidStateError) as info:
        State.from_bytes(b"[]", where="rev.json")
    assert info.value.where == "rev.json"

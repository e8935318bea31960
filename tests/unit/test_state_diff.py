"""Diffs between revisions: grouped by part, and applying a diff gives the new revision."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given

from pvinit.errors import ConflictError, IntegrityError, InvalidStateError
from pvinit.state.diff import apply_diff, diff_states
from pvinit.state.model import State
from tests.unit.state_samples import sample_state_dict, state_dicts

ONE = "1" * 64


def _sample() -> State:
    return State.from_dict(sample_state_dict())


def test_identical_states_have_an_empty_diff() -> None:
    diff = diff_states(_sample(), _sample())
    assert diff.is_empty
    assert dict(diff.parts) == {}


def test_diff_groups_keys_by_part() -> None:
    old = _sample()
    d = sample_state_dict()
    d["bsp/kernel.img"] = ONE
    d["sensor/run.json"]["env"]["RATE"] = "10"
    d["sensor/cal.bin"] = ONE
    del d["logger/tools.squashfs"]
    d["logger/run.json"]["volumes"] = []
    d["notes.json"] = {"text": "hello"}
    new = State.from_dict(d)
    diff = diff_states(old, new)
    assert diff.added == ("notes.json", "sensor/cal.bin")
    assert diff.removed == ("logger/tools.squashfs",)
    assert diff.changed == ("bsp/kernel.img", "logger/run.json", "sensor/run.json")
    assert set(diff.parts) == {"bsp", "sensor", "logger", "other"}
    assert diff.parts["bsp"].kind == "bsp"
    assert diff.parts["bsp"].changed == ("bsp/kernel.img",)
    assert diff.parts["sensor"].kind == "container"
    assert diff.parts["sensor"].added == ("sensor/cal.bin",)
    assert diff.parts["sensor"].changed == ("sensor/run.json",)
    assert diff.parts["logger"].removed == ("logger/tools.squashfs",)
    assert diff.parts["other"].kind == "other"
    assert diff.parts["other"].added == ("notes.json",)


def test_removed_container_is_its_own_part() -> None:
    d = sample_state_dict()
    for key in [k for k in d if k.startswith("logger/")]:
        del d[key]
    diff = diff_states(_sample(), State.from_dict(d))
    assert list(diff.parts) == ["logger"]
    assert diff.parts["logger"].kind == "container"
    assert set(diff.parts["logger"].removed) == {
        "logger/run.json",
        "logger/root.squashfs",
        "logger/tools.squashfs",
    }


def test_device_json_change_is_the_device_part() -> None:
    d = sample_state_dict()
    d["device.json"]["groups"][3]["timeout"] = 60
    diff = diff_states(_sample(), State.from_dict(d))
    assert diff.parts["device.json"].kind == "device"
    assert diff.parts["device.json"].changed == ("device.json",)


def test_int_to_float_in_a_document_is_a_change() -> None:
    d = sample_state_dict()
    d["device.json"]["groups"][0]["timeout"] = 30.0
    diff = diff_states(_sample(), State.from_dict(d))
    assert diff.changed == ("device.json",)


def test_diff_from_nothing_adds_every_key() -> None:
    new = _sample()
    diff = diff_states(None, new)
    assert set(diff.added) == set(new.entries)
    assert diff.old_digest is None
    assert diff.parts["#spec"].kind == "spec"


def test_applying_a_diff_to_the_wrong_base_is_a_conflict() -> None:
    old = _sample()
    d = sample_state_dict()
    d["sensor/root.squashfs"] = ONE
    diff = diff_states(old, State.from_dict(d)).to_dict()
    with pytest.raises(ConflictError):
        apply_diff(None, diff)
    other = old.with_entries({"mgmt/extra": ONE})
    with pytest.raises(ConflictError):
        apply_diff(other, diff)


def test_a_tampered_diff_fails_the_target_digest() -> None:
    old = _sample()
    d = sample_state_dict()
    d["sensor/root.squashfs"] = ONE
    payload: dict[str, Any] = diff_states(old, State.from_dict(d)).to_dict()
    payload["changed"]["sensor/root.squashfs"] = "2" * 64
    with pytest.raises(IntegrityError):
        apply_diff(old, payload)


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("#diff", "other@1", "diff##diff"),
        ("to", "nope", "diff#to"),
        ("from", 5, "diff#from"),
        ("added", [], "diff#added"),
        ("removed", {}, "diff#removed"),
    ],
)
def test_malformed_diff_is_refused_naming_the_field(field: str, value: object, where: str) -> None:
    payload = diff_states(None, _sample()).to_dict()
    payload[field] = value
    with pytest.raises(InvalidStateError) as info:
        apply_diff(None, payload)
    assert info.value.where == where


@given(state_dicts(), state_dicts())
def test_apply_of_diff_gives_the_new_state(
    old_dict: dict[str, Any], new_dict: dict[str, Any]
) -> None:
    old = State.from_dict(old_dict)
    new = State.from_dict(new_dict)
    diff = diff_states(old, new)
    assert apply_diff(old, diff.to_dict()) == new
    assert apply_diff(old, diff) == new
    assert apply_diff(None, diff_states(None, new)) == new
    assert diff.is_empty == (old == new)
    every = set(diff.added) | set(diff.removed) | set(diff.changed)
    assert every == {key for part in diff.parts.values() for key in part.keys}


@given(state_dicts())
def test_diff_of_a_state_with_itself_is_empty(d: dict[str, Any]) -> None:
    assert diff_states(State.from_dict(d), State.from_dict(copy.deepcopy(d))).is_empty

"""Update plans: fetch only what is missing; reboot only when the design says so."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pvinit.state.model import State
from pvinit.state.plan import plan_update
from tests.unit.state_samples import sample_id, sample_state_dict, state_dicts

ONE = "1" * 64


def _have_all(_: str) -> bool:
    return True


def _sample() -> State:
    return State.from_dict(sample_state_dict())


def test_first_install_reboots_and_fetches_every_missing_object() -> None:
    new = _sample()
    plan = plan_update(None, new, lambda oid: oid == sample_id("bsp/kernel.img"))
    assert plan.reboot
    assert plan.objects_to_fetch == tuple(sorted(new.object_ids() - {sample_id("bsp/kernel.img")}))
    assert plan.containers_to_start == ("logger", "mgmt", "sensor")
    assert plan.containers_to_stop == ()
    assert "first" in plan.reasons[0]


def test_no_change_means_nothing_to_do() -> None:
    plan = plan_update(_sample(), _sample(), _have_all)
    assert not plan.reboot
    assert plan.objects_to_fetch == ()
    assert plan.containers_to_stop == plan.containers_to_start == ()
    assert plan.containers_unchanged == ("logger", "mgmt", "sensor")
    assert plan.reasons == ("nothing changed",)


def test_app_container_change_restarts_only_that_container() -> None:
    d = sample_state_dict()
    d["sensor/root.squashfs"] = ONE
    plan = plan_update(_sample(), State.from_dict(d), lambda oid: oid != ONE)
    assert not plan.reboot
    assert plan.objects_to_fetch == (ONE,)
    assert plan.containers_to_stop == ("sensor",)
    assert plan.containers_to_start == ("sensor",)
    assert plan.containers_unchanged == ("logger", "mgmt")
    assert plan.reasons == ("container sensor changed: restart it",)


def test_bsp_change_reboots_with_a_reason_naming_the_key() -> None:
    d = sample_state_dict()
    d["bsp/kernel.img"] = ONE
    plan = plan_update(_sample(), State.from_dict(d), _have_all)
    assert plan.reboot
    assert plan.reasons == ("bsp/kernel.img changed: the BSP needs a reboot",)
    assert plan.containers_to_stop == plan.containers_to_start == ("logger", "mgmt", "sensor")


def test_device_json_change_reboots() -> None:
    d = sample_state_dict()
    d["device.json"]["groups"][3]["timeout"] = 90
    plan = plan_update(_sample(), State.from_dict(d), _have_all)
    assert plan.reboot
    assert plan.reasons[0].startswith("device.json changed")


def test_container_inheriting_system_policy_from_its_group_reboots() -> None:
    d = sample_state_dict()
    d["mgmt/run.json"]["env"] = {"DEBUG": "1"}
    plan = plan_update(_sample(), State.from_dict(d), _have_all)
    assert plan.reboot
    assert plan.reasons == (
        "container mgmt changed and its restart policy is system: it needs a reboot",
    )


def test_container_leaving_the_system_policy_still_reboots() -> None:
    d = sample_state_dict()
    d["mgmt/run.json"]["restart_policy"] = "container"
    assert plan_update(_sample(), State.from_dict(d), _have_all).reboot


def test_added_and_removed_app_containers_start_and_stop_without_reboot() -> None:
    d = sample_state_dict()
    for key in [k for k in d if k.startswith("logger/")]:
        del d[key]
    d["extra/run.json"] = {"name": "extra", "root-volume": "r.img", "group": "app"}
    d["extra/r.img"] = ONE
    d["notes.json"] = {"a": 1}
    plan = plan_update(_sample(), State.from_dict(d), _have_all)
    assert not plan.reboot
    assert plan.containers_to_stop == ("logger",)
    assert plan.containers_to_start == ("extra",)
    assert plan.containers_unchanged == ("mgmt", "sensor")
    assert plan.reasons == (
        "container extra added: start it",
        "container logger removed: stop it",
        "notes.json added: it belongs to no container, nothing restarts",
    )


def test_plan_to_dict_is_plain_json() -> None:
    plan = plan_update(None, _sample(), _have_all)
    out: dict[str, Any] = plan.to_dict()
    assert out["reboot"] is True
    assert out["containers_to_start"] == ["logger", "mgmt", "sensor"]


@given(st.none() | state_dicts(), state_dicts(), st.sets(st.integers(0, 11)))
def test_plan_invariants(
    old_dict: dict[str, Any] | None, new_dict: dict[str, Any], held: set[int]
) -> None:
    old = State.from_dict(old_dict) if old_dict is not None else None
    new = State.from_dict(new_dict)
    have_ids = {oid for i, oid in enumerate(sorted(new.object_ids())) if i in held}
    asked: list[str] = []

    def have(oid: str) -> bool:
        asked.append(oid)
        return oid in have_ids

    plan = plan_update(old, new, have)
    fetch = set(plan.objects_to_fetch)
    assert fetch <= new.object_ids()
    assert not fetch & have_ids
    assert fetch | (have_ids & new.object_ids()) == new.object_ids()
    assert list(plan.objects_to_fetch) == sorted(fetch)
    assert len(asked) == len(set(asked))
    old_names = set(old.containers) if old is not None else set()
    new_names = set(new.containers)
    assert set(plan.containers_to_stop) <= old_names
    assert set(plan.containers_to_start) <= new_names
    assert set(plan.containers_unchanged) <= old_names & new_names
    assert plan.reasons
    if old is None:
        assert plan.reboot
    if plan.reboot:
        assert set(plan.containers_to_stop) == old_names
        assert set(plan.containers_to_start) == new_names
    else:
        assert not set(plan.containers_to_stop) & set(plan.containers_unchanged)
        assert set(plan.containers_to_start) | set(plan.containers_unchanged) == new_names
        assert set(plan.containers_to_stop) | set(plan.containers_unchanged) == old_names
    if old is not None and old == new:
        assert not plan.reboot
        assert plan.containers_to_stop == plan.containers_to_start == ()

"""The pure rules of updates: state machine, journal, and the boot-time reconciliation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvinit.errors import BadInputError, ConflictError
from pvinit.trails.layout import StorageLayout
from pvinit.update.bootplan import BootFacts, plan_boot
from pvinit.update.journal import Journal, list_journals, read_journal, write_journal
from pvinit.update.machine import TERMINAL, UpdateState, check_transition
from pvinit.update.settings import DeviceSettings

S = UpdateState


def test_a_reboot_update_walks_the_whole_lifecycle() -> None:
    j = Journal.start(4, source="test")
    for state in (S.DOWNLOADING, S.INSTALLING, S.TESTING, S.DONE):
        j = j.advance(state)
    assert [s.state for s in j.history] == [S.QUEUED, S.DOWNLOADING, S.INSTALLING, S.TESTING,
                                            S.DONE]


@pytest.mark.parametrize(
    ("current", "new"),
    [(S.QUEUED, S.INSTALLING), (S.QUEUED, S.DONE), (S.DOWNLOADING, S.TESTING),
     (S.TESTING, S.WONTGO), (S.DONE, S.ERROR), (S.ERROR, S.QUEUED), (S.WONTGO, S.DOWNLOADING),
     (None, S.TESTING)],
)
def test_illegal_transitions_are_refused(current: UpdateState | None, new: UpdateState) -> None:
    with pytest.raises(ConflictError, match="revision 3"):
        check_transition(current, new, revision=3)


def test_terminal_states_have_no_way_out() -> None:
    assert frozenset({S.DONE, S.UPDATED, S.WONTGO, S.ERROR}) == TERMINAL


def test_a_refusal_keeps_its_reason() -> None:
    j = Journal.start(2, source="bundle").advance(S.WONTGO, "revision 2 is not newer than 5")
    assert j.reason == "revision 2 is not newer than 5"
    assert j.state is S.WONTGO


def test_journal_round_trips_through_disk(tmp_path: Path) -> None:
    layout = StorageLayout(tmp_path)
    j = Journal.start(7, source="remote").advance(S.DOWNLOADING, "3 objects")
    write_journal(layout, j)
    assert read_journal(layout, 7) == j
    assert list_journals(layout) == [j]
    assert read_journal(layout, 8) is None


def test_a_garbled_journal_is_bad_input_naming_the_file(tmp_path: Path) -> None:
    layout = StorageLayout(tmp_path)
    (tmp_path / "progress").mkdir()
    (tmp_path / "progress" / "3.json").write_text("{not json")
    with pytest.raises(BadInputError, match=r"3\.json"):
        read_journal(layout, 3)


def facts(booted: int | None, env: dict[str, str], current: int | None = None,
          journals: dict[int, UpdateState] | None = None) -> BootFacts:
    return BootFacts(booted=booted, env=env, current=current, journals=journals or {})


def test_a_plain_boot_runs_the_committed_revision() -> None:
    plan = plan_boot(facts(3, {"pv_rev": "3"}))
    assert (plan.run, plan.testing, plan.failed, dict(plan.env_changes)) == (3, False, (), {})


def test_booting_the_try_revision_is_a_test() -> None:
    plan = plan_boot(facts(4, {"pv_rev": "3", "pv_try": "4", "pv_trying": "4"},
                           journals={4: S.TESTING}))
    assert plan.run == 4 and plan.testing and not plan.failed


def test_back_on_pv_rev_with_try_set_means_the_try_failed() -> None:
    plan = plan_boot(facts(3, {"pv_rev": "3", "pv_try": "4", "pv_trying": "4"},
                           journals={4: S.TESTING}))
    assert plan.run == 3 and not plan.testing
    assert [rev for rev, _ in plan.failed] == [4]
    assert "did not commit" in plan.failed[0][1]
    assert dict(plan.env_changes) == {"pv_try": None, "pv_trying": None}


def test_a_live_update_still_testing_at_boot_failed() -> None:
    plan = plan_boot(facts(3, {"pv_rev": "3"}, journals={4: S.TESTING, 2: S.DONE}))
    assert [rev for rev, _ in plan.failed] == [4]


def test_a_blank_environment_adopts_the_running_revision() -> None:
    plan = plan_boot(facts(None, {}, current=1))
    assert plan.run == 1 and dict(plan.env_changes) == {"pv_rev": "1"}


def test_garbage_in_the_environment_reads_as_absent() -> None:
    plan = plan_boot(facts(None, {"pv_rev": "x1", "pv_try": "../4"}, current=2))
    assert plan.run == 2 and not plan.failed


def test_settings_refuse_bad_values_naming_the_field() -> None:
    with pytest.raises(BadInputError, match="commit_delay"):
        DeviceSettings.from_dict({"commit_delay": -1}, where="pvinit.json")
    with pytest.raises(BadInputError, match="bootenv"):
        DeviceSettings.from_dict({"bootenv": {"kind": "floppy"}}, where="pvinit.json")
    with pytest.raises(BadInputError, match="remote"):
        DeviceSettings.from_dict({"remote": {"url": 3}}, where="pvinit.json")
    ok = DeviceSettings.from_dict({"remote": {"url": "http://x", "channel": "c"}}, where="p")
    assert ok.remote is not None and ok.remote.channel == "c"


def test_uboot_options_in_settings_reach_the_backend(tmp_path: Path) -> None:
    from pvinit.boot.uboot import UBootEnv
    from pvinit.update.bootloader import open_device_bootenv

    settings = DeviceSettings.from_dict(
        {"bootenv": {"kind": "uboot", "path": "boot/u.env", "size": 8192, "defaults": {}}},
        where="pvinit.json",
    )
    env = open_device_bootenv(StorageLayout(tmp_path), settings)
    assert isinstance(env, UBootEnv)
    env.update({"pv_rev": "1"})
    assert (tmp_path / "boot" / "u.env").stat().st_size == 8192
    assert env.read()["pv_rev"] == "1"
    with pytest.raises(BadInputError, match="colour"):
        open_device_bootenv(StorageLayout(tmp_path), DeviceSettings.from_dict(
            {"bootenv": {"kind": "file", "colour": "red"}}, where="p"))

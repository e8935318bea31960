"""The bootloader rule (pv_rev / pv_try / pv_trying) as a table of cases."""

from __future__ import annotations

import pytest

from pvinit.boot.rule import (
    BootChoice,
    abandon_try,
    begin_try,
    choose_boot,
    commit,
    parse_revision,
)
from pvinit.errors import BadInputError

CASES = [
    # env, revision, trying, rollback, changes
    ({}, None, False, False, {}),
    ({"pv_rev": "3"}, 3, False, False, {}),
    ({"pv_rev": "3", "pv_try": "4"}, 4, True, False, {"pv_trying": "4"}),
    ({"pv_rev": "3", "pv_try": "4", "pv_trying": "2"}, 4, True, False, {"pv_trying": "4"}),
    ({"pv_rev": "3", "pv_try": "4", "pv_trying": "4"}, 3, False, True, {}),
    ({"pv_rev": "3", "pv_try": "4", "pv_trying": "04"}, 3, False, True, {}),
    ({"pv_try": "4", "pv_trying": "4"}, None, False, True, {}),
    ({"pv_try": "4"}, 4, True, False, {"pv_trying": "4"}),
    ({"pv_rev": "3", "pv_trying": "4"}, 3, False, False, {}),
    # garbage counts as absent
    ({"pv_rev": "three"}, None, False, False, {}),
    ({"pv_rev": "3", "pv_try": "x4"}, 3, False, False, {}),
    ({"pv_rev": "3", "pv_try": ""}, 3, False, False, {}),
    ({"pv_rev": "3", "pv_try": "-4"}, 3, False, False, {}),
    ({"pv_rev": "3", "pv_try": "4", "pv_trying": "junk"}, 4, True, False, {"pv_trying": "4"}),
    ({"pv_rev": "3", "pv_try": "٤"}, 3, False, False, {}),  # non-ASCII digit
    ({"pv_rev": "9" * 40}, None, False, False, {}),
    ({"pv_rev": " 3 "}, 3, False, False, {}),
]


@pytest.mark.parametrize(("env", "revision", "trying", "rollback", "changes"), CASES)
def test_choose_boot_follows_the_contract(
    env: dict[str, str],
    revision: int | None,
    trying: bool,
    rollback: bool,
    changes: dict[str, str | None],
) -> None:
    assert choose_boot(env) == BootChoice(revision, trying, rollback, changes)


def apply(env: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    out = dict(env)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_a_try_gets_exactly_one_boot_then_rolls_back() -> None:
    env = apply({}, commit(3))
    env = apply(env, begin_try(4))
    first = choose_boot(env)
    assert (first.revision, first.trying) == (4, True)
    env = apply(env, first.changes)  # the try boots, then crashes before commit
    second = choose_boot(env)
    assert (second.revision, second.rollback) == (3, True)
    env = apply(env, second.changes)
    assert choose_boot(env).rollback  # stays a rollback until pvinit clears the try
    env = apply(env, abandon_try())
    assert choose_boot(env) == BootChoice(3)


def test_a_committed_try_boots_from_then_on() -> None:
    env = apply(apply({}, commit(3)), begin_try(4))
    env = apply(env, choose_boot(env).changes)
    env = apply(env, commit(4))
    assert env == {"pv_rev": "4"}
    assert choose_boot(env) == BootChoice(4)


def test_begin_try_after_a_failed_try_of_the_same_revision_tries_again() -> None:
    env = {"pv_rev": "3", "pv_try": "4", "pv_trying": "4"}
    env = apply(env, begin_try(4))
    assert choose_boot(env).trying


def test_helpers_return_change_dicts() -> None:
    assert begin_try(5) == {"pv_try": "5", "pv_trying": None}
    assert commit(5) == {"pv_rev": "5", "pv_try": None, "pv_trying": None}
    assert abandon_try() == {"pv_try": None, "pv_trying": None}


@pytest.mark.parametrize("bad", [-1, True, "4", 4.0])
def test_helpers_refuse_what_is_not_a_revision(bad: object) -> None:
    with pytest.raises(BadInputError):
        begin_try(bad)  # type: ignore[arg-type]
    with pytest.raises(BadInputError):
        commit(bad)  # type: ignore[arg-type]


def test_parse_revision_treats_garbage_as_absent() -> None:
    assert parse_revision("12") == 12
    assert parse_revision(None) is None
    assert parse_revision("1e3") is None


def test_boot_choice_round_trips_through_a_dict() -> None:
    choice = BootChoice(4, trying=True, changes={"pv_trying": "4"})
    assert BootChoice.from_dict(choice.to_dict()) == choice
    assert choice.as_environ() == {"pv_boot_rev": "4", "pv_boot_trying": "1"}

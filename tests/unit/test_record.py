"""pvinit.record: the dataclass contract pvinit's models rely on, without dataclasses."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, ClassVar

import pytest

from pvinit.record import (
    INTERPRETED_CALLS,
    FrozenRecordError,
    field,
    fields,
    is_record,
    record,
    replace,
)


@record(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = field(default_factory=tuple)
    note: str = field(default="", compare=False, repr=False)
    ORIGIN_NAME: ClassVar[str] = "origin"


@record
class Counter:
    name: str
    seen: list[int] = field(default_factory=list)


@record(frozen=True, kw_only=True)
class Checked:
    size: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("size must not be negative")


def test_init_takes_fields_in_order_with_defaults() -> None:
    point = Point(1)
    assert (point.x, point.y, point.tags, point.note) == (1, 0, (), "")
    assert Point(1, 2, ("a",)).y == 2


def test_classvar_is_not_a_field() -> None:
    assert [f.name for f in fields(Point)] == ["x", "y", "tags", "note"]
    assert Point.ORIGIN_NAME == "origin"


def test_default_factory_builds_a_fresh_value_per_instance() -> None:
    first, second = Counter("a"), Counter("b")
    first.seen.append(1)
    assert second.seen == []


def test_frozen_record_refuses_assignment_and_deletion() -> None:
    point = Point(1)
    with pytest.raises(FrozenRecordError):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del point.y
    assert point.x == 1


def test_mutable_record_allows_assignment_and_is_unhashable() -> None:
    counter = Counter("a")
    counter.name = "b"
    assert counter.name == "b"
    with pytest.raises(TypeError):
        hash(counter)


def test_equality_and_hash_follow_compared_fields_only() -> None:
    assert Point(1, 2, note="x") == Point(1, 2, note="y")
    assert hash(Point(1, 2, note="x")) == hash(Point(1, 2, note="y"))
    assert Point(1, 2) != Point(1, 3)
    other: object = Counter("a")
    assert Point(1) != other
    assert len({Point(1), Point(1), Point(2)}) == 2


def test_repr_shows_fields_except_hidden_ones() -> None:
    assert repr(Point(1, 2, note="secret")) == "Point(x=1, y=2, tags=())"


def test_kw_only_record_takes_keywords_only() -> None:
    assert Checked(size=1).size == 1
    with pytest.raises(TypeError):
        Checked(1)  # type: ignore[call-arg]


def test_post_init_validates_on_construction_and_on_replace() -> None:
    with pytest.raises(ValueError, match="negative"):
        Checked(size=-1)
    with pytest.raises(ValueError, match="negative"):
        replace(Checked(size=1), size=-1)


def test_replace_changes_named_fields_and_keeps_the_rest() -> None:
    point = Point(1, 2, ("a",), note="n")
    moved = replace(point, y=5)
    assert (moved.x, moved.y, moved.tags, moved.note) == (1, 5, ("a",), "n")
    assert point.y == 2


def test_replace_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError):
        replace(Point(1), z=3)


def test_field_without_default_after_one_with_is_refused() -> None:
    with pytest.raises(TypeError, match="Broken"):

        @record
        class Broken:
            a: int = 0
            b: int  # type: ignore[misc]


def test_records_do_not_inherit_from_records() -> None:
    with pytest.raises(TypeError, match="inherit"):

        @record
        class Child(Counter):
            extra: int = 0


def test_field_cannot_have_default_and_factory() -> None:
    with pytest.raises(ValueError):
        field(default=1, default_factory=int)


def test_is_record_and_fields_refuse_plain_objects() -> None:
    assert is_record(Point(1)) and is_record(Point)
    assert not is_record(object())
    with pytest.raises(TypeError):
        fields(object())


def test_user_defined_methods_are_kept() -> None:
    @record(frozen=True)
    class Named:
        name: str

        def __repr__(self) -> str:
            return f"<{self.name}>"

    assert repr(Named("a")) == "<a>"


def test_match_args_allow_positional_patterns() -> None:
    match Point(3, 4):
        case Point(x, y):
            assert (x, y) == (3, 4)
        case _:
            pytest.fail("no match")


def test_models_import_without_dataclasses_or_inspect() -> None:
    """The state model and the supervisor's records must stay cheap to import."""
    code = (
        "import sys, pvinit.state.model, pvinit.containers.spec, pvinit.update.journal\n"
        "print(' '.join(m for m in ('dataclasses', 'inspect', 'ast') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": ":".join(p for p in sys.path if p)},
    )
    assert out.stdout.strip() == ""


def _shapes() -> tuple[type[Any], type[Any]]:
    """A frozen and a mutable record class with every kind of field (fresh each call)."""

    @record(frozen=True)
    class Frozen:
        a: int
        b: str = "x"
        c: tuple[int, ...] = field(default_factory=tuple)

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("a < 0")

    @record(kw_only=True)
    class Mutable:
        a: int
        b: list[int] = field(default_factory=list)

    return Frozen, Mutable


GOOD_CALLS: list[tuple[int, tuple[Any, ...], dict[str, Any]]] = [
    (0, (1,), {}), (0, (1, "y"), {}), (0, (), {"a": 2}), (0, (1,), {"b": "z", "c": (3,)}),
    (1, (), {"a": 1}), (1, (), {"a": 1, "b": [2]}),
]
BAD_CALLS: list[tuple[int, tuple[Any, ...], dict[str, Any], type[Exception]]] = [
    (0, (), {}, TypeError), (0, (1, "y", (), 4), {}, TypeError), (0, (1,), {"a": 2}, TypeError),
    (0, (1,), {"d": 0}, TypeError), (0, (-1,), {}, ValueError),
    (1, (1,), {}, TypeError), (1, (), {}, TypeError), (1, (), {"a": 1, "c": 0}, TypeError),
]


def test_init_binds_generically_at_first_exactly_as_the_compiled_one_that_replaces_it() -> None:
    early, late = _shapes(), _shapes()
    for cls in late:  # build each enough times that its compiled __init__ takes over
        for _ in range(INTERPRETED_CALLS + 1):
            cls(a=0)
    for cls_early, cls_late in zip(early, late, strict=True):
        assert cls_early.__init__ is not cls_late.__init__
    for which, args, kwargs in GOOD_CALLS:
        one, other = early[which](*args, **kwargs), late[which](*args, **kwargs)
        assert [getattr(one, f.name) for f in fields(one)] == \
            [getattr(other, f.name) for f in fields(other)]
    for which, args, kwargs, error in BAD_CALLS:
        for cls in (early[which], late[which]):
            with pytest.raises(error):
                cls(*args, **kwargs)
    frozen = early[0](1)
    with pytest.raises(FrozenRecordError):
        frozen.a = 2
    assert early[1](a=1).b is not early[1](a=1).b  # a fresh list per instance


def test_init_is_compiled_once_a_class_has_been_built_a_few_times() -> None:
    @record(frozen=True)
    class Late:
        a: int
        b: str = "x"

    generic = Late.__init__
    with pytest.raises(TypeError):
        Late()  # type: ignore[call-arg]
    for _ in range(INTERPRETED_CALLS - 1):
        assert Late.__init__ is generic
        Late(1)
    Late(1)  # one more than INTERPRETED_CALLS: compiled now
    assert Late.__init__ is not generic
    assert Late(1) == Late(1, "x")
    assert Late(a=2, b="y").b == "y"

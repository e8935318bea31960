"""Canonical JSON: one byte form per value, strict parsing."""

from __future__ import annotations

import hashlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvinit.errors import InvalidJSONError
from pvinit.state.canonical import (
    MAX_DEPTH,
    canonical_bytes,
    digest_of,
    parse_canonical,
    parse_json,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def test_canonical_bytes_sort_keys_and_drop_whitespace() -> None:
    assert canonical_bytes({"b": [1, 2], "a": {"d": None, "c": True}}) == (
        b'{"a":{"c":true,"d":null},"b":[1,2]}'
    )


def test_non_ascii_text_is_written_as_utf8_not_escaped() -> None:
    assert canonical_bytes({"name": "capteur-é"}) == '{"name":"capteur-é"}'.encode()


def test_floats_keep_their_type_and_shortest_repr() -> None:
    assert canonical_bytes({"f": 2.0, "i": 2, "small": 1e-7, "big": 1e20}) == (
        b'{"big":1e+20,"f":2.0,"i":2,"small":1e-07}'
    )
    assert parse_json(canonical_bytes(2.0), where="x") == 2.0
    assert isinstance(parse_json(canonical_bytes(2.0), where="x"), float)


def test_digest_is_sha256_of_canonical_bytes() -> None:
    value = {"z": 1, "a": "x"}
    assert digest_of(value) == hashlib.sha256(b'{"a":"x","z":1}').hexdigest()


@given(json_values)
def test_parse_of_canonical_gives_the_value_back(value: object) -> None:
    data = canonical_bytes(value)
    assert parse_json(data, where="v") == value


@given(json_values)
def test_canonical_form_is_a_fixed_point(value: object) -> None:
    data = canonical_bytes(value)
    assert canonical_bytes(parse_json(data, where="v")) == data
    assert parse_canonical(data, where="v") == value


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"a":1,"a":2}', "duplicate key 'a'"),
        (b'{"a":NaN}', "NaN"),
        (b'{"a":-Infinity}', "-Infinity"),
        (b'{"a":1e400}', "no JSON form"),
        (b'{"a":"\\ud800"}', "surrogate"),
        (b"\xff{}", "not UTF-8"),
        (b"\xef\xbb\xbf{}", "byte-order mark"),
        (b'{"a":', "not JSON"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "deeper"),
    ],
)
def test_parse_json_refuses_bad_input_naming_where(data: bytes, fragment: str) -> None:
    with pytest.raises(InvalidJSONError) as info:
        parse_json(data, where="in.json")
    assert info.value.where is not None
    assert info.value.where.startswith("in.json")
    assert fragment in str(info.value)


def test_duplicate_keys_nested_deep_are_refused() -> None:
    with pytest.raises(InvalidJSONError, match="duplicate key 'k'"):
        parse_json(b'{"a":[{"k":1,"k":1}]}', where="x")


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({1: "a"}, "v"),
        ({"a": math.nan}, "v#a"),
        ({"a": [0, math.inf]}, "v#a[1]"),
        ({"a": (1, 2)}, "v#a"),
        ({"a": {1, 2}}, "v#a"),
        ({"a": b"bytes"}, "v#a"),
    ],
)
def test_canonical_bytes_refuses_values_json_cannot_hold(value: object, where: str) -> None:
    with pytest.raises(InvalidJSONError) as info:
        canonical_bytes(value, where="v")
    assert info.value.where == where


def test_parse_canonical_refuses_non_canonical_bytes() -> None:
    with pytest.raises(InvalidJSONError, match="not in canonical form"):
        parse_canonical(b'{"b":1, "a":2}', where="state.json")

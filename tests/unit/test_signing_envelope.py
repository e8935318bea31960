from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pvinit import record
from pvinit.errors import InvalidJSONError, InvalidStateError
from pvinit.signing.envelope import Envelope, Signature, check_time, parse_time

OBJ = "ab" * 32
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def make_envelope(**overrides: Any) -> Envelope:
    values: dict[str, Any] = {
        "revision": 3,
        "parent": "cd" * 32,
        "state_bytes": b'{"#spec":"pvinit-state@1"}',
        "sizes": {OBJ: 10},
        "created": NOW,
        "expires": NOW + timedelta(days=30),
        "message": "bump sensor",
    }
    values.update(overrides)
    return Envelope.create(**values)


def test_dict_round_trip_keeps_every_field_and_the_digest() -> None:
    envelope = make_envelope()
    again = Envelope.from_dict(envelope.to_dict())
    assert again == envelope
    assert again.digest == envelope.digest
    assert Envelope.from_json(envelope.to_json()) == envelope


def test_signed_bytes_exclude_signatures_but_include_unknown_fields() -> None:
    data = make_envelope().to_dict()
    data["channel"] = "stable"
    envelope = Envelope.from_dict(data)
    signed = json.loads(envelope.signed_bytes())
    assert "signatures" not in signed
    assert signed["channel"] == "stable"
    assert envelope.to_dict()["channel"] == "stable"
    assert envelope.digest == hashlib.sha256(envelope.signed_bytes()).hexdigest()
    with_sig = record.replace(envelope, signatures=(Signature("11" * 32, "22" * 64),))
    assert with_sig.signed_bytes() == envelope.signed_bytes()


def test_create_hashes_the_state_bytes() -> None:
    envelope = make_envelope(state_bytes=b"{}")
    assert envelope.state == hashlib.sha256(b"{}").hexdigest()
    assert envelope.state_size == 2
    assert envelope.created == "2024-05-01T12:00:00Z"


def _bad(field: str, value: object) -> dict[str, Any]:
    data = make_envelope().to_dict()
    data[field] = value
    return data


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("revision", 0),
        ("revision", True),
        ("revision", "3"),
        ("parent", "CD" * 32),
        ("parent", "cd" * 31),
        ("state", None),
        ("state_size", -1),
        ("sizes", {"not-an-id": 1}),
        ("sizes", {OBJ: -5}),
        ("sizes", [OBJ]),
        ("created", "2024-05-01 12:00:00"),
        ("created", "2024-13-01T12:00:00Z"),
        ("expires", "2024-04-01T12:00:00Z"),
        ("message", 5),
        ("signatures", [{"keyid": "11" * 32, "sig": "zz" * 64}]),
        ("signatures", [{"keyid": "11" * 32, "sig": "22" * 63}]),
        ("signatures", [{"keyid": "xyz", "sig": "22" * 64}]),
        ("signatures", "none"),
        ("#spec", "pvinit-envelope@2"),
    ],
)
def test_bad_field_is_named_in_the_error(field: str, value: object) -> None:
    with pytest.raises(InvalidStateError) as caught:
        Envelope.from_dict(_bad(field, value), source="trails/3/envelope.json")
    assert caught.value.where is not None
    assert caught.value.where.startswith(f"trails/3/envelope.json:{field}")


def test_missing_fields_are_listed() -> None:
    data = make_envelope().to_dict()
    del data["expires"]
    with pytest.raises(InvalidStateError, match="missing fields \\['expires'\\]"):
        Envelope.from_dict(data)


def test_duplicate_json_keys_are_refused() -> None:
    text = make_envelope().to_json().decode()
    text = text.replace('"revision":3', '"revision":3,"revision":9')
    with pytest.raises(InvalidJSONError, match="duplicate key"):
        Envelope.from_json(text.encode(), source="env.json")


def test_constructor_validates_too() -> None:
    with pytest.raises(InvalidStateError, match="revision"):
        record.replace(make_envelope(), revision=-1)


@pytest.mark.parametrize(
    "text",
    ["2024-02-29T00:00:00Z", "2000-02-29T23:59:59Z", "1999-12-31T00:00:00Z",
     "0001-01-01T00:00:00Z"],
)
def test_check_time_accepts_real_times_as_datetime_does(text: str) -> None:
    assert check_time(text, where="w") == text
    expected = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert parse_time(text, where="w") == expected


@pytest.mark.parametrize(
    "text",
    ["2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-04-31T00:00:00Z",
     "2024-01-01T24:00:00Z", "2024-01-01T00:60:00Z", "2024-01-01T00:00:60Z", "0000-01-01T00:00:00Z",
     "2024-00-10T00:00:00Z", "2024-01-00T00:00:00Z"],
)
def test_check_time_refuses_what_datetime_refuses(text: str) -> None:
    with pytest.raises(InvalidStateError, match="not a valid time") as caught:
        check_time(text, where="envelope:created")
    assert caught.value.where == "envelope:created"
    with pytest.raises(ValueError):
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def test_check_time_refuses_other_shapes() -> None:
    for text in ("2024-01-01 00:00:00Z", "2024-01-01T00:00:00+00:00", 20240101, None):
        with pytest.raises(InvalidStateError, match="like 2024-05-01T12:00:00Z"):
            check_time(text, where="w")

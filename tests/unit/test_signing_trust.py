from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pvinit import record
from pvinit.errors import InvalidJSONError, KeyFormatError, TrustRejectedError
from pvinit.signing.envelope import Envelope, Signature
from pvinit.signing.keys import SigningKey
from pvinit.signing.trust import (
    TrustPolicy,
    check_envelope,
    load_trust,
    rotate_trust,
    sign_envelope,
    sign_trust,
    verify_signatures,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
STATE = b'{"#spec":"pvinit-state@1"}'
K1, K2, K3, OUTSIDER = (SigningKey.generate() for _ in range(4))


def policy(*keys: SigningKey, threshold: int = 1, version: int = 1) -> TrustPolicy:
    return TrustPolicy.from_keys(
        [(k.public, f"key{i}") for i, k in enumerate(keys)], threshold=threshold, version=version
    )


def envelope(revision: int = 5, expires: datetime | None = None) -> Envelope:
    return Envelope.create(
        revision=revision, parent=None, state_bytes=STATE, sizes={}, created=NOW,
        expires=expires, message="release",
    )


def signed(*keys: SigningKey, revision: int = 5, expires: datetime | None = None) -> Envelope:
    env = envelope(revision, expires)
    for key in keys:
        env = sign_envelope(env, key)
    return env


def test_sign_then_verify_returns_the_signing_keyids() -> None:
    env = signed(K1, K2)
    assert set(verify_signatures(env, policy(K1, K2, threshold=2))) == {K1.keyid, K2.keyid}


def test_signature_survives_a_json_round_trip() -> None:
    env = Envelope.from_json(signed(K1).to_json())
    assert verify_signatures(env, policy(K1)) == (K1.keyid,)


def test_signing_again_with_the_same_key_replaces_its_signature() -> None:
    env = sign_envelope(signed(K1), K1)
    assert [s.keyid for s in env.signatures] == [K1.keyid]


def _rejected(env: Envelope, trust: TrustPolicy) -> TrustRejectedError:
    with pytest.raises(TrustRejectedError) as caught:
        verify_signatures(env, trust)
    return caught.value


def test_unsigned_envelope_is_rejected() -> None:
    error = _rejected(envelope(), policy(K1))
    assert error.reason == "unsigned"
    assert "no signatures" in str(error)


def test_message_tampered_after_signing_is_an_invalid_signature_by_that_key() -> None:
    env = record.replace(signed(K1), message="evil")
    error = _rejected(env, policy(K1))
    assert error.reason == "bad-signature"
    assert K1.keyid in str(error)


def test_state_digest_tampered_after_signing_is_rejected() -> None:
    env = record.replace(signed(K1), state="00" * 32)
    assert _rejected(env, policy(K1)).reason == "bad-signature"


def test_signature_made_by_a_wrong_key_under_a_trusted_keyid_is_rejected() -> None:
    forged = Signature(keyid=K1.keyid, sig=OUTSIDER.sign(envelope().signed_bytes()).hex())
    env = record.replace(envelope(), signatures=(forged,))
    error = _rejected(env, policy(K1))
    assert error.reason == "bad-signature"
    assert K1.keyid in str(error)


def test_signature_by_an_unknown_key_is_rejected_naming_it() -> None:
    error = _rejected(signed(OUTSIDER), policy(K1))
    assert error.reason == "unknown-key"
    assert OUTSIDER.keyid in str(error)


def test_unknown_extra_signature_is_ignored_when_threshold_is_met() -> None:
    assert verify_signatures(signed(K1, OUTSIDER), policy(K1)) == (K1.keyid,)


def test_below_threshold_says_how_many_of_how_many() -> None:
    error = _rejected(signed(K1), policy(K1, K2, K3, threshold=2))
    assert error.reason == "threshold"
    assert "only 1 of the 2 needed" in str(error)


def test_duplicate_signature_by_the_same_key_counts_once() -> None:
    env = signed(K1)
    doubled = record.replace(env, signatures=env.signatures * 2)
    error = _rejected(doubled, policy(K1, K2, threshold=2))
    assert error.reason == "threshold"
    assert "only 1 of the 2" in str(error)


def test_check_envelope_accepts_a_fresh_newer_matching_revision() -> None:
    env = signed(K1, expires=NOW + timedelta(days=1))
    check_envelope(env, policy(K1), now=NOW, last_committed=4, state_digest=env.state)


def test_expired_envelope_is_rejected() -> None:
    env = signed(K1, expires=NOW + timedelta(hours=1))
    with pytest.raises(TrustRejectedError, match="expired at 2024-05-01T13:00:00Z") as caught:
        check_envelope(env, policy(K1), now=NOW + timedelta(hours=2), last_committed=None)
    assert caught.value.reason == "expired"


@pytest.mark.parametrize("committed", [5, 7])
def test_replayed_or_downgraded_revision_is_rejected(committed: int) -> None:
    with pytest.raises(TrustRejectedError) as caught:
        check_envelope(signed(K1), policy(K1), now=NOW, last_committed=committed)
    assert caught.value.reason == "replay"
    assert f"revision 5 is not newer than committed {committed}" in str(caught.value)


def test_state_that_does_not_match_the_envelope_is_rejected() -> None:
    with pytest.raises(TrustRejectedError) as caught:
        check_envelope(signed(K1), policy(K1), now=NOW, last_committed=None,
                       state_digest="ee" * 32)
    assert caught.value.reason == "state-mismatch"
    assert "ee" * 32 in str(caught.value)


def test_signatures_are_checked_before_expiry() -> None:
    env = record.replace(signed(K1, expires=NOW + timedelta(hours=1)), message="evil")
    with pytest.raises(TrustRejectedError) as caught:
        check_envelope(env, policy(K1), now=NOW + timedelta(days=9), last_committed=None)
    assert caught.value.reason == "bad-signature"


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="aware"):
        check_envelope(signed(K1), policy(K1), now=datetime(2024, 1, 1), last_committed=None)


# -- trust file ---------------------------------------------------------------


def test_trust_file_round_trips(tmp_path: Path) -> None:
    trust = policy(K1, K2, threshold=2, version=3)
    path = tmp_path / "trust.json"
    path.write_bytes(trust.to_json())
    assert load_trust(path) == trust


def _trust_dict() -> dict[str, object]:
    return policy(K1, K2, threshold=1).to_dict()


def _load(tmp_path: Path, data: object) -> KeyFormatError:
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(data))
    with pytest.raises(KeyFormatError) as caught:
        load_trust(path)
    assert caught.value.where is not None
    assert caught.value.where.startswith(str(path))
    return caught.value


def test_trust_keyid_that_does_not_match_its_public_key_is_named(tmp_path: Path) -> None:
    data = _trust_dict()
    keys = data["keys"]
    assert isinstance(keys, dict)
    keys[K1.keyid]["public"] = K3.public.public_hex
    error = _load(tmp_path, data)
    assert "does not match" in error.message
    assert K1.keyid in str(error.where)


def test_trust_threshold_above_key_count_is_refused(tmp_path: Path) -> None:
    data = _trust_dict()
    data["threshold"] = 3
    error = _load(tmp_path, data)
    assert str(error.where).endswith(":threshold")


@pytest.mark.parametrize(
    ("field", "value"),
    [("threshold", 0), ("version", "1"), ("#spec", "other"), ("keys", [])],
)
def test_trust_bad_fields_are_named(tmp_path: Path, field: str, value: object) -> None:
    data = _trust_dict()
    data[field] = value
    assert field in str(_load(tmp_path, data).where)


def test_trust_malformed_public_hex_is_named(tmp_path: Path) -> None:
    data = _trust_dict()
    keys = data["keys"]
    assert isinstance(keys, dict)
    keys[K2.keyid]["public"] = "XYZ"
    error = _load(tmp_path, data)
    assert str(error.where).endswith(f"keys.{K2.keyid}.public")


def test_trust_unknown_fields_are_refused(tmp_path: Path) -> None:
    data = _trust_dict()
    data["allow_downgrade"] = True
    assert "allow_downgrade" in _load(tmp_path, data).message


def test_trust_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "trust.json"
    path.write_text("{not json")
    with pytest.raises(InvalidJSONError) as caught:
        load_trust(path)
    assert caught.value.where == str(path)


# -- rotation -----------------------------------------------------------------


def test_rotation_signed_by_current_and_new_thresholds_is_accepted() -> None:
    current = policy(K1, K2, threshold=2, version=1)
    new = policy(K2, K3, threshold=1, version=2)
    data = new.to_json()
    sigs = [sign_trust(data, K1), sign_trust(data, K2)]
    assert rotate_trust(current, data, sigs) == new


def test_rotation_below_current_threshold_is_rejected() -> None:
    current = policy(K1, K2, threshold=2, version=1)
    new = policy(K3, version=2)
    data = new.to_json()
    with pytest.raises(TrustRejectedError) as caught:
        rotate_trust(current, data, [sign_trust(data, K1), sign_trust(data, K3)])
    assert caught.value.reason == "threshold"
    assert "current keys" in str(caught.value)


def test_rotation_not_signed_by_the_new_keys_is_rejected() -> None:
    current = policy(K1, version=1)
    new = policy(K3, version=2)
    data = new.to_json()
    with pytest.raises(TrustRejectedError) as caught:
        rotate_trust(current, data, [sign_trust(data, K1)])
    assert "new keys" in str(caught.value)


def test_rotation_to_an_older_or_equal_version_is_a_replay() -> None:
    current = policy(K1, version=4)
    new = policy(K1, version=4)
    data = new.to_json()
    with pytest.raises(TrustRejectedError) as caught:
        rotate_trust(current, data, [sign_trust(data, K1)])
    assert caught.value.reason == "replay"


def test_rotation_bytes_must_be_canonical() -> None:
    current = policy(K1, version=1)
    data = json.dumps(policy(K1, version=2).to_dict(), indent=1).encode()
    with pytest.raises(KeyFormatError, match="canonical"):
        rotate_trust(current, data, [sign_trust(data, K1)])


def test_rotation_signature_does_not_verify_an_envelope() -> None:
    # Domain check: a trust signature is over different bytes than any envelope.
    env = envelope()
    sig = sign_trust(policy(K1, version=2).to_json(), K1)
    with pytest.raises(TrustRejectedError):
        verify_signatures(record.replace(env, signatures=(sig,)), policy(K1))

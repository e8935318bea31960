"""GRUB environment blocks: layout, escaping, corruption and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvinit import durable
from pvinit.boot.grub import BLOCK_SIZE, SIGNATURE, GrubEnv, decode_block, encode_block
from pvinit.boot.uboot import decode_image, encode_image
from pvinit.errors import BadInputError, NoSpaceError


def test_block_is_signature_then_sorted_lines_then_hash_padding() -> None:
    block = encode_block({"pv_try": "2", "pv_rev": "1"})
    assert len(block) == BLOCK_SIZE
    body = SIGNATURE + b"pv_rev=1\npv_try=2\n"
    assert block.startswith(body)
    assert set(block[len(body) :]) == {ord("#")}


def test_backslashes_are_escaped_like_grub_does() -> None:
    block = encode_block({"k": "a\\b"})
    assert b"k=a\\\\b\n" in block
    assert decode_block(block) == ({"k": "a\\b"}, None)


def test_comments_and_lines_without_equals_are_ignored() -> None:
    text = SIGNATURE + b"# WARNING: comment\nk=v\nnoeq\n=x\n"
    block = text + b"#" * (BLOCK_SIZE - len(text))
    assert decode_block(block) == ({"k": "v"}, None)


@pytest.mark.parametrize(
    ("block", "fault"),
    [
        (b"#" * BLOCK_SIZE, "signature"),
        (SIGNATURE + b"k=v\n", "bytes"),
    ],
)
def test_invalid_blocks_read_empty_and_are_reported(block: bytes, fault: str) -> None:
    values, problem = decode_block(block)
    assert values == {}
    assert problem is not None and fault in problem


def test_update_on_a_missing_or_corrupt_block_writes_a_fresh_one(tmp_path: Path) -> None:
    path = tmp_path / "grubenv"
    env = GrubEnv(path)
    assert env.read() == {}
    env.update({"pv_rev": "1"})
    path.write_bytes(b"garbage")
    assert not env.inspect().healthy
    env.update({"pv_try": "2"})
    assert env.read() == {"pv_try": "2"}
    assert env.inspect().healthy


def test_update_sets_and_deletes_in_one_write(tmp_path: Path) -> None:
    env = GrubEnv(tmp_path / "grubenv")
    env.update({"pv_rev": "1", "pv_try": "2", "pv_trying": "2"})
    env.update({"pv_rev": "2", "pv_try": None, "pv_trying": None})
    assert env.read() == {"pv_rev": "2"}


def test_overflow_is_refused_naming_the_key(tmp_path: Path) -> None:
    env = GrubEnv(tmp_path / "grubenv")
    env.update({"pv_rev": "1"})
    before = env.path.read_bytes()
    with pytest.raises(NoSpaceError) as info:
        env.update({"huge": "x" * BLOCK_SIZE})
    assert "huge" in str(info.value)
    assert env.path.read_bytes() == before


@pytest.mark.parametrize("key", ["a=b", "a\nb", "#k", ""])
def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(BadInputError):
        GrubEnv(tmp_path / "grubenv").update({key: "1"})
    assert not (tmp_path / "grubenv").exists()


def test_crash_at_write_leaves_the_old_block(tmp_path: Path) -> None:
    env = GrubEnv(tmp_path / "grubenv")
    env.update({"pv_rev": "1"})
    durable.arm_crash("bootenv.write")
    try:
        with pytest.raises(durable.SimulatedCrash):
            env.update({"pv_rev": "2"})
    finally:
        durable.arm_crash(None)
    assert env.read() == {"pv_rev": "1"}


_text = st.text(
    alphabet=st.characters(blacklist_characters="\0\n\r", blacklist_categories=["Cs"]),
    max_size=12,
)
_keys = _text.filter(lambda k: bool(k) and "=" not in k and not k.startswith("#"))


@given(st.dictionaries(_keys, _text, max_size=5))
def test_any_valid_environment_round_trips_through_both_formats(values: dict[str, str]) -> None:
    assert decode_block(encode_block(values)) == (values, None)
    image = encode_image(values, size=0x1000, redundant=True, flags=3)
    assert decode_image(image, size=0x1000, redundant=True).values == values

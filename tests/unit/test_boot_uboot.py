"""U-Boot environment images: layout, CRC, padding, redundancy and refusals."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from pvinit import durable
from pvinit.boot.uboot import UBootEnv, decode_image, encode_image, newer_copy
from pvinit.errors import BadInputError, IntegrityError, NoSpaceError

SIZE = 0x100


def test_image_is_crc_then_sorted_nul_entries_then_zero_padding() -> None:
    image = encode_image({"b": "2", "a": "1"}, size=SIZE)
    assert len(image) == SIZE
    data = image[4:]
    assert data.startswith(b"a=1\0b=2\0\0")
    assert set(data[len(b"a=1\0b=2\0\0") :]) == {0}
    assert int.from_bytes(image[:4], "little") == zlib.crc32(data)


def test_redundant_image_has_a_flags_byte_after_the_crc() -> None:
    image = encode_image({"a": "1"}, size=SIZE, redundant=True, flags=7)
    assert image[4] == 7
    assert int.from_bytes(image[:4], "little") == zlib.crc32(image[5:])
    assert decode_image(image, size=SIZE, redundant=True).flags == 7


def test_decoding_ignores_any_padding_and_entries_without_equals() -> None:
    data = b"a=1\0junk\0c=x=y\0\0" + b"\xff" * (SIZE - 4 - 16)
    image = zlib.crc32(data).to_bytes(4, "little") + data
    decoded = decode_image(image, size=SIZE)
    assert decoded.values == {"a": "1", "c": "x=y"}


def test_empty_environment_round_trips() -> None:
    assert decode_image(encode_image({}, size=SIZE), size=SIZE).values == {}


@pytest.mark.parametrize(
    ("image", "fault"),
    [
        (b"\0" * SIZE, "bad CRC"),
        (b"\xff" * SIZE, "bad CRC"),
        (b"\0" * 10, "expected"),
    ],
)
def test_corrupt_copies_are_reported_not_raised(image: bytes, fault: str) -> None:
    decoded = decode_image(image, size=SIZE)
    assert not decoded.valid
    assert decoded.problem is not None and fault in decoded.problem


def test_unterminated_data_with_a_good_crc_is_corrupt() -> None:
    data = b"a" * (SIZE - 4)
    image = zlib.crc32(data).to_bytes(4, "little") + data
    assert not decode_image(image, size=SIZE).valid


def test_flags_pick_the_newer_copy_and_wrap_around() -> None:
    assert newer_copy(1, 2) == 1
    assert newer_copy(2, 1) == 0
    assert newer_copy(255, 0) == 1
    assert newer_copy(0, 255) == 0
    assert newer_copy(5, 5) == 0


def test_missing_image_reads_empty_and_update_creates_it(tmp_path: Path) -> None:
    env = UBootEnv(tmp_path / "uenv.img", size=SIZE)
    assert env.read() == {}
    env.update({"pv_rev": "1"})
    assert (tmp_path / "uenv.img").stat().st_size == SIZE
    assert env.inspect().healthy
    assert env.read() == {"pv_rev": "1"}


def test_update_applies_sets_and_deletes_together(tmp_path: Path) -> None:
    env = UBootEnv(tmp_path / "uenv.img", size=SIZE)
    env.update({"pv_rev": "1", "pv_try": "2", "bootcmd": "run pv"})
    env.update({"pv_rev": "2", "pv_try": None, "absent": None})
    assert env.read() == {"pv_rev": "2", "bootcmd": "run pv"}


def test_bad_crc_reads_as_the_default_environment_and_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "uenv.img"
    env = UBootEnv(path, size=SIZE)
    env.update({"pv_rev": "1"})
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0xFF
    path.write_bytes(bytes(raw))
    snapshot = env.inspect()
    assert snapshot.values == {}
    assert any("bad CRC" in p for p in snapshot.problems)
    defaults = UBootEnv(path, size=SIZE, defaults={"bootcmd": "boot"})
    assert defaults.read() == {"bootcmd": "boot"}


def test_update_refuses_to_overwrite_a_corrupt_image_without_defaults(tmp_path: Path) -> None:
    path = tmp_path / "uenv.img"
    path.write_bytes(b"\xff" * SIZE)
    with pytest.raises(IntegrityError) as info:
        UBootEnv(path, size=SIZE).update({"pv_try": "2"})
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"\xff" * SIZE
    UBootEnv(path, size=SIZE, defaults={"bootcmd": "boot"}).update({"pv_try": "2"})
    assert UBootEnv(path, size=SIZE).read() == {"bootcmd": "boot", "pv_try": "2"}


def test_redundant_update_writes_the_older_copy_with_a_higher_counter(tmp_path: Path) -> None:
    env = UBootEnv(tmp_path / "uenv.img", size=SIZE, redundant=True)
    main, spare = env.copies
    env.update({"pv_rev": "1"})
    assert main.read_bytes()[4] == 1 and spare.read_bytes()[4] == 0
    env.update({"pv_rev": "2"})
    assert spare.read_bytes()[4] == 2
    assert decode_image(main.read_bytes(), size=SIZE, redundant=True).values == {"pv_rev": "1"}
    assert env.read() == {"pv_rev": "2"}
    env.update({"pv_rev": "3"})
    assert main.read_bytes()[4] == 3
    assert env.read() == {"pv_rev": "3"}


def test_redundant_torn_write_falls_back_to_the_other_copy(tmp_path: Path) -> None:
    env = UBootEnv(tmp_path / "uenv.img", size=SIZE, redundant=True)
    env.update({"pv_rev": "1"})
    env.update({"pv_rev": "2", "pv_try": "3"})  # lands in the spare copy
    spare = env.copies[1]
    torn = bytearray(spare.read_bytes())
    torn[SIZE // 2 :] = b"\xff" * (SIZE - SIZE // 2)  # power cut halfway through the write
    spare.write_bytes(bytes(torn))
    snapshot = env.inspect()
    assert snapshot.values == {"pv_rev": "1"}
    assert any("bad CRC" in p and str(spare) in p for p in snapshot.problems)
    env.update({"pv_try": "4"})  # the next write repairs the broken copy
    assert env.read() == {"pv_rev": "1", "pv_try": "4"}
    assert env.inspect().healthy


def test_redundant_counter_wraps_from_255_to_0(tmp_path: Path) -> None:
    env = UBootEnv(tmp_path / "uenv.img", size=SIZE, redundant=True)
    main, spare = env.copies
    main.write_bytes(encode_image({"v": "old"}, size=SIZE, redundant=True, flags=254))
    spare.write_bytes(encode_image({"v": "new"}, size=SIZE, redundant=True, flags=255))
    assert env.read() == {"v": "new"}
    env.update({"v": "newer"})
    assert main.read_bytes()[4] == 0
    assert env.read() == {"v": "newer"}


def test_crash_before_rename_leaves_the_old_environment(tmp_path: Path) -> None:
    env = UBootEnv(tmp_path / "uenv.img", size=SIZE)
    env.update({"pv_rev": "1"})
    durable.arm_crash("bootenv.rename")
    try:
        with pytest.raises(durable.SimulatedCrash):
            env.update({"pv_rev": "2", "pv_try": "3"})
    finally:
        durable.arm_crash(None)
    assert env.read() == {"pv_rev": "1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uenv.img"]


def test_overflow_is_refused_naming_the_key_and_changes_nothing(tmp_path: Path) -> None:
    env = UBootEnv(tmp_path / "uenv.img", size=SIZE)
    env.update({"pv_rev": "1"})
    before = env.copies[0].read_bytes()
    with pytest.raises(NoSpaceError) as info:
        env.update({"zbig": "x" * SIZE})
    assert "zbig" in str(info.value)
    assert env.copies[0].read_bytes() == before


def test_exactly_full_environment_fits(tmp_path: Path) -> None:
    capacity = SIZE - 4
    value = "x" * (capacity - len("k=") - 2)  # entry NUL + final NUL
    image = encode_image({"k": value}, size=SIZE)
    assert decode_image(image, size=SIZE).values == {"k": value}
    with pytest.raises(NoSpaceError):
        encode_image({"k": value + "x"}, size=SIZE)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"a=b": "1"}, "a=b"),
        ({"a\nb": "1"}, "a\\nb"),
        ({"a\0b": "1"}, "a\\x00b"),
        ({"": "1"}, "''"),
        ({"k": "x\ny"}, "'k'"),
        ({"k": "x\0y"}, "'k'"),
    ],
)
def test_bad_keys_and_values_are_refused_naming_them(
    tmp_path: Path, changes: dict[str, str], named: str
) -> None:
    env = UBootEnv(tmp_path / "uenv.img", size=SIZE)
    with pytest.raises(BadInputError) as info:
        env.update({"ok": "1", **changes})
    assert named in str(info.value)
    assert not env.copies[0].exists()


def test_non_utf8_bytes_of_other_keys_survive_an_update(tmp_path: Path) -> None:
    path = tmp_path / "uenv.img"
    data = b"name=caf\xe9\0\0"
    data += b"\0" * (SIZE - 4 - len(data))
    path.write_bytes(zlib.crc32(data).to_bytes(4, "little") + data)
    UBootEnv(path, size=SIZE).update({"pv_rev": "1"})
    assert b"name=caf\xe9\0" in path.read_bytes()


def test_size_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError):
        UBootEnv(tmp_path / "u", size=3)


def test_fw_env_config_names_each_copy(tmp_path: Path) -> None:
    env = UBootEnv(tmp_path / "u.img", size=0x4000, redundant=True)
    assert env.fw_env_config() == (
        f"{tmp_path}/u.img 0x0 0x4000\n{tmp_path}/u.img.redundant 0x0 0x4000\n"
    )


def test_redundant_pair_with_a_missing_or_short_copy_is_made_whole(tmp_path: Path) -> None:
    env = UBootEnv(tmp_path / "uenv.img", size=SIZE, redundant=True, lockfile=None)
    main, spare = env.copies
    env.update({"pv_rev": "1"})
    spare.write_bytes(b"\0" * 10)  # truncated: libubootenv could read neither copy
    assert env.read() == {"pv_rev": "1"}
    assert any("expected" in p for p in env.inspect().problems)
    env.update({"pv_rev": "2"})
    assert spare.stat().st_size == SIZE and main.stat().st_size == SIZE
    assert env.inspect().healthy
    assert env.read() == {"pv_rev": "2"}


def test_one_copy_missing_is_reported_but_still_read(tmp_path: Path) -> None:
    env = UBootEnv(tmp_path / "uenv.img", size=SIZE, redundant=True)
    env.update({"pv_rev": "1"})
    env.copies[1].unlink()
    snapshot = env.inspect()
    assert snapshot.values == {"pv_rev": "1"}
    assert snapshot.problems == (f"{env.copies[1]}: missing",)


def test_a_custom_lockfile_is_created_and_used(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "fw.lock"
    lock.parent.mkdir()
    env = UBootEnv(tmp_path / "uenv.img", size=SIZE, lockfile=lock)
    env.update({"pv_rev": "1"})
    assert lock.exists()
    assert env.read() == {"pv_rev": "1"}

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvinit.errors import BundleFormatError
from pvinit.packing import pack, unpack

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(_values)
def test_pack_then_unpack_gives_the_same_value(value: object) -> None:
    assert unpack(pack(value), where="test") == value


def test_str_and_bytes_keep_their_types() -> None:
    assert unpack(pack({"s": "text", "b": b"\x00\xff"}), where="test") == {
        "s": "text",
        "b": b"\x00\xff",
    }


def test_truncated_data_names_where() -> None:
    data = pack({"key": "value" * 10})
    with pytest.raises(BundleFormatError) as caught:
        unpack(data[:-3], where="bundle.pvb header")
    assert caught.value.where == "bundle.pvb header"


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(BundleFormatError, match="not valid msgpack"):
        unpack(pack(1) + b"\x01", where="x")


def test_data_over_max_len_is_refused_before_parsing() -> None:
    with pytest.raises(BundleFormatError, match="larger than the limit"):
        unpack(pack(b"x" * 100), where="x", max_len=50)


def test_declared_length_beyond_the_data_is_refused() -> None:
    # A bin32 header claiming 4 GiB followed by nothing: must not allocate.
    with pytest.raises(BundleFormatError, match="not valid msgpack"):
        unpack(b"\xc6\xff\xff\xff\xff", where="x")


def test_extension_types_are_refused() -> None:
    data = msgpack.packb(msgpack.ExtType(5, b"abc"))
    with pytest.raises(BundleFormatError):
        unpack(data, where="x")


def test_garbage_is_refused() -> None:
    with pytest.raises(BundleFormatError):
        unpack(b"\xc1", where="x")  # 0xc1 is never used by msgpack

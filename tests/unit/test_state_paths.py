"""Revision keys: relative, normalised, and never escaping the revision."""

from __future__ import annotations

import pytest

from pvinit.errors import InvalidPathError
from pvinit.state.paths import check_key, is_valid_key


@pytest.mark.parametrize(
    "key",
    [
        "device.json",
        "bsp/kernel.img",
        "sensor/conf/app.conf",
        "a..b/c",
        ".config/x",
        "capteur-é/root.squashfs",
        "a" * 255,
        "/".join(["a" * 255] * 16),
    ],
)
def test_valid_keys_are_returned_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../etc/passwd", "'..'"),
        ("a/../../b", "'..'"),
        ("a/./b", "'.'"),
        (".", "'.'"),
        ("a//b", "empty path part"),
        ("a/", "ends with '/'"),
        ("a\\b", "backslash"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a\x7fb", "control"),
        (".pv/progress", "reserved"),
        (".pvx", "reserved"),
        ("#spec", "reserved"),
        ("a" * 256, "255"),
        ("/".join(["a" * 255] * 17), "4096"),
        ("a\ud800", "surrogate"),
    ],
)
def test_bad_keys_are_refused_naming_the_key(key: str, fragment: str) -> None:
    with pytest.raises(InvalidPathError) as info:
        check_key(key)
    assert info.value.where == key
    assert fragment in str(info.value)
    assert not is_valid_key(key)


def test_non_text_key_is_refused() -> None:
    with pytest.raises(InvalidPathError, match="must be text"):
        check_key(b"bsp/kernel.img", where="state.json:b'bsp/kernel.img'")


def test_where_overrides_the_location_named() -> None:
    with pytest.raises(InvalidPathError) as info:
        check_key("../x", where="state.json:../x")
    assert info.value.where == "state.json:../x"

"""GRUB environment blocks, as ``grub-editenv`` and GRUB's ``load_env`` read them.

A block is exactly 1024 bytes: the signature line ``# GRUB Environment
Block\\n``, then ``key=value\\n`` lines, then ``#`` up to the end.  Lines
starting with ``#`` are comments and lines without ``=`` are ignored.  In a
value, GRUB escapes a backslash as ``\\\\`` (and a newline as backslash
newline, which pvinit refuses to write anyway); pvinit escapes and unescapes
the same way so ``grub-editenv list`` shows exactly what pvinit wrote.

A block with a wrong signature or size is what GRUB treats as no
environment: it reads as empty and :meth:`GrubEnv.inspect` reports it; an
update then writes a fresh block.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pvinit import durable
from pvinit.boot.env import POINT_NAME, BootEnv, EnvSnapshot, apply_changes, sorted_items
from pvinit.errors import NoSpaceError

BLOCK_SIZE = 1024
SIGNATURE = b"# GRUB Environment Block\n"
ENCODING = "utf-8"
ERRORS = "surrogateescape"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\")


def _unescape(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        out.append(next(chars, "") if char == "\\" else char)
    return "".join(out)


def encode_block(values: Mapping[str, str]) -> bytes:
    """The 1024-byte block holding ``values``; NoSpaceError names the key that overflows."""
    block = bytearray(SIGNATURE)
    for key, value in sorted_items(values):
        block += f"{key}={_escape(value)}\n".encode(ENCODING, ERRORS)
        if len(block) > BLOCK_SIZE:
            raise NoSpaceError(
                f"GRUB environment block ({BLOCK_SIZE} bytes) is full at this key",
                where=f"key {key!r}",
            )
    return bytes(block) + b"#" * (BLOCK_SIZE - len(block))


def decode_block(block: bytes) -> tuple[dict[str, str], str | None]:
    """The values of a block and, if it is not a valid block, why (values are then empty)."""
    if len(block) != BLOCK_SIZE:
        return {}, f"block is {len(block)} bytes, expected {BLOCK_SIZE}"
    if not block.startswith(SIGNATURE):
        return {}, "no GRUB environment block signature"
    values: dict[str, str] = {}
    text = block[len(SIGNATURE) :].decode(ENCODING, ERRORS)
    lines = text.split("\n")
    # The last piece has no newline: it is padding (or a torn line), never a variable.
    for line in lines[:-1]:
        if line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep and key:
            values[key] = _unescape(value)
    return values, None


class GrubEnv(BootEnv):
    """A GRUB environment block file (``/boot/grub/grubenv``)."""

    path: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"GrubEnv({str(self.path)!r})"

    def inspect(self) -> EnvSnapshot:
        try:
            block = self.path.read_bytes()
        except FileNotFoundError:
            return EnvSnapshot()
        values, problem = decode_block(block)
        return EnvSnapshot(values, () if problem is None else (f"{self.path}: {problem}",))

    def update(self, changes: Mapping[str, str | None]) -> None:
        values = apply_changes(self.read(), changes)
        block = encode_block(values)
        durable.makedirs(self.path.parent)
        durable.write_file(self.path, block, name=POINT_NAME)

"""pvinit's boot environments against the real tools that bootloader setups use.

``fw_printenv``/``fw_setenv`` (Debian's libubootenv-tool) and ``mkenvimage``
(u-boot-tools) for U-Boot images, ``grub-editenv`` (grub-common) for GRUB
blocks: each tool reads what pvinit wrote and pvinit reads what each tool
wrote, including a whole try/commit/rollback cycle where the bootloader's
half is played by the tools and pvinit's half by pvinit.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from pvinit.boot import GrubEnv, UBootEnv
from pvinit.boot.env import BootEnv
from pvinit.boot.rule import abandon_try, begin_try, choose_boot, commit
from pvinit.boot.uboot import decode_image
from tests.conftest import need_tool

SIZE = 0x4000


def run(*argv: str | Path) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, f"{argv}: rc={done.returncode}: {done.stderr}"
    return done.stdout


def parse_listing(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


class UBootTools:
    """fw_printenv/fw_setenv over a config naming pvinit's image(s)."""

    def __init__(self, env: UBootEnv, tmp: Path) -> None:
        self.printenv = need_tool("fw_printenv")
        self.setenv = need_tool("fw_setenv")
        self.config = tmp / "fw_env.config"
        self.config.write_text(env.fw_env_config())
        self.script = tmp / "fw_setenv.script"

    def read(self) -> dict[str, str]:
        return parse_listing(run(self.printenv, "-c", self.config))

    def update(self, changes: Mapping[str, str | None]) -> None:
        """All changes in one fw_setenv run (its script: key=value, empty value deletes)."""
        lines = [f"{k}={'' if v is None else v}\n" for k, v in changes.items()]
        self.script.write_text("".join(lines))
        run(self.setenv, "-c", self.config, "-s", self.script)


class GrubTools:
    """grub-editenv over pvinit's block."""

    def __init__(self, env: GrubEnv) -> None:
        self.editenv = need_tool("grub-editenv")
        self.path = env.path

    def read(self) -> dict[str, str]:
        return parse_listing(run(self.editenv, self.path, "list"))

    def update(self, changes: Mapping[str, str | None]) -> None:
        sets = [f"{k}={v}" for k, v in changes.items() if v is not None]
        unsets = [k for k, v in changes.items() if v is None]
        if sets:
            run(self.editenv, self.path, "set", *sets)
        if unsets:
            run(self.editenv, self.path, "unset", *unsets)


Tools = UBootTools | GrubTools


def make_uboot(tmp: Path, redundant: bool) -> tuple[BootEnv, Tools]:
    env = UBootEnv(tmp / "uboot.env", size=SIZE, redundant=redundant)
    return env, UBootTools(env, tmp)


def make_grub(tmp: Path, redundant: bool) -> tuple[BootEnv, Tools]:
    del redundant
    env = GrubEnv(tmp / "grubenv")
    return env, GrubTools(env)


BACKENDS: list[tuple[str, Callable[[Path, bool], tuple[BootEnv, Tools]], bool]] = [
    ("uboot", make_uboot, False),
    ("uboot-redundant", make_uboot, True),
    ("grub", make_grub, False),
]


@pytest.fixture(params=BACKENDS, ids=[b[0] for b in BACKENDS])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[BootEnv, Tools]:
    _, make, redundant = request.param
    made: tuple[BootEnv, Tools] = make(tmp_path, redundant)
    return made


VALUES = {
    "pv_rev": "7",
    "bootargs": "console=ttyS0,115200 root=/dev/vda rw",
    "with_equals": "a=b=c",
    "with_backslash": "C:\\path\\x",
    "unicode": "grüße",
}


def test_tools_read_what_pvinit_wrote(pair: tuple[BootEnv, Tools]) -> None:
    env, tools = pair
    env.update(VALUES)
    assert tools.read() == VALUES
    env.update({"with_equals": None, "pv_try": "8"})
    expected = {k: v for k, v in VALUES.items() if k != "with_equals"} | {"pv_try": "8"}
    assert tools.read() == expected


def test_pvinit_reads_what_the_tools_wrote(pair: tuple[BootEnv, Tools]) -> None:
    env, tools = pair
    env.update({"pv_rev": "1"})  # the tools need an existing, valid environment
    tools.update(VALUES)
    assert env.read() == VALUES
    assert env.inspect().healthy
    tools.update({"bootargs": None, "pv_rev": "8"})
    expected = {k: v for k, v in VALUES.items() if k != "bootargs"} | {"pv_rev": "8"}
    assert env.read() == expected


def test_writes_alternate_between_pvinit_and_the_tools(pair: tuple[BootEnv, Tools]) -> None:
    env, tools = pair
    expected: dict[str, str] = {}
    for step in range(6):
        change = {f"k{step}": str(step), f"k{step - 2}": None}
        (env if step % 2 == 0 else tools).update(change)
        expected.pop(f"k{step - 2}", None)
        expected[f"k{step}"] = str(step)
        assert env.read() == expected
        assert tools.read() == expected


def bootloader_boot(tools: Tools) -> int | None:
    """One boot as the bootloader does it: read, apply the rule, write its marker."""
    choice = choose_boot(tools.read())
    if choice.changes:
        tools.update(choice.changes)
    return choice.revision


def test_try_commit_and_rollback_cycle(pair: tuple[BootEnv, Tools]) -> None:
    env, tools = pair
    env.update(commit(1) | {"bootcmd": "run pvboot"})
    assert bootloader_boot(tools) == 1

    # revision 2 is tried once and commits
    env.update(begin_try(2))
    assert bootloader_boot(tools) == 2
    assert env.read()["pv_trying"] == "2"
    env.update(commit(2))
    assert env.read() == {"pv_rev": "2", "bootcmd": "run pvboot"}
    assert bootloader_boot(tools) == 2

    # revision 3 is tried once, the device resets before commit: rollback to 2
    env.update(begin_try(3))
    assert bootloader_boot(tools) == 3
    assert bootloader_boot(tools) == 2
    assert bootloader_boot(tools) == 2  # never tried again
    seen = choose_boot(env.read())
    assert seen.rollback and env.read()["pv_try"] == "3"
    env.update(abandon_try())
    assert tools.read() == {"pv_rev": "2", "bootcmd": "run pvboot"}

    # a try started by the tools (a technician with fw_setenv / grub-editenv)
    tools.update(begin_try(4))
    choice = choose_boot(env.read())
    assert choice.trying and choice.revision == 4
    env.update(choice.changes)  # pvinit's launcher playing the bootloader
    assert tools.read()["pv_trying"] == "4"
    tools.update(commit(4))
    assert choose_boot(env.read()).revision == 4
    assert env.read() == {"pv_rev": "4", "bootcmd": "run pvboot"}


def test_mkenvimage_images_read_back(tmp_path: Path) -> None:
    mkenvimage = need_tool("mkenvimage")
    source = tmp_path / "env.txt"
    source.write_text("bootcmd=run pvboot\npv_rev=3\n# comment\n\nargs=a=b\n")
    for redundant in (False, True):
        image = tmp_path / f"mk-{redundant}.img"
        argv: list[str | Path] = [mkenvimage, "-s", hex(SIZE), "-o", image, source]
        if redundant:
            argv.insert(1, "-r")
        run(*argv)
        decoded = decode_image(image.read_bytes(), size=SIZE, redundant=redundant)
        assert decoded.values == {"bootcmd": "run pvboot", "pv_rev": "3", "args": "a=b"}


def test_mkenvimage_image_is_updated_by_pvinit_and_read_by_fw_printenv(tmp_path: Path) -> None:
    mkenvimage = need_tool("mkenvimage")
    source = tmp_path / "env.txt"
    source.write_text("bootcmd=run pvboot\npv_rev=3\n")
    env = UBootEnv(tmp_path / "uboot.env", size=SIZE)
    run(mkenvimage, "-s", hex(SIZE), "-o", env.path, source)
    env.update(begin_try(4))
    tools = UBootTools(env, tmp_path)
    assert tools.read() == {"bootcmd": "run pvboot", "pv_rev": "3", "pv_try": "4"}


def test_fw_printenv_falls_back_like_pvinit_on_a_torn_redundant_copy(tmp_path: Path) -> None:
    env = UBootEnv(tmp_path / "uboot.env", size=SIZE, redundant=True)
    tools = UBootTools(env, tmp_path)
    env.update({"pv_rev": "1"})
    env.update({"pv_rev": "2"})
    newer = env.copies[1]
    torn = bytearray(newer.read_bytes())
    torn[SIZE // 2 :] = b"\xff" * (SIZE - SIZE // 2)
    newer.write_bytes(bytes(torn))
    assert env.read() == tools.read() == {"pv_rev": "1"}
    assert not env.inspect().healthy
    tools.update({"pv_try": "3"})  # fw_setenv writes over the broken copy
    assert env.read() == {"pv_rev": "1", "pv_try": "3"}
    assert env.inspect().healthy


def test_fw_printenv_refuses_an_image_pvinit_reports_as_corrupt(tmp_path: Path) -> None:
    env = UBootEnv(tmp_path / "uboot.env", size=SIZE)
    tools = UBootTools(env, tmp_path)
    env.update({"pv_rev": "1"})
    raw = bytearray(env.path.read_bytes())
    raw[20] ^= 0x01
    env.path.write_bytes(bytes(raw))
    done = subprocess.run(
        [tools.printenv, "-c", str(tools.config)], capture_output=True, check=False, timeout=60
    )
    assert done.returncode != 0
    assert env.read() == {}
    assert any("bad CRC" in p for p in env.inspect().problems)


def test_grub_editenv_created_block_keeps_working_after_pvinit_writes(tmp_path: Path) -> None:
    editenv = need_tool("grub-editenv")
    path = tmp_path / "grubenv"
    run(editenv, path, "create")
    env = GrubEnv(path)
    assert env.read() == {}
    assert env.inspect().healthy
    env.update(commit(1))
    assert parse_listing(run(editenv, path, "list")) == {"pv_rev": "1"}
    assert path.stat().st_size == 1024

"""The pure parts of the container layer: spec validation, liblxc config, liblxc log reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvinit.containers import lxclog
from pvinit.containers.lxcconf import (
    host_has_apparmor,
    init_cmd,
    lxc_config,
    mount_entry,
    render_config,
)
from pvinit.containers.spec import BindMount, ContainerSpec, RuntimeStatus
from pvinit.errors import BadInputError


def make_spec(**changes: object) -> ContainerSpec:
    values: dict[str, object] = {
        "name": "sensor",
        "rootfs": Path("/run/pvinit/roots/sensor"),
        "init": ("/bin/sensor", "--rate", "5"),
        "console_log": Path("/storage/logs/3/sensor/console.log"),
    }
    values.update(changes)
    return ContainerSpec(**values)  # type: ignore[arg-type]


def values_of(lines: list[tuple[str, str]], key: str) -> list[str]:
    return [value for k, value in lines if k == key]


def test_generated_config_has_the_documented_defaults() -> None:
    lines = lxc_config(make_spec())
    config = dict(lines)
    assert config["lxc.rootfs.path"] == "dir:/run/pvinit/roots/sensor"
    assert config["lxc.uts.name"] == "sensor"
    assert config["lxc.net.0.type"] == "empty"
    assert config["lxc.mount.auto"] == "proc:mixed sys:ro cgroup:mixed"
    assert config["lxc.autodev"] == "1"
    assert config["lxc.init.cmd"] == "/bin/sensor --rate 5"
    assert config["lxc.signal.halt"] == "SIGTERM"
    assert config["lxc.console.logfile"] == "/storage/logs/3/sensor/console.log"
    assert config["lxc.console.size"] == str(1 << 20)
    assert config["lxc.log.file"] == "/storage/logs/3/sensor/lxc.log"
    assert "lxc.apparmor.profile" not in config
    assert values_of(lines, "lxc.environment") == []


def test_apparmor_host_gets_an_unconfined_profile() -> None:
    assert dict(lxc_config(make_spec(), apparmor=True))["lxc.apparmor.profile"] == "unconfined"


def test_apparmor_is_detected_from_the_module_parameter(tmp_path: Path) -> None:
    enabled, securityfs = tmp_path / "enabled", tmp_path / "securityfs"
    assert not host_has_apparmor((enabled, securityfs))
    securityfs.mkdir()
    assert host_has_apparmor((enabled, securityfs))
    enabled.write_text("N\n")
    assert not host_has_apparmor((enabled, securityfs))
    enabled.write_text("Y\n")
    assert host_has_apparmor((enabled, securityfs))


def test_environment_is_one_key_per_variable_and_notify_socket_comes_last() -> None:
    lines = lxc_config(make_spec(env={"RATE": "5", "A": "x y"}, notify_dir=Path("/run/n/sensor")))
    assert values_of(lines, "lxc.environment") == [
        "A=x y",
        "RATE=5",
        "NOTIFY_SOCKET=/run/pvinit/notify",
    ]
    assert "/run/n/sensor run/pvinit none bind,create=dir 0 0" in values_of(
        lines, "lxc.mount.entry"
    )


def test_extra_keys_come_last_so_they_override() -> None:
    lines = lxc_config(
        make_spec(lxc_keys={"lxc.cgroup2.memory.max": "64M", "lxc.uts.name": "other"})
    )
    assert lines[-2:] == [("lxc.cgroup2.memory.max", "64M"), ("lxc.uts.name", "other")]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cgroup.memory", "1"),
        ("lxc.", "1"),
        ("lxc.a b", "1"),
        ("lxc.init.cmd", "/bin/sh\nlxc.rootfs.path = /"),
    ],
)
def test_bad_extra_keys_are_refused_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(BadInputError) as caught:
        lxc_config(make_spec(lxc_keys={key: value}))
    assert caught.value.where is not None
    assert caught.value.where.startswith("sensor: lxc")
    assert key in caught.value.where


@pytest.mark.parametrize("arg", ["two words", "it's", 'say "hi"', "a\\b", "", "tab\there", "nl\n"])
def test_init_arguments_liblxc_cannot_carry_are_refused(arg: str) -> None:
    with pytest.raises(BadInputError) as caught:
        init_cmd(("/bin/app", arg), where="sensor")
    assert caught.value.where == "sensor: init"
    assert caught.value.hint is not None


def test_plain_init_arguments_pass_through_unquoted() -> None:
    assert init_cmd(("/bin/app", "--x=1;2", "a,b"), where="s") == "/bin/app --x=1;2 a,b"


def test_bind_mount_entries_escape_blanks_and_carry_flags() -> None:
    mount = BindMount(Path("/data/my vol"), "/mnt/in put", readonly=True, optional=True)
    assert (
        mount_entry(mount) == "/data/my\\040vol mnt/in\\040put none bind,create=dir,ro,optional 0 0"
    )
    assert "create=file" in mount_entry(BindMount(Path("/etc/hosts"), "/etc/hosts", kind="file"))


def test_environment_values_liblxc_would_trim_are_refused() -> None:
    with pytest.raises(BadInputError) as caught:
        lxc_config(make_spec(env={"PAD": " x"}))
    assert caught.value.where == "sensor: env PAD"


def test_rendered_config_is_one_line_per_key() -> None:
    assert render_config([("lxc.a", "1"), ("lxc.b", "x y")]) == "lxc.a = 1\nlxc.b = x y\n"


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"name": "../etc"}, "'../etc'"),
        ({"name": ""}, "''"),
        ({"init": ()}, "sensor: init"),
        ({"init": ("bin/relative",)}, "sensor: init"),
        ({"rootfs": Path("relative")}, "sensor"),
        ({"env": {"1BAD": "x"}}, "sensor: env '1BAD'"),
        ({"env": {"OK": "line\nbreak"}}, "sensor: env OK"),
        ({"console_log": Path("/logs/lxc.log")}, "sensor"),
        ({"log_size_bytes": 10}, "sensor"),
        ({"cwd": "relative"}, "sensor: cwd"),
        ({"cwd": "/a\nb"}, "sensor: cwd"),
        ({"cwd": "/app "}, "sensor: cwd"),
        ({"uid": 1000}, "sensor"),
        ({"gid": 1000}, "sensor"),
        ({"groups": (5,)}, "sensor"),
        ({"uid": -1, "gid": 0}, "sensor: uid"),
        ({"uid": 0, "gid": 2**32 - 1}, "sensor: gid"),
        ({"uid": True, "gid": 0}, "sensor: uid"),
        ({"uid": 1, "gid": 1, "groups": ("5",)}, "sensor: groups"),
    ],
)
def test_bad_specs_are_refused_naming_what_is_wrong(changes: dict[str, object], where: str) -> None:
    with pytest.raises(BadInputError) as caught:
        make_spec(**changes)
    assert caught.value.where == where


@pytest.mark.parametrize("target", ["relative", "/", "/a/../../etc"])
def test_bind_mount_targets_must_stay_inside_the_container(target: str) -> None:
    with pytest.raises(BadInputError):
        BindMount(Path("/src"), target)


def test_process_keys_are_absent_unless_the_spec_sets_them() -> None:
    config = dict(lxc_config(make_spec()))
    assert not {"lxc.init.cwd", "lxc.init.uid", "lxc.init.gid", "lxc.init.groups"} & set(config)


def test_cwd_and_numeric_ids_become_init_keys_before_extra_keys() -> None:
    spec = make_spec(cwd="/data/my app", uid=1000, gid=100, groups=(5, 20),
                     lxc_keys={"lxc.init.gid": "7"})  # fmt: skip
    lines = lxc_config(spec)
    config = dict(lines)
    assert config["lxc.init.cwd"] == "/data/my app"
    assert config["lxc.init.uid"] == "1000"
    assert config["lxc.init.groups"] == "5,20"
    assert values_of(lines, "lxc.init.gid") == ["100", "7"]  # run.json's lxc key wins (last)
    no_groups = dict(lxc_config(make_spec(uid=0, gid=0)))
    assert (no_groups["lxc.init.uid"], no_groups["lxc.init.gid"]) == ("0", "0")
    assert "lxc.init.groups" not in no_groups


def test_spec_round_trips_through_dict() -> None:
    spec = make_spec(
        cwd="/w",
        uid=1,
        gid=2,
        groups=(3,),
        env={"A": "1"},
        lxc_keys={"lxc.cgroup2.memory.max": "64M"},
        mounts=(BindMount(Path("/d"), "/data", readonly=True),),
        notify_dir=Path("/run/n"),
    )
    assert ContainerSpec.from_dict(spec.to_dict()) == spec


def test_spec_from_dict_names_a_missing_field() -> None:
    with pytest.raises(BadInputError, match="'init'"):
        ContainerSpec.from_dict({"name": "a", "rootfs": "/r", "console_log": "/l/c.log"})


def test_runtime_status_values_are_their_names() -> None:
    assert [s.value for s in RuntimeStatus] == [
        "STOPPED",
        "STARTING",
        "RUNNING",
        "READY",
        "EXITED",
        "FAILED",
    ]


LOG = """\
lxc t1 20261122112245.735 NOTICE   start - ../src/lxc/start.c:start:2194 - Exec'ing "/bin/nope"
lxc t1 20261122112245.735 ERROR    start - ../src/lxc/start.c:start:2197 - No such file or directory - Failed to exec "/bin/nope"
lxc t1 20261122112245.735 ERROR    sync - ../src/lxc/sync.c:sync_wait:34 - An error occurred in another process (expected sequence number 7)
lxc t1 20261122112245.736 ERROR    start - ../src/lxc/start.c:__lxc_start:2107 - Failed to spawn container "t1"
"""  # noqa: E501 - real liblxc lines


def test_first_real_error_is_the_reason_not_the_fallout() -> None:
    assert lxclog.first_error(LOG) == 'No such file or directory - Failed to exec "/bin/nope"'


def test_fallout_is_the_reason_only_when_nothing_better_was_logged() -> None:
    fallout_only = LOG.splitlines()[3]
    assert lxclog.first_error(fallout_only) == 'Failed to spawn container "t1"'
    assert lxclog.first_error("garbage\n") is None


def test_exit_status_is_read_for_the_right_init() -> None:
    text = (
        "lxc a 1.2 INFO     error - ../src/lxc/error.c:lxc_error_set_and_log:31 - "
        "Child <10> ended on error (7)\n"
        "lxc a 1.3 INFO     error - ../src/lxc/error.c:lxc_error_set_and_log:34 - "
        "Child <11> ended on signal Killed(9)\n"
    )
    assert lxclog.exit_status(text, 10) == 7
    assert lxclog.exit_status(text, 11) == 137
    assert lxclog.exit_status(text, 12) is None


def test_started_pid_is_the_last_one_logged() -> None:
    text = 'x - Started "/bin/a" with pid "100"\nx - Started "/bin/a" with pid "200"\n'
    assert lxclog.started_pid(text) == 200
    assert lxclog.started_pid("") is None

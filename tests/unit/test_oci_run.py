"""Image config -> run.json: argv[0] resolved inside the rootfs, Env, WorkingDir, User."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvinit.build.oci import ImageConfig
from pvinit.build.oci_run import lookup_in_root, resolve_program, run_fields
from pvinit.checkout.editing import ContainerOptions, ImageSource
from pvinit.errors import BadInputError


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "app").mkdir()
    busybox = root / "bin" / "busybox"
    busybox.write_text("elf")
    busybox.chmod(0o755)
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "usr" / "bin" / "env").symlink_to("/bin/busybox")  # absolute: inside the root
    (root / "usr" / "bin" / "evil").symlink_to("../../../../../../usr/bin/python3")
    (root / "app" / "run").write_text("#!/bin/sh\n")
    (root / "app" / "run").chmod(0o755)
    (root / "app" / "data").write_text("not executable")
    return root


def test_bare_names_are_found_on_the_images_path(rootfs: Path) -> None:
    assert resolve_program(rootfs, "sh", "/usr/bin:/bin", "/") == "/bin/sh"
    assert resolve_program(rootfs, "env", "/usr/bin:/bin", "/") == "/usr/bin/env"
    assert resolve_program(rootfs, "sh", "/usr/bin", "/") is None


def test_relative_paths_resolve_against_the_working_dir(rootfs: Path) -> None:
    assert resolve_program(rootfs, "./run", "/bin", "/app") == "/app/run"
    assert resolve_program(rootfs, "../bin/sh", "/bin", "/app") == "/bin/sh"


def test_symlinks_never_leave_the_root(rootfs: Path) -> None:
    assert lookup_in_root(rootfs, "/usr/bin/env") is not None
    # /usr/bin/python3 exists on the host, not in this rootfs
    assert lookup_in_root(rootfs, "/usr/bin/evil") is None


def test_non_executables_and_directories_are_not_programs(rootfs: Path) -> None:
    assert resolve_program(rootfs, "/app/data", "/bin", "/") is None
    assert resolve_program(rootfs, "/app", "/bin", "/") is None


def test_config_maps_to_run_fields(rootfs: Path) -> None:
    config = ImageConfig(entrypoint=("sh", "-c"), cmd=("echo hi",),
                         env=("PATH=/bin", "A=1", "A=2", "EMPTY="), working_dir="/app",
                         user="1000:1000")
    fields = run_fields(config, rootfs, where="img")
    assert fields.init == ("/bin/sh", "-c", "echo hi")
    assert fields.env == {"PATH": "/bin", "A": "2", "EMPTY": ""}
    assert (fields.cwd, fields.user) == ("/app", "1000:1000")


def test_no_command_leaves_init_to_the_options(rootfs: Path) -> None:
    fields = run_fields(ImageConfig(), rootfs, where="img")
    assert fields.init is None
    doc = ContainerOptions().with_image(fields).run_json("c")
    assert doc["init"] == ["/sbin/init"]
    assert "cwd" not in doc and "user" not in doc


def test_a_command_not_in_the_image_is_refused_with_a_hint(rootfs: Path) -> None:
    with pytest.raises(BadInputError, match=r"'python3' is not an executable.*--init"):
        run_fields(ImageConfig(cmd=("python3",)), rootfs, where="img")


@pytest.mark.parametrize("env", ["NOEQUALS", "1BAD=x", "A-B=1"])
def test_bad_env_entries_are_refused_naming_them(rootfs: Path, env: str) -> None:
    with pytest.raises(BadInputError, match=r"Env\[0\]"):
        run_fields(ImageConfig(env=(env,)), rootfs, where="img")


def test_relative_working_dir_is_refused(rootfs: Path) -> None:
    with pytest.raises(BadInputError, match="WorkingDir"):
        run_fields(ImageConfig(working_dir="app"), rootfs, where="img")


def test_explicit_options_win_over_the_image(rootfs: Path) -> None:
    fields = run_fields(ImageConfig(cmd=("sh",), env=("A=1", "B=1"), user="u"), rootfs,
                        where="img")
    options = ContainerOptions(init=("/bin/busybox", "init"), env={"B": "2"}, user="root")
    doc = options.with_image(fields).run_json("c")
    assert doc["init"] == ["/bin/busybox", "init"]
    assert doc["env"] == {"A": "1", "B": "2"}
    assert doc["user"] == "root"


@pytest.mark.parametrize(
    ("text", "kind", "location", "reference"),
    [
        ("rootfs.tar", "path", "rootfs.tar", None),
        ("oci:/images/app", "oci", "/images/app", None),
        ("oci:/images/app:v1.2", "oci", "/images/app", "v1.2"),
        ("oci:relative/dir:latest", "oci", "relative/dir", "latest"),
        ("docker-archive:/tmp/app.tar", "docker-archive", "/tmp/app.tar", None),
        ("docker-archive:/tmp/app.tar:demo/app:v1", "docker-archive", "/tmp/app.tar",
         "demo/app:v1"),
        ("docker://127.0.0.1:5000/demo/app:v1", "docker", "127.0.0.1:5000/demo/app", "v1"),
        ("docker://registry.example/app", "docker", "registry.example/app", "latest"),
        ("docker://docker.io/busybox", "docker", "registry-1.docker.io/library/busybox",
         "latest"),
        ("docker://r.example:443/a/b@sha256:" + "0" * 64, "docker", "r.example:443/a/b",
         "sha256:" + "0" * 64),
    ],
)
def test_sources_are_parsed(text: str, kind: str, location: str, reference: str | None) -> None:
    source = ImageSource.parse(text)
    assert (source.kind, source.location, source.reference) == (kind, location, reference)


@pytest.mark.parametrize("text", ["docker://", "docker://host", "docker://host/UPPER:v1",
                                  "docker://host/a:bad tag", "docker://host/a@sha256:12"])
def test_bad_registry_references_are_refused(text: str) -> None:
    with pytest.raises(BadInputError):
        ImageSource.parse(text)

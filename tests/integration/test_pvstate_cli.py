"""pvstate end to end, run in-process through ``main(argv)``: exit codes and effects on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pvinit.cli.pvstate import main
from tests.conftest import need_tool


@pytest.fixture(autouse=True)
def _tools() -> None:
    need_tool("mksquashfs")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (to prove 'no change on disk')."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "tmp" not in p.relative_to(root).parts and p.name != "cache.json"
    }


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc"):
        (root / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    app = root / "bin" / "app"
    app.write_text("#!/bin/sh\necho hello\nexec sleep 1000\n")
    app.chmod(0o755)
    (root / "etc" / "hostname").write_text("device\n")
    return root


@pytest.fixture
def checkout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    co = tmp_path / "state"
    code, _, err = run(capsys, "init", str(co), "--objects", str(tmp_path / "objects"))
    assert code == 0, err
    return co


def add_app(capsys: pytest.CaptureFixture[str], co: Path, rootfs: Path, name: str = "app",
            *extra: str) -> int:
    code, _, _ = run(capsys, "-C", str(co), "container", "add", name, "--from", str(rootfs),
                     "--init", "/bin/app", *extra)
    return code


def test_init_makes_a_checkout_with_default_device_groups(checkout: Path) -> None:
    device = json.loads((checkout / "device.json").read_text())
    assert [g["name"] for g in device["groups"]] == ["data", "root", "platform", "app"]
    assert (checkout / ".pvstate" / "config.json").is_file()


def test_init_twice_is_a_conflict(checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "init", str(checkout))
    assert code == 7
    assert "already a state checkout" in err


def test_container_add_commit_log_and_show(
    checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_app(capsys, checkout, rootfs) == 0
    code, out, _ = run(capsys, "-C", str(checkout), "commit", "-m", "first")
    assert code == 0 and "revision 1" in out
    code, out, _ = run(capsys, "-C", str(checkout), "log", "--json")
    log = json.loads(out)
    assert [r["revision"] for r in log] == [1]
    assert log[0]["head"] is True and log[0]["parent"] is None
    code, out, _ = run(capsys, "-C", str(checkout), "show", "1", "--json")
    shown = json.loads(out)
    state = shown["state"]
    assert state["#spec"] == "pvinit-state@1"
    assert state["app/run.json"]["init"] == ["/bin/app"]
    volume = state["app/root.squashfs"]
    assert shown["envelope"]["sizes"][volume] == (checkout / "app" / "root.squashfs").stat().st_size


def test_container_from_tar_gives_the_same_object_as_from_directory(
    tmp_path: Path, checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar_path = tmp_path / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(rootfs, arcname=".")
    assert add_app(capsys, checkout, rootfs, "a") == 0
    assert add_app(capsys, checkout, tar_path, "b") == 0
    code, _, _ = run(capsys, "-C", str(checkout), "status", "--json")
    assert code == 0
    a = (checkout / "a" / "root.squashfs").read_bytes()
    b = (checkout / "b" / "root.squashfs").read_bytes()
    assert a == b


def test_container_in_unknown_group_is_refused_and_changes_nothing(
    checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(checkout)
    code = add_app(capsys, checkout, rootfs, "app", "--group", "nosuchgroup")
    err = capsys.readouterr().err
    assert code == 3
    assert snapshot(checkout) == before
    _ = err


def test_unknown_group_error_names_the_run_json(
    checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "-C", str(checkout), "container", "add", "app", "--from",
                       str(rootfs), "--group", "nosuchgroup")
    assert code == 3
    assert "app/run.json" in err and "nosuchgroup" in err
    assert err.count("\n") == 1


def test_commit_without_changes_is_refused(
    checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_app(capsys, checkout, rootfs)
    assert run(capsys, "-C", str(checkout), "commit", "-m", "one")[0] == 0
    code, _, err = run(capsys, "-C", str(checkout), "commit", "-m", "again")
    assert code == 9 and "nothing to commit" in err


def test_broken_json_in_tree_fails_commit_naming_the_file(
    checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_app(capsys, checkout, rootfs)
    (checkout / "app" / "run.json").write_text('{"name": "app", ')
    code, _, err = run(capsys, "-C", str(checkout), "commit", "-m", "broken")
    assert code == 3
    assert "app/run.json" in err
    assert not (checkout / ".pvstate" / "revisions" / "1.json").exists()


def test_diff_of_an_app_change_restarts_only_that_app(
    tmp_path: Path, checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_app(capsys, checkout, rootfs, "one")
    add_app(capsys, checkout, rootfs, "two")
    run(capsys, "-C", str(checkout), "commit", "-m", "base")
    (rootfs / "etc" / "hostname").write_text("changed\n")
    add_app(capsys, checkout, rootfs, "two", "--replace")
    run(capsys, "-C", str(checkout), "commit", "-m", "app change")
    code, out, _ = run(capsys, "-C", str(checkout), "diff", "1", "2", "--json")
    assert code == 0
    result = json.loads(out)
    plan = result["plan"]
    assert plan["reboot"] is False
    assert plan["containers_to_start"] == ["two"]
    assert plan["containers_to_stop"] == ["two"]
    assert len(plan["objects_to_fetch"]) == 1


def test_diff_of_a_bsp_change_needs_a_reboot(
    tmp_path: Path, checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel-1")
    add_app(capsys, checkout, rootfs)
    assert run(capsys, "-C", str(checkout), "bsp", "set", "--kernel", str(kernel))[0] == 0
    run(capsys, "-C", str(checkout), "commit", "-m", "base")
    kernel.write_bytes(b"kernel-2")
    assert run(capsys, "-C", str(checkout), "bsp", "set", "--kernel", str(kernel))[0] == 0
    run(capsys, "-C", str(checkout), "commit", "-m", "new kernel")
    code, out, _ = run(capsys, "-C", str(checkout), "diff", "1", "2", "--json")
    assert code == 0
    plan = json.loads(out)["plan"]
    assert plan["reboot"] is True
    assert any("bsp" in reason for reason in plan["reasons"])


def test_checkout_restores_an_older_revision_and_protects_local_changes(
    checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_app(capsys, checkout, rootfs, "one")
    run(capsys, "-C", str(checkout), "commit", "-m", "one")
    add_app(capsys, checkout, rootfs, "two")
    run(capsys, "-C", str(checkout), "commit", "-m", "two")
    (checkout / "one" / "run.json").write_text(
        (checkout / "one" / "run.json").read_text().replace("/bin/app", "/bin/other")
    )
    code, _, err = run(capsys, "-C", str(checkout), "checkout", "1")
    assert code == 7 and "one/run.json" in err
    assert (checkout / "two").exists()
    code, _, _ = run(capsys, "-C", str(checkout), "checkout", "1", "--force")
    assert code == 0
    assert not (checkout / "two").exists()
    assert "/bin/app" in (checkout / "one" / "run.json").read_text()
    code, out, _ = run(capsys, "-C", str(checkout), "status", "--json")
    status = json.loads(out)
    assert status["head"] == 1 and status["clean"] is True


def test_export_writes_a_bundle_that_imports_into_a_fresh_store(
    tmp_path: Path, checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pvinit.bundle.reader import BundleReader
    from pvinit.objects.memory import MemoryObjectStore

    add_app(capsys, checkout, rootfs, "one")
    run(capsys, "-C", str(checkout), "commit", "-m", "one")
    add_app(capsys, checkout, rootfs.parent / "rootfs", "two", "--env", "X=1")
    run(capsys, "-C", str(checkout), "commit", "-m", "two")
    full = tmp_path / "full.pvb"
    delta = tmp_path / "delta.pvb"
    assert run(capsys, "-C", str(checkout), "export", "2", "-o", str(full))[0] == 0
    code, out, _ = run(capsys, "-C", str(checkout), "export", "2", "--base", "1", "-o",
                       str(delta), "--json")
    assert code == 0
    assert json.loads(out)["objects"] == 0  # the second container reuses the same rootfs object
    store = MemoryObjectStore()
    reader = BundleReader(full)
    reader.import_into(store)
    assert store.contains(json.loads(
        run(capsys, "-C", str(checkout), "show", "2", "--json")[1])["state"]["two/root.squashfs"])


def test_keygen_sign_verify_and_tampering(
    tmp_path: Path, checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_app(capsys, checkout, rootfs)
    run(capsys, "-C", str(checkout), "commit", "-m", "one")
    assert run(capsys, "keygen", str(tmp_path / "release"))[0] == 0
    assert run(capsys, "keygen", str(tmp_path / "other"))[0] == 0
    assert run(capsys, "keygen", str(tmp_path / "release"))[0] == 7
    code, _, err = run(capsys, "-C", str(checkout), "verify", "1", "--key",
                       str(tmp_path / "release.pub"))
    assert code == 6, err
    assert run(capsys, "-C", str(checkout), "sign", "1", "--key",
               str(tmp_path / "release.key"))[0] == 0
    assert run(capsys, "-C", str(checkout), "verify", "1", "--key",
               str(tmp_path / "release.pub"))[0] == 0
    code, _, _ = run(capsys, "-C", str(checkout), "verify", "1", "--key",
                     str(tmp_path / "other.pub"))
    assert code == 6
    rev_file = checkout / ".pvstate" / "revisions" / "1.json"
    envelope = json.loads(rev_file.read_text())
    envelope["message"] = "tampered"
    rev_file.write_text(json.dumps(envelope))
    code, _, err = run(capsys, "-C", str(checkout), "verify", "1", "--key",
                       str(tmp_path / "release.pub"))
    assert code == 6


def test_garbage_key_file_is_bad_input(
    tmp_path: Path, checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_app(capsys, checkout, rootfs)
    run(capsys, "-C", str(checkout), "commit", "-m", "one")
    bad = tmp_path / "bad.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n")
    code, _, err = run(capsys, "-C", str(checkout), "sign", "1", "--key", str(bad))
    assert code == 3 and "bad.key" in err


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["show", "7"], 4, "7"),
        (["show", "HEAD"], 4, "HEAD"),
        (["export", "9", "-o", "/tmp/x.pvb"], 4, "9"),
        (["add", "--as", "../escape", "/etc/hostname"], 3, "../escape"),
        (["add", "--as", "/abs/key", "/etc/hostname"], 3, "/abs/key"),
        (["add", "/etc"], 3, "--as"),
        (["add", "--as", "x.json", "/etc/hostname"], 3, "x.json"),
        (["container", "add", "bsp", "--from", "/etc"], 3, "bsp"),
        (["container", "add", "a/b", "--from", "/etc"], 3, "a/b"),
        (["container", "add", "x", "--from", "/nonexistent"], 4, "/nonexistent"),
        (["container", "add", "x", "--from", "/etc", "--env", "NOEQUALS"], 2, "NOEQUALS"),
        (["bsp", "set", "--kernel", "/etc"], 3, "/etc"),
        (["bsp", "set"], 3, "nothing to set"),
        (["commit"], 2, "message"),
        (["frobnicate"], 2, "frobnicate"),
        (["verify", "1"], 4, "1"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_and_no_change(
    checkout: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, needle: str
) -> None:
    before = snapshot(checkout)
    got, _, err = run(capsys, "-C", str(checkout), *argv)
    assert got == code, err
    assert needle in err
    assert err.strip().count("\n") == 0, err
    assert snapshot(checkout) == before


def test_not_a_checkout_is_not_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-C", str(tmp_path), "status")
    assert code == 4 and "pvstate init" in err


def test_fsck_finds_a_corrupt_object_and_repair_quarantines_it(
    tmp_path: Path, checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_app(capsys, checkout, rootfs)
    run(capsys, "-C", str(checkout), "commit", "-m", "one")
    assert run(capsys, "-C", str(checkout), "fsck")[0] == 0
    state = json.loads(run(capsys, "-C", str(checkout), "show", "--json")[1])["state"]
    oid = state["app/root.squashfs"]
    obj = tmp_path / "objects" / oid[:2] / oid[2:]
    obj.chmod(0o644)
    with open(obj, "r+b") as handle:
        handle.write(b"garbage!")
    code, out, _ = run(capsys, "-C", str(checkout), "fsck", "--json")
    assert code == 5
    assert json.loads(out)["problems"][0]["kind"] == "corrupt"
    run(capsys, "-C", str(checkout), "fsck", "--repair")
    assert not obj.exists()


def test_gc_removes_objects_no_revision_references(
    tmp_path: Path, checkout: Path, rootfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_app(capsys, checkout, rootfs)
    run(capsys, "-C", str(checkout), "commit", "-m", "one")
    stray = tmp_path / "stray.bin"
    stray.write_bytes(os.urandom(4096))
    run(capsys, "-C", str(checkout), "add", str(stray), "--as", "app/extra.bin")
    code, out, _ = run(capsys, "-C", str(checkout), "gc", "--json")
    report = json.loads(out)
    assert code == 0 and report["reclaimed_bytes"] == 4096 and len(report["removed"]) == 1
    assert run(capsys, "-C", str(checkout), "fsck")[0] == 0


def test_console_script_runs_as_a_subprocess(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("pvstate")
    result = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "pvstate" in result.stdout

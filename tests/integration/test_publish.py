"""``pvstate publish``: a real checkout, real squashfs objects, a repository directory."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from pvinit import durable
from pvinit.checkout.checkout import Checkout
from pvinit.cli.pvstate import main
from pvinit.errors import BadInputError, RefusedError
from pvinit.remote import layout
from pvinit.remote.delta import apply_delta
from pvinit.remote.publish import publish, read_object
from pvinit.signing.envelope import Envelope
from tests.conftest import need_tool


@pytest.fixture(autouse=True)
def _tools() -> None:
    need_tool("mksquashfs")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def make_rootfs(root: Path, *, seed: int = 1) -> Path:
    """busybox plus ~2 MB of deterministic incompressible files (so objects are not tiny)."""
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "usr/share/data"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    rng = random.Random(seed)  # noqa: S311 - deterministic test data, not secrets
    for i in range(32):
        (root / "usr/share/data" / f"blob{i:02}").write_bytes(rng.randbytes(64 << 10))
    (root / "etc" / "hostname").write_text("device\n")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def repo_setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path, Path]:
    """A checkout with two signed revisions: rev 2 changes one file of container 'app'."""
    co = tmp_path / "state"
    assert run(capsys, "init", str(co), "--objects", str(tmp_path / "objects"))[0] == 0
    rootfs = make_rootfs(tmp_path / "rootfs")
    assert run(capsys, "-C", str(co), "container", "add", "app", "--from", str(rootfs),
               "--init", "/bin/sh")[0] == 0
    assert run(capsys, "-C", str(co), "commit", "-m", "one")[0] == 0
    (rootfs / "etc" / "hostname").write_text("changed device name\n")
    assert run(capsys, "-C", str(co), "container", "add", "app", "--from", str(rootfs),
               "--init", "/bin/sh", "--replace")[0] == 0
    assert run(capsys, "-C", str(co), "commit", "-m", "two")[0] == 0
    key = tmp_path / "release"
    assert run(capsys, "keygen", str(key))[0] == 0
    for rev in ("1", "2"):
        assert run(capsys, "-C", str(co), "sign", rev, "--key", str(key) + ".key")[0] == 0
    return co, tmp_path / "repo", rootfs


def test_second_publish_ships_a_small_delta_and_points_the_channel_at_it(
    repo_setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    co, repo, _ = repo_setup
    code, out, err = run(capsys, "-C", str(co), "publish", "1", "--to", str(repo),
                         "--channel", "stable", "--json")
    assert code == 0, err
    assert json.loads(out)["deltas_written"] == 0
    code, out, err = run(capsys, "-C", str(co), "publish", "2", "--to", f"file://{repo}",
                         "--channel", "stable", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["revision"] == 2 and report["deltas_written"] == 1
    checkout = Checkout(co)
    old = checkout.revisions.load(1).state.objects["app/root.squashfs"]
    new = checkout.revisions.load(2).state.objects["app/root.squashfs"]
    delta = (repo / layout.delta_path(old, new)).read_bytes()
    full = (repo / layout.object_path(new)).stat().st_size
    assert len(delta) * 20 < full
    rebuilt = apply_delta(checkout.store.read_bytes(old), delta, expected_id=new,
                          max_size=checkout.store.size(new))
    assert rebuilt == checkout.store.read_bytes(new)
    env2 = checkout.revisions.envelope(2)
    assert (repo / "channels" / "stable").read_bytes() == env2.to_json()
    assert (repo / "revisions" / "2.json").read_bytes() == env2.to_json()
    for object_id in [env2.state, *env2.sizes]:
        assert read_object(repo, object_id) == checkout.store.read_bytes(object_id)


def test_unsigned_revision_is_refused_and_nothing_is_written(
    tmp_path: Path, repo_setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    co, repo, _ = repo_setup
    assert run(capsys, "-C", str(co), "commit", "-m", "three", "--allow-empty")[0] == 0
    code, _, err = run(capsys, "-C", str(co), "publish", "3", "--to", str(repo),
                       "--channel", "stable")
    assert code == RefusedError.exit_code
    assert "not signed" in err and "pvstate sign 3" in err
    assert not repo.exists()
    report = publish(Checkout(co), repo, "dev", revision="3", allow_unsigned=True)
    assert report.revision == 3


def test_channel_never_moves_backwards_without_force(
    repo_setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    co, repo, _ = repo_setup
    checkout = Checkout(co)
    publish(checkout, repo, "stable", revision="2")
    before = snapshot(repo)
    code, _, err = run(capsys, "-C", str(co), "publish", "1", "--to", str(repo),
                       "--channel", "stable")
    assert code == RefusedError.exit_code and "only moves forward" in err
    assert snapshot(repo) == before
    publish(checkout, repo, "stable", revision="1", force=True)
    assert Envelope.from_json((repo / "channels/stable").read_bytes()).revision == 1


def test_crash_before_channel_rename_leaves_the_old_channel_whole(
    repo_setup: tuple[Path, Path, Path],
) -> None:
    co, repo, _ = repo_setup
    checkout = Checkout(co)
    publish(checkout, repo, "stable", revision="1")
    for point in ("publish.delta.rename", "publish.revision.rename", "publish.channel.rename"):
        durable.arm_crash(point)
        try:
            with pytest.raises(durable.SimulatedCrash):
                publish(checkout, repo, "stable", revision="2")
        finally:
            durable.arm_crash(None)
        channel = Envelope.from_json((repo / "channels/stable").read_bytes())
        assert channel.revision == 1
        assert (repo / layout.revision_path(1)).read_bytes() == channel.to_json()
        for object_id in [channel.state, *channel.sizes]:
            assert read_object(repo, object_id) == checkout.store.read_bytes(object_id)
        assert not [p for p in repo.rglob("*.tmp")]
    report = publish(checkout, repo, "stable", revision="2")  # finishing the interrupted job
    assert report.channel_moved
    assert Envelope.from_json((repo / "channels/stable").read_bytes()).revision == 2
    assert len(list((repo / "deltas").iterdir())) == 1


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../x", "x" * 65, "bad name", "s.tmp"])
def test_bad_channel_names_are_refused(
    name: str, repo_setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    co, repo, _ = repo_setup
    code, _, err = run(capsys, "-C", str(co), "publish", "--to", str(repo), "--channel", name)
    assert code == BadInputError.exit_code, err
    assert "channel name" in err
    assert not repo.exists()


def test_republishing_is_idempotent(repo_setup: tuple[Path, Path, Path]) -> None:
    co, repo, _ = repo_setup
    checkout = Checkout(co)
    publish(checkout, repo, "stable", revision="1")
    publish(checkout, repo, "stable", revision="2")
    before = snapshot(repo)
    again = publish(checkout, repo, "stable", revision="2")
    assert (again.objects_written, again.deltas_written, again.bytes_written) == (0, 0, 0)
    assert not again.channel_moved
    assert snapshot(repo) == before


def test_http_targets_are_refused_until_uploads_exist(
    repo_setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    co, _, _ = repo_setup
    code, _, err = run(capsys, "-C", str(co), "publish", "--to", "https://cdn.example/r",
                       "--channel", "stable")
    assert code == RefusedError.exit_code and "issue 6" in err


def test_a_second_channel_gets_deltas_only_from_its_own_history(
    repo_setup: tuple[Path, Path, Path],
) -> None:
    co, repo, _ = repo_setup
    checkout = Checkout(co)
    publish(checkout, repo, "beta", revision="1")
    report = publish(checkout, repo, "stable", revision="2")
    assert report.deltas_written == 0  # stable devices never had revision 1
    assert not (repo / "deltas").exists()


def test_a_different_revision_with_the_same_number_is_a_conflict(
    tmp_path: Path, repo_setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    co, repo, _ = repo_setup
    publish(Checkout(co), repo, "stable", revision="1")
    other = tmp_path / "other"
    assert run(capsys, "init", str(other), "--objects", str(tmp_path / "objects"))[0] == 0
    assert run(capsys, "-C", str(other), "commit", "-m", "unrelated")[0] == 0
    before = snapshot(repo)
    code, _, err = run(capsys, "-C", str(other), "publish", "1", "--to", str(repo),
                       "--channel", "other", "--allow-unsigned")
    assert code == 7 and "different revision 1" in err
    assert snapshot(repo) == before
    code, _, err = run(capsys, "-C", str(other), "publish", "1", "--to", str(repo),
                       "--channel", "other", "--allow-unsigned", "--force")
    assert code == 0, err


def test_a_second_publisher_is_told_the_repository_is_busy(
    repo_setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import fcntl
    import os

    co, repo, _ = repo_setup
    repo.mkdir()
    fd = os.open(repo / ".publish.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code, _, err = run(capsys, "-C", str(co), "publish", "--to", str(repo),
                           "--channel", "stable")
    finally:
        os.close(fd)
    assert code == 8 and "another publish" in err
    assert sorted(p.name for p in repo.iterdir()) == [".publish.lock"]

"""A fleet-style update end to end: a release engineer's checkout, a remote on nginx, a dev device.

The release engineer's side is the real ``pvstate`` (init, container add from a
busybox rootfs, commit, keygen, sign, publish, export); the remote is the
published directory served by nginx on loopback (its access log shows what
the device fetched); the device is ``pvinit --storage`` (launcher + PID 1 +
supervisor + LXC) polling the channel.  Trust rotation rides on the same
pieces: a revision carrying ``trust.json`` changes which key the device
believes once it commits.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvinit.checkout.checkout import Checkout
from pvinit.cli.pvstate import main as pvstate_main
from pvinit.remote import layout as remote_layout
from pvinit.signing.keys import load_signing_key
from pvinit.signing.trust import TrustPolicy, load_trust
from pvinit.trails.refs import read_ref
from pvinit.update.journal import read_journal
from tests.integration.test_containers_support import build_rootfs, pvnotify_binary
from tests.integration.test_fetch_http import Nginx, nginx
from tests.integration.test_supervisor_support import SCRIPTS, device, supervisor_image
from tests.integration.test_update_device import Updater, updater

__all__ = ["device", "nginx", "pvnotify_binary", "supervisor_image", "updater"]

pytest.importorskip("pvinit.containers.lxc_driver", reason="needs python-lxc")
pytestmark = [pytest.mark.root, pytest.mark.slow]


def pvstate(*argv: str) -> None:
    code = pvstate_main(list(argv))
    assert code == 0, f"pvstate {' '.join(argv)} exited {code}"


class Release:
    """A release engineer's checkout with an app and a platform container and a signing key."""

    def __init__(self, top: Path, pvnotify: Path) -> None:
        self.top = top
        self.co = top / "state"
        pvstate("init", str(self.co), "--objects", str(top / "objects"))
        self.rootfs = build_rootfs(top / "rootfs", pvnotify)
        for relative, text in SCRIPTS.items():
            (self.rootfs / relative).write_text(text)
            (self.rootfs / relative).chmod(0o755)
        # ~2 MB of incompressible data, so the whole object dwarfs a one-file delta.
        rng = random.Random(4)  # noqa: S311 - deterministic test data, not secrets
        data = self.rootfs / "usr" / "share" / "data"
        data.mkdir(parents=True)
        for i in range(32):
            (data / f"blob{i:02}").write_bytes(rng.randbytes(64 << 10))
        (self.rootfs / "etc" / "version").write_text("1\n")
        self.platform_rootfs = top / "platform-rootfs"
        shutil.copytree(self.rootfs, self.platform_rootfs, symlinks=True)
        self.key = self.keygen("release")

    def keygen(self, name: str) -> Path:
        pvstate("keygen", str(self.top / name))
        return self.top / f"{name}.key"

    def policy(self, *keys: Path, version: int = 1) -> TrustPolicy:
        pairs = [(load_signing_key(k).public, k.stem) for k in keys]
        return TrustPolicy.from_keys(pairs, threshold=1, version=version)

    def container(self, name: str, group: str, init: str, rootfs: Path) -> None:
        args = ["-C", str(self.co), "container", "add", name, "--from", str(rootfs),
                "--group", group, "--init", init]
        if (self.co / name / "run.json").exists():
            args.append("--replace")
        pvstate(*args)

    def app(self, version: str, init: str = "/bin/run.sh") -> None:
        (self.rootfs / "etc" / "version").write_text(version + "\n")
        self.container("app", "app", init, self.rootfs)

    def commit(self, message: str, *keys: Path) -> int:
        pvstate("-C", str(self.co), "commit", "-m", message, "--allow-empty")
        revision = max(Checkout(self.co).revisions.numbers())
        for key in keys or (self.key,):
            pvstate("-C", str(self.co), "sign", str(revision), "--key", str(key))
        return revision

    def publish(self, revision: int, repo: Path) -> None:
        pvstate("-C", str(self.co), "publish", str(revision), "--to", str(repo),
                "--channel", "stable")

    def export(self, revision: int, out: Path) -> Path:
        pvstate("-C", str(self.co), "export", str(revision), "-o", str(out))
        return out

    def object_id(self, revision: int, key: str) -> str:
        return Checkout(self.co).revisions.load(revision).state.objects[key]


@pytest.fixture
def release(tmp_path: Path, pvnotify_binary: Path) -> Release:
    world = Release(tmp_path, pvnotify_binary)
    world.container("platform", "platform", "/bin/run.sh", world.platform_rootfs)
    world.app("1")
    assert world.commit("one") == 1
    return world


@pytest.fixture
def served(nginx: Nginx, request: pytest.FixtureRequest) -> Iterator[tuple[Path, str]]:
    """A repository directory under nginx's root and its URL (its own prefix per test)."""
    prefix = request.node.name
    yield nginx.root / prefix, f"{nginx.url}/{prefix}"


def configure(u: Updater, policy: TrustPolicy, remote_url: str | None = None) -> None:
    config = u.dev.storage / "config"
    (config / "trust.json").write_bytes(policy.to_json())
    settings: dict[str, object] = {"commit_delay": 1}
    if remote_url is not None:
        settings["remote"] = {"url": remote_url, "channel": "stable", "poll_interval": 1}
    (config / "pvinit.json").write_text(json.dumps(settings))


def boot_on_revision_1(u: Updater, release: Release) -> None:
    u.boot(release.export(1, u.dev.top / "factory.pvb"))
    u.wait("revision 1 running", lambda: u.running(1))
    u.wait("revision 1 adopted as pv_rev", lambda: u.env().get("pv_rev") == "1")


def test_a_published_revision_reaches_the_device_as_a_delta_and_bad_ones_change_nothing(
    updater: Updater, release: Release, nginx: Nginx, served: tuple[Path, str],
) -> None:
    u, repo, url = updater, *served
    prefix = repo.name
    release.publish(1, repo)
    configure(u, release.policy(release.key), url)
    boot_on_revision_1(u, release)

    release.app("2")
    assert release.commit("two: the app's version file") == 2
    release.publish(2, repo)
    u.wait("revision 2 UPDATED", lambda: u.journal_state(2) == "UPDATED")
    old, new = release.object_id(1, "app/root.squashfs"), release.object_id(2, "app/root.squashfs")
    delta_lines = nginx.requests_for(f"{prefix}/{remote_layout.delta_path(old, new)}")
    assert delta_lines and all(" 200 " in line for line in delta_lines)
    assert nginx.requests_for(f"{prefix}/{remote_layout.object_path(new)}") == []
    journal = read_journal(u.dev.layout, 2)
    assert journal is not None
    object_size = Checkout(release.co).store.size(new)
    assert 0 < journal.bytes_fetched * 20 < object_size
    assert u.boots() == 0 and "platform: STOPPED" not in u.dev.log_text()

    release.app("3", init="/bin/crash.sh")
    assert release.commit("three: an app that exits at start") == 3
    release.publish(3, repo)
    u.wait("revision 3 ERROR", lambda: u.journal_state(3) == "ERROR")
    u.wait("back on revision 2", lambda: u.boots() >= 1 and u.running(2))
    assert u.env().get("pv_rev") == "2" and "pv_try" not in u.env()
    assert read_ref(u.dev.layout, "current") == 2 and read_ref(u.dev.layout, "done") == 2

    # An attacker (or a broken mirror) rolls the channel back to revision 1's envelope.
    boots = u.boots()
    channel = repo / remote_layout.channel_path("stable")
    replayed = channel.with_name(".stable.tmp")
    replayed.write_bytes((repo / remote_layout.revision_path(1)).read_bytes())
    replayed.rename(channel)
    polls_before = len(nginx.requests_for(f"{prefix}/{remote_layout.channel_path('stable')}"))
    u.wait("two more polls of the replayed channel", lambda: len(
        nginx.requests_for(f"{prefix}/{remote_layout.channel_path('stable')}")) >= polls_before + 2)
    assert read_ref(u.dev.layout, "current") == 2 and u.env().get("pv_rev") == "2"
    assert u.journal_state(1) is None and u.journal_state(3) == "ERROR"
    assert u.boots() == boots


def test_a_committed_revision_rotates_the_trusted_key(
    updater: Updater, release: Release,
) -> None:
    u = updater
    old_policy = release.policy(release.key)
    configure(u, old_policy)
    boot_on_revision_1(u, release)
    trust_file = u.dev.storage / "config" / "trust.json"

    new_key = release.keygen("release-2026")
    new_policy = release.policy(new_key, version=2)
    (release.co / "trust.json").write_bytes(new_policy.to_json())
    assert release.commit("two: rotate to the 2026 key") == 2  # signed by the current key
    u.drop(release.export(2, u.dev.top / "r2.pvb"))
    u.wait("revision 2 UPDATED", lambda: u.journal_state(2) == "UPDATED")
    assert load_trust(trust_file) == new_policy
    assert trust_file.read_bytes() == new_policy.to_json()

    release.app("3")
    assert release.commit("three: signed by the retired key", release.key) == 3
    u.drop(release.export(3, u.dev.top / "r3.pvb"))
    u.wait("revision 3 WONTGO", lambda: u.journal_state(3) == "WONTGO")
    journal = read_journal(u.dev.layout, 3)
    assert journal is not None and "unknown key" in journal.reason

    # The same change again, as a new revision signed by the new key (3 stays refused).
    assert release.commit("four: the same, signed by the new key", new_key) == 4
    u.drop(release.export(4, u.dev.top / "r4.pvb"))
    u.wait("revision 4 UPDATED", lambda: u.journal_state(4) == "UPDATED")
    assert trust_file.read_bytes() == new_policy.to_json()  # carried again: no rotation

    # Rotating back to the old key at the same version is a replayed rotation.
    (release.co / "trust.json").write_bytes(release.policy(release.key, version=2).to_json())
    assert release.commit("five: back to the old key", new_key) == 5
    u.drop(release.export(5, u.dev.top / "r5.pvb"))
    u.wait("revision 5 WONTGO", lambda: u.journal_state(5) == "WONTGO")
    journal = read_journal(u.dev.layout, 5)
    assert journal is not None and "not newer" in journal.reason
    assert trust_file.read_bytes() == new_policy.to_json()
    assert read_ref(u.dev.layout, "current") == 4 and u.boots() == 0

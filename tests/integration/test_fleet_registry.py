"""Publishing to and updating from a real OCI registry (Debian's docker-registry) on loopback.

``pvstate publish --to oci://HOST:PORT/REPO`` stores the revision as blobs
and a manifest; devices pull with the registry API and the same engine,
signature checks and object verification as from a static remote.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import re
import warnings
from pathlib import Path

import pytest

from pvinit.cli.pvstate import main as pvstate_main
from pvinit.errors import RefusedError, TransportError
from pvinit.remote.oci import (
    ARTIFACT_TYPE,
    MANIFEST_MEDIA_TYPE,
    Descriptor,
    OciTarget,
    RevisionManifest,
)
from pvinit.transport.oci import OciRemoteRepository, open_remote
from pvinit.transport.registry import RegistryAuth, RegistryClient
from pvinit.update.journal import read_journal
from pvinit.update.machine import UpdateState
from tests.conftest import need_tool
from tests.integration import test_fleet_support as support
from tests.integration.test_fetch_http import free_port
from tests.integration.test_fleet_support import (
    REGISTRY_CONF,
    Release,
    Server,
    SimDevice,
    pvstate,
    started,
)

registry = support.registry
FLEET = 20
# combined log format: "GET /v2/... HTTP/1.1" status size "referer" "user agent"
_LINE = re.compile(r'"GET (\S+) HTTP/[\d.]+" (\d+) \d+ "[^"]*" "([^"]*)"')


@pytest.fixture
def release(tmp_path: Path) -> Release:
    world = Release(tmp_path / "release")
    assert world.revision(1) == 1
    assert world.revision(2) == 2
    return world


def blob_gets(server: Server) -> list[tuple[str, int, str]]:
    out = []
    for line in server.lines():
        match = _LINE.search(line)
        if match is not None and "/blobs/" in match[1]:
            out.append((match[1], int(match[2]), match[3]))
    return out


def test_a_device_updates_from_the_registry_and_a_foreign_signature_changes_nothing(
        release: Release, registry: Server, tmp_path: Path) -> None:
    url = f"oci://{registry.url}/fleet/device"
    release.publish(1, url)
    release.publish(2, url)
    client = RegistryClient(OciTarget.parse(url))
    raw = client.get_manifest("stable", MANIFEST_MEDIA_TYPE, max_bytes=1 << 20)
    assert raw is not None and json.loads(raw)["artifactType"] == ARTIFACT_TYPE
    manifest = RevisionManifest.from_bytes(raw, where="stable")
    old, new = release.objects(1)["data/big.bin"], release.objects(2)["data/big.bin"]
    assert manifest.revision == 2 and (old, new) in manifest.deltas
    assert client.get_manifest("rev-2", MANIFEST_MEDIA_TYPE, max_bytes=1 << 20) == raw

    device = SimDevice(tmp_path / "dev", release, 1, "registry-device")
    assert device.update(open_remote(url, user_agent=device.user_agent)) == 2
    assert device.current() == 2
    journal = read_journal(device.layout, 2)
    assert journal is not None and journal.state is UpdateState.UPDATED
    assert journal.bytes_fetched < manifest.objects[new].size // 10  # it came as a delta

    # revision 3 signed by a key the device does not trust: refused by the same trust check
    other = tmp_path / "intruder"
    pvstate("keygen", str(other))
    (release.files / "version").write_text("3\n")
    pvstate("-C", str(release.co), "add", str(release.files / "version"), "--as",
            "data/version")
    pvstate("-C", str(release.co), "commit", "-m", "version 3")
    pvstate("-C", str(release.co), "sign", "3", "--key", f"{other}.key")
    release.publish(3, url)
    assert device.update(open_remote(url, user_agent=device.user_agent)) is None
    assert device.current() == 2
    refused = read_journal(device.layout, 3)
    assert refused is not None and refused.state is UpdateState.WONTGO


def test_republishing_uploads_nothing_and_the_channel_only_moves_forward(
        release: Release, registry: Server, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"oci://{registry.url}/fleet/device"
    release.publish(1, url)
    release.publish(2, url)
    capsys.readouterr()
    assert pvstate_main(["-C", str(release.co), "publish", "2", "--to", url,
                         "--channel", "stable", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["objects_written"] == 0 and report["channel_moved"] is False
    assert pvstate_main(["-C", str(release.co), "publish", "1", "--to", url,
                         "--channel", "stable"]) == RefusedError.exit_code
    assert "only moves forward" in capsys.readouterr().err
    assert pvstate_main(["-C", str(release.co), "publish", "1", "--to", url,
                         "--channel", "rev-9"]) == 3


def test_a_manifest_naming_the_wrong_blob_for_an_object_is_refused(
        release: Release, registry: Server, tmp_path: Path) -> None:
    url = f"oci://{registry.url}/fleet/liar"
    release.publish(1, url)
    release.publish(2, url)
    client = RegistryClient(OciTarget.parse(url))
    raw = client.get_manifest("stable", MANIFEST_MEDIA_TYPE, max_bytes=1 << 20)
    assert raw is not None
    honest = RevisionManifest.from_bytes(raw, where="stable")
    version = release.objects(2)["data/version"]
    # point the new object at another blob the registry holds, and drop the deltas
    first = client.get_manifest("rev-1", MANIFEST_MEDIA_TYPE, max_bytes=1 << 20)
    assert first is not None
    wrong = RevisionManifest.from_bytes(first, where="rev-1").objects[
        release.objects(1)["data/version"]]
    objects = {**honest.objects, version: Descriptor(wrong.media_type, wrong.digest,
                                                     wrong.size)}
    lying = RevisionManifest(revision=2, channel="stable", envelope=honest.envelope,
                             objects=objects, deltas={}, state=honest.state)
    client.put_manifest("stable", MANIFEST_MEDIA_TYPE, lying.to_bytes())

    device = SimDevice(tmp_path / "dev", release, 1, "victim")
    assert device.update(OciRemoteRepository(OciTarget.parse(url))) is None
    assert device.current() == 1
    journal = read_journal(device.layout, 2)
    assert journal is not None and journal.state is UpdateState.WONTGO
    assert not device.engine.store.contains(version)


def test_twenty_devices_update_from_the_registry_each_blob_fetched_at_most_once(
        release: Release, registry: Server, tmp_path: Path) -> None:
    url = f"oci://{registry.url}/fleet/many"
    release.publish(1, url)
    release.publish(2, url)
    devices = [SimDevice(tmp_path / f"dev{i:02}", release, 1, f"dev{i:02}")
               for i in range(FLEET)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=FLEET) as pool:
        results = list(pool.map(
            lambda d: d.update(open_remote(url, user_agent=d.user_agent)), devices))
    assert results == [2] * FLEET
    per_device: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter)
    for path, status, agent in blob_gets(registry):
        if status == 200 and agent.startswith("pvinit-fetcher/1 dev"):
            per_device[agent][path] += 1
    assert sorted(per_device) == sorted(d.user_agent for d in devices)
    for agent, counts in per_device.items():
        # the envelope (config) blob once per poll, every object or delta blob once
        assert max(counts.values()) == 1, (agent, counts)


def test_a_registry_with_basic_auth_takes_credentials_from_the_environment_and_settings(
        release: Release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = need_tool("docker-registry")
    with warnings.catch_warnings():  # bcrypt from libxcrypt; no Python bcrypt on Debian 12 base
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    run = tmp_path / "authreg"
    run.mkdir()
    salt = crypt.mksalt(crypt.METHOD_BLOWFISH)  # noqa: S324 - bcrypt, what htpasswd wants
    (run / "htpasswd").write_text(f"release:{crypt.crypt('s3cret', salt)}\n")
    port = free_port()
    conf = REGISTRY_CONF.format(data=run / "data", port=port) + (
        f"auth:\n  htpasswd:\n    realm: pvinit-test\n    path: {run / 'htpasswd'}\n")
    (run / "config.yml").write_text(conf)
    with started([binary, "serve", str(run / "config.yml")], port, run / "log") as up:
        assert up, (run / "log").read_text()
        url = f"oci://127.0.0.1:{port}/fleet/private"
        assert pvstate_main(["-C", str(release.co), "publish", "2", "--to", url,
                             "--channel", "stable"]) == 12  # TransportError: 401
        monkeypatch.setenv("PVSTATE_REGISTRY_USER", "release")
        monkeypatch.setenv("PVSTATE_REGISTRY_PASSWORD", "s3cret")
        release.publish(2, url)
        device = SimDevice(tmp_path / "dev", release, 1, "authed")
        with pytest.raises(TransportError, match="401"):  # no credentials: a retryable error
            device.update(open_remote(url))
        assert device.current() == 1
        auth = RegistryAuth.from_dict({"username": "release", "password": "s3cret"},
                                      where="settings")
        assert device.update(open_remote(url, auth=auth)) == 2

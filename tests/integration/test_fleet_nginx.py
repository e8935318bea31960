"""A fleet updating from a ``pvstate publish`` directory served by a real nginx (nginx-light).

The repository is plain files, so the web server does nothing pvinit
specific: these tests are what a team serving a fleet from nginx, an
object store or a CDN relies on.  Each simulated device fetches with its
own User-Agent; nginx's access log then shows who fetched what.
"""

from __future__ import annotations

import collections
import concurrent.futures
import re
from pathlib import Path

import pytest

from pvinit.remote import layout
from pvinit.transport.oci import open_remote
from pvinit.update.journal import read_journal
from pvinit.update.machine import UpdateState
from tests.integration import test_fleet_support as support
from tests.integration.test_fleet_support import Release, Server, SimDevice

nginx_remote = support.nginx_remote
FLEET = 20
_LINE = re.compile(r'(\w+) (\S+) "([^"]*)" (\d+) (\d+) "([^"]*)"')


@pytest.fixture
def release(tmp_path: Path) -> Release:
    world = Release(tmp_path / "release")
    assert world.revision(1) == 1
    assert world.revision(2) == 2
    return world


def fetches(server: Server) -> list[tuple[str, str, int, str]]:
    """(path, range, status, user agent) of every GET in nginx's access log."""
    out = []
    for line in server.lines():
        match = _LINE.fullmatch(line)
        assert match is not None, line
        if match[1] == "GET":
            out.append((match[2], match[3], int(match[4]), match[6]))
    return out


def test_twenty_devices_update_at_once_and_each_fetches_an_object_at_most_once(
        release: Release, nginx_remote: tuple[Path, Server], tmp_path: Path) -> None:
    root, server = nginx_remote
    release.publish(1, str(root / "repo"))
    release.publish(2, str(root / "repo"))
    url = f"{server.url}/repo"
    devices = [SimDevice(tmp_path / f"dev{i:02}", release, 1, f"dev{i:02}")
               for i in range(FLEET)]

    def update(device: SimDevice) -> int | None:
        return device.update(open_remote(url, user_agent=device.user_agent))

    with concurrent.futures.ThreadPoolExecutor(max_workers=FLEET) as pool:
        results = list(pool.map(update, devices))
    assert results == [2] * FLEET
    assert [d.current() for d in devices] == [2] * FLEET

    per_device: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter)
    for path, _range, status, agent in fetches(server):
        if path.startswith(("/repo/objects/", "/repo/deltas/")) and status in (200, 206):
            per_device[agent][path] += 1
    assert sorted(per_device) == sorted(d.user_agent for d in devices)
    for agent, counts in per_device.items():
        assert max(counts.values()) == 1, (agent, counts)
    # the changed big blob came as a delta, not whole, on every device
    old, new = release.objects(1)["data/big.bin"], release.objects(2)["data/big.bin"]
    delta = f"/repo/{layout.delta_path(old, new)}"
    assert all(counts[delta] == 1 and counts[f"/repo/{layout.object_path(new)}"] == 0
               for counts in per_device.values())

    # a second poll finds nothing new and downloads nothing but the channel
    before = len(fetches(server))
    assert update(devices[0]) is None
    assert [path for path, *_ in fetches(server)[before:]] == ["/repo/channels/stable"]


def test_an_interrupted_download_resumes_with_a_range_request_and_updates(
        release: Release, nginx_remote: tuple[Path, Server], tmp_path: Path) -> None:
    root, server = nginx_remote
    repo = root / "repo"
    release.publish(1, str(repo))
    release.publish(2, str(repo))
    old, new = release.objects(1)["data/big.bin"], release.objects(2)["data/big.bin"]
    (repo / layout.delta_path(old, new)).unlink()  # the whole object it is, then
    frame = (repo / layout.object_path(new)).read_bytes()
    device = SimDevice(tmp_path / "dev", release, 1, "resumer")
    # what a cut connection leaves behind: half the frame in the device's downloads
    downloads = device.engine.downloads
    downloads.mkdir()
    (downloads / f"{new}.zst").write_bytes(frame[: len(frame) // 2])

    assert device.update(open_remote(f"{server.url}/repo", user_agent=device.user_agent)) == 2
    assert device.current() == 2
    gets = [(r, s) for p, r, s, a in fetches(server)
            if p == f"/repo/{layout.object_path(new)}" and a == device.user_agent]
    assert gets == [(f"bytes={len(frame) // 2}-", 206)]
    journal = read_journal(device.layout, 2)
    assert journal is not None and journal.state is UpdateState.UPDATED

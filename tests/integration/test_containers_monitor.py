"""Who monitors a container: LXC's own ``lxc-start``, not a fork of the Python caller.

python-lxc's ``start()`` forks the calling process to become the
container's monitor, so every monitor was a copy of the supervisor's
interpreter; the driver runs ``lxc-start -d`` instead (issue 3).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_containers_lxc import Bench, bench, console, wait_for
from tests.integration.test_containers_support import pvnotify_binary, rootfs_image

__all__ = ["bench", "pvnotify_binary", "rootfs_image"]  # fixtures used by name

lxc_driver = pytest.importorskip("pvinit.containers.lxc_driver", reason="needs python-lxc")

pytestmark = pytest.mark.root


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def exe_of(pid: int) -> str:
    return os.path.realpath(f"/proc/{pid}/exe")


def signal_masks(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("SigBlk", "SigIgn"):
            fields[key] = int(value.strip(), 16)
    return fields


@pytest.fixture
def caller_blocks_and_ignores_signals() -> Iterator[None]:
    """The caller blocks SIGUSR1 and ignores SIGUSR2, as a careless supervisor might."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    old_handler = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR2, old_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def test_monitor_is_the_lxc_start_binary_not_a_fork_of_the_caller(bench: Bench) -> None:
    if bench.driver.lxc_start is None:
        pytest.fail("lxc-start not found: install Debian's lxc package")
    spec = bench.create(bench.spec("monitored", ("/bin/hello.sh",)))
    pid = bench.driver.start("monitored")
    monitor = parent_of(pid)
    assert exe_of(monitor) == os.path.realpath(bench.driver.lxc_start)
    assert monitor != os.getpid()
    assert wait_for(lambda: "hello from" in console(spec))


def test_container_init_gets_a_clean_signal_state_whatever_the_caller_blocks(
    bench: Bench, caller_blocks_and_ignores_signals: None
) -> None:
    bench.create(bench.spec("clean", ("/bin/hello.sh",)))
    pid = bench.driver.start("clean")
    masks = signal_masks(pid)
    assert masks["SigBlk"] & (1 << (signal.SIGUSR1 - 1)) == 0
    assert masks["SigIgn"] & (1 << (signal.SIGUSR2 - 1)) == 0


def test_without_lxc_start_the_driver_falls_back_to_python_lxc(
    tmp_path: Path, rootfs_image: Path
) -> None:
    driver = lxc_driver.LxcDriver(tmp_path / "lxc", lxc_start=None)
    world = Bench(tmp=tmp_path, image=rootfs_image, driver=driver)
    try:
        spec = world.create(world.spec("fallback", ("/bin/fail7.sh",)))
        driver.start("fallback")
        assert driver.wait_exited("fallback", 10)
        assert driver.exit_status("fallback") == 7
        assert "failing" in console(spec)
    finally:
        for name in world.names:
            driver.destroy(name)
        driver.close()
        for mount in reversed(world.roots):
            mount.unmount()


def test_a_missing_lxc_start_binary_is_an_error_naming_the_container(bench: Bench) -> None:
    missing = bench.tmp / "no-such-lxc-start"
    driver = lxc_driver.LxcDriver(bench.tmp / "lxc", lxc_start=str(missing))
    bench.create(bench.spec("nostart", ("/bin/hello.sh",)))
    with pytest.raises(lxc_driver.ExternalToolError) as caught:
        driver.start("nostart")
    assert caught.value.where == "nostart"
    assert str(missing) in caught.value.message
    assert bench.driver.state("nostart") == "STOPPED"

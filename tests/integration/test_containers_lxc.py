"""Real LXC containers from a squashfs + overlay root (as root, with liblxc)."""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pvinit.containers.notify import NotifyReceiver
from pvinit.containers.spec import BindMount, ContainerSpec
from pvinit.containers.volumes import RootMount, mount_root
from pvinit.errors import BadInputError, BusyError, ExternalToolError, NotFoundError
from pvinit.typecheck import TYPE_CHECKING
from tests.integration.test_containers_support import pvnotify_binary, rootfs_image

__all__ = ["pvnotify_binary", "rootfs_image"]  # fixtures used by name

lxc_driver = pytest.importorskip("pvinit.containers.lxc_driver", reason="needs python-lxc")

if TYPE_CHECKING:
    from pvinit.containers.lxc_driver import LxcDriver

pytestmark = pytest.mark.root


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until true or ``timeout``; the timeout only bounds a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@dataclass
class Bench:
    """One test's world: an lxcpath, a driver, roots mounted from the test image."""

    tmp: Path
    image: Path
    driver: LxcDriver
    roots: list[RootMount] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def root(self, name: str) -> Path:
        """Mount (or remount) ``name``'s root: squashfs + overlay, writes in persist/<name>."""
        mount = mount_root(
            self.image,
            lower=self.tmp / "lower" / name,
            persist=self.tmp / "persist" / name,
            target=self.tmp / "roots" / name,
        )
        self.roots.append(mount)
        return mount.target

    def spec(self, name: str, init: tuple[str, ...], **extra: object) -> ContainerSpec:
        values: dict[str, object] = {
            "name": name,
            "rootfs": self.root(name),
            "init": init,
            "console_log": self.tmp / "logs" / name / "console.log",
        }
        values.update(extra)
        return ContainerSpec(**values)  # type: ignore[arg-type]

    def create(self, spec: ContainerSpec) -> ContainerSpec:
        self.names.append(spec.name)
        self.driver.create(spec)
        return spec


@pytest.fixture
def bench(tmp_path: Path, rootfs_image: Path) -> Iterator[Bench]:
    driver = lxc_driver.LxcDriver(tmp_path / "lxc")
    world = Bench(tmp=tmp_path, image=rootfs_image, driver=driver)
    try:
        yield world
    finally:
        for name in world.names:
            driver.destroy(name)
        driver.close()
        for mount in reversed(world.roots):
            mount.unmount()


def console(spec: ContainerSpec) -> str:
    try:
        return spec.console_log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def test_started_container_runs_with_its_env_bind_mounts_and_console_log(bench: Bench) -> None:
    shared = bench.tmp / "shared"
    shared.mkdir()
    (shared / "msg").write_text("from the host\n")
    spec = bench.create(
        bench.spec(
            "hello",
            ("/bin/hello.sh",),
            env={"FOO": "bar baz"},
            mounts=(BindMount(source=shared, target="/mnt/in", readonly=True),),
        )
    )
    pid = bench.driver.start("hello")
    assert pid > 0
    assert bench.driver.state("hello") == "RUNNING"
    assert bench.driver.init_pid("hello") == pid
    assert Path(f"/proc/{pid}").exists()
    assert wait_for(lambda: "BIND-" in console(spec)), console(spec)
    text = console(spec)
    assert "hello from hello FOO=bar baz" in text
    assert "from the host" in text
    assert "BIND-READONLY" in text
    assert not bench.driver.exited("hello")


def test_ready_arrives_through_the_notify_socket_from_pvnotify(bench: Bench) -> None:
    notify_dir = bench.tmp / "notify" / "svc"
    with NotifyReceiver(notify_dir) as receiver:
        spec = bench.create(bench.spec("svc", ("/bin/ready.sh",), notify_dir=notify_dir))
        bench.driver.start("svc")
        readable, _, _ = select.select([receiver], [], [], 10)
        assert readable, console(spec)
        messages = receiver.poll()
    assert [(m.ready, m.status) for m in messages] == [(True, "serving")]
    assert "notify socket is /run/pvinit/notify" in console(spec)


def test_container_ignoring_sigterm_is_killed_after_grace(bench: Bench) -> None:
    bench.create(bench.spec("stubborn", ("/bin/hello.sh",)))
    bench.driver.start("stubborn")
    bench.driver.stop("stubborn", grace=0.5)
    assert bench.driver.state("stubborn") == "STOPPED"
    assert bench.driver.exited("stubborn")
    assert bench.driver.exit_status("stubborn") == 128 + 9


def test_container_handling_sigterm_stops_cleanly_within_grace(bench: Bench) -> None:
    spec = bench.create(bench.spec("graceful", ("/bin/graceful.sh",)))
    bench.driver.start("graceful")
    assert wait_for(lambda: "up" in console(spec))
    bench.driver.stop("graceful", grace=30)
    assert bench.driver.state("graceful") == "STOPPED"
    assert bench.driver.exit_status("graceful") == 0
    assert "got TERM" in console(spec)


def test_exit_is_signalled_on_the_exit_fd_with_its_status(bench: Bench) -> None:
    spec = bench.create(bench.spec("fails", ("/bin/fail7.sh",)))
    bench.driver.start("fails")
    exit_fd = bench.driver.exit_fd("fails")
    assert exit_fd is not None
    readable, _, _ = select.select([exit_fd], [], [], 10)
    assert readable
    assert bench.driver.exited("fails")
    assert bench.driver.exit_status("fails") == 7
    assert bench.driver.state("fails") == "STOPPED"
    assert "failing" in console(spec)


def test_overlay_upper_dir_keeps_writes_across_restarts_and_remounts(bench: Bench) -> None:
    spec = bench.create(bench.spec("counter", ("/bin/count.sh",)))
    for _ in range(2):
        bench.driver.start("counter")
        assert bench.driver.wait_exited("counter", 10)
        assert bench.driver.exit_status("counter") == 0
    bench.roots.pop().unmount()
    bench.create(bench.spec("counter", ("/bin/count.sh",)))
    bench.driver.start("counter")
    assert bench.driver.wait_exited("counter", 10)
    assert bench.driver.exit_status("counter") == 0
    assert [line for line in console(spec).split() if line.startswith("count=")] == [
        "count=1",
        "count=2",
        "count=3",
    ]


def test_missing_init_binary_is_an_error_naming_container_and_reason(bench: Bench) -> None:
    bench.create(bench.spec("noinit", ("/bin/nope",)))
    with pytest.raises(ExternalToolError) as caught:
        bench.driver.start("noinit")
    assert caught.value.where == "noinit"
    assert "Failed to exec" in caught.value.message
    assert "/bin/nope" in caught.value.message
    assert bench.driver.state("noinit") == "STOPPED"


def test_unknown_lxc_key_is_refused_at_start_naming_container_and_key(bench: Bench) -> None:
    bench.create(bench.spec("badkey", ("/bin/hello.sh",), lxc_keys={"lxc.bogus.key": "1"}))
    with pytest.raises(BadInputError) as caught:
        bench.driver.start("badkey")
    assert caught.value.where == "badkey: lxc lxc.bogus.key"
    assert "Unsupported config key" in caught.value.message
    assert bench.driver.state("badkey") == "STOPPED"


def test_bad_lxc_key_value_is_refused_at_start_naming_the_key(bench: Bench) -> None:
    keys = {"lxc.signal.halt": "SIGNOPE"}
    bench.create(bench.spec("badvalue", ("/bin/hello.sh",), lxc_keys=keys))
    started = bench.driver.start_all(["badvalue"])
    error = started["badvalue"]
    assert isinstance(error, BadInputError)
    assert error.where == "badvalue: lxc lxc.signal.halt"
    assert "SIGNOPE" in error.message


def test_redefining_a_container_another_driver_runs_is_refused(bench: Bench) -> None:
    spec = bench.create(bench.spec("theirs", ("/bin/hello.sh",)))
    bench.driver.start("theirs")
    later = lxc_driver.LxcDriver(bench.tmp / "lxc")
    with pytest.raises(BusyError):
        later.create(spec)


def test_extra_keys_override_generated_ones(bench: Bench) -> None:
    spec = bench.create(
        bench.spec("renamed", ("/bin/hello.sh",), lxc_keys={"lxc.uts.name": "other-host"})
    )
    bench.driver.start("renamed")
    assert wait_for(lambda: "hello from" in console(spec))
    assert "hello from other-host" in console(spec)


def test_destroy_forgets_the_container_but_keeps_its_root(bench: Bench) -> None:
    spec = bench.create(bench.spec("gone", ("/bin/hello.sh",)))
    bench.driver.start("gone")
    bench.driver.destroy("gone")
    assert not (bench.tmp / "lxc" / "gone").exists()
    assert (spec.rootfs / "bin" / "busybox").is_file()
    with pytest.raises(NotFoundError):
        bench.driver.start("gone")


def test_a_restarted_driver_can_stop_what_an_earlier_one_started(bench: Bench) -> None:
    bench.create(bench.spec("adopted", ("/bin/hello.sh",)))
    pid = bench.driver.start("adopted")
    later = lxc_driver.LxcDriver(bench.tmp / "lxc")
    assert later.state("adopted") == "RUNNING"
    assert later.init_pid("adopted") == pid
    assert later.exit_fd("adopted") is None
    later.stop("adopted", grace=0.3)
    assert later.state("adopted") == "STOPPED"
    assert bench.driver.exit_status("adopted") == 128 + 9


def test_starting_a_running_container_is_refused(bench: Bench) -> None:
    spec = bench.create(bench.spec("twice", ("/bin/hello.sh",)))
    bench.driver.start("twice")
    with pytest.raises(BusyError) as caught:
        bench.driver.start("twice")
    assert caught.value.where == "twice"
    with pytest.raises(BusyError):
        bench.driver.create(spec)

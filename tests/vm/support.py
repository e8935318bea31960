"""Driving the VM from tests: build the image, boot it with ``tools/vm``, read its console.

Not a test module: the VM tests import it.  Everything goes through the
same commands a person uses (``images/vm/build``, ``tools/vm boot``,
``tools/vm shutdown``), so the tests also test those.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
VM_TOOL = REPO / "tools" / "vm"
VM_BUILD = REPO / "images" / "vm" / "build"
VENV_BIN = Path(sys.executable).parent


def load_vm_tool() -> ModuleType:
    """``tools/vm`` as a module (it has no ``.py`` name), for its pure functions."""
    loader = importlib.machinery.SourceFileLoader("pvinit_tools_vm", str(VM_TOOL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up here
    loader.exec_module(module)
    return module


@dataclass(frozen=True)
class DefaultState:
    """What the default device state promises: groups with goals, containers with goals."""

    groups: tuple[tuple[str, str], ...]
    containers: tuple[tuple[str, str], ...]

    @classmethod
    def from_checkout(cls, state_dir: Path) -> DefaultState:
        device = json.loads((state_dir / "device.json").read_text())
        groups = tuple((g["name"], g["status_goal"]) for g in device["groups"])
        containers = []
        for run_json in sorted(state_dir.glob("*/run.json")):
            run = json.loads(run_json.read_text())
            if run.get("type") == "lxc":
                containers.append((run["name"], run.get("status_goal", "STARTED")))
        return cls(groups, tuple(containers))


def export_factory_bundle(out: Path) -> Path:
    """The default state's HEAD as a bundle; builds the state first if it is missing."""
    pvstate = str(VENV_BIN / "pvstate")
    argv = [pvstate, "-C", str(REPO / "state"), "export", "HEAD", "-o", str(out)]
    if subprocess.run(argv, capture_output=True, check=False).returncode != 0:
        subprocess.run([str(REPO / "tools" / "build-default-state")], check=True,
                       capture_output=True, timeout=1800)  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True)
    return out


BSP_OUT = REPO / "bsp" / "out"
RELEASE_KEY = "release-test"
"""Stem of the test release key in the build dir: made once, reused, so the image stays cached."""


def release_key(build_dir: Path) -> tuple[Path, Path]:
    """The test release key pair and the device trust file naming it (made on first use)."""
    from pvinit.signing.keys import SigningKey, load_signing_key, save_keypair
    from pvinit.signing.trust import TrustPolicy

    stem = build_dir / RELEASE_KEY
    key_path = stem.with_suffix(".key")
    trust = build_dir / "trust.json"
    if not key_path.is_file():
        build_dir.mkdir(parents=True, exist_ok=True)
        save_keypair(stem, SigningKey.generate())
    key = load_signing_key(key_path)
    policy = TrustPolicy.from_keys([(key.public, "vm-test")], threshold=1)
    if not trust.is_file() or trust.read_bytes() != policy.to_json():
        trust.write_bytes(policy.to_json())
    return key_path, trust


def build_image(out_dir: Path, factory: Path | None, log: Path, *, ota: bool = True) -> None:
    """``images/vm/build``: a no-op when nothing it is made from changed.

    ``ota``: the device every VM test uses: the BSP's kernel (so a revision's
    kernel boots with the image's initrd) and the test release key trusted.
    """
    argv = [str(VM_BUILD), "--out", str(out_dir)]
    if factory is not None:
        argv += ["--factory", str(factory)]
    if ota and (BSP_OUT / "version").is_file():
        argv += ["--bsp", str(BSP_OUT), "--trust", str(release_key(out_dir)[1])]
    with log.open("w") as handle:
        result = subprocess.run(
            argv, stdout=handle, stderr=subprocess.STDOUT, timeout=1800, check=False
        )
    if result.returncode != 0:
        raise AssertionError(f"images/vm/build failed ({result.returncode}):\n{log.read_text()}")


def debugfs_cat(disk: Path, path: str) -> str:
    """A file from the guest's ext4 disk, read without mounting it (e2fsprogs)."""
    result = subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(disk)], capture_output=True, text=True, check=True
    )
    return result.stdout


class VmRun:
    """One ``tools/vm boot`` in the background; its console collected line by line."""

    def __init__(self, build_dir: Path, disk: Path, timeout: float = 900.0,
                 append: str = "") -> None:
        # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be too deep.
        self._sock_dir = tempfile.TemporaryDirectory(prefix="pvvm", dir="/tmp")
        self.qmp = Path(self._sock_dir.name) / "qmp"
        argv = [sys.executable, str(VM_TOOL), "--build-dir", str(build_dir), "boot",
                "--disk", str(disk), "--qmp", str(self.qmp), "--timeout", str(timeout)]  # fmt: skip
        if append:
            argv += ["--append", append]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.times: list[float] = []
        """Seconds since the launcher started at which each line arrived (for reports only)."""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self.times.append(time.monotonic() - self.started)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, within: float) -> re.Match[str]:
        """The first console line matching ``pattern``; fails on a deadline or a dead VM."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + within
        seen = 0
        with self._changed:  # an RLock: self.text may take it again
            while True:
                for line in self.lines[seen:]:
                    if found := regex.search(line):
                        return found
                seen = len(self.lines)
                if not self._reader.is_alive():
                    raise AssertionError(f"VM ended before {pattern!r}:\n{self.text}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {pattern!r} within {within}s:\n{self.text}")
                self._changed.wait(min(remaining, 1.0))

    def seconds_to(self, pattern: str) -> float | None:
        """When the first line matching ``pattern`` arrived (s after start); for reports only."""
        regex = re.compile(pattern)
        with self._changed:
            return next((t for line, t in zip(self.lines, self.times, strict=True)
                         if regex.search(line)), None)  # fmt: skip

    def shutdown(self) -> None:
        """Ask pvinit for its orderly shutdown (``tools/vm shutdown``: Ctrl-Alt-Del)."""
        subprocess.run(
            [sys.executable, str(VM_TOOL), "shutdown", "--qmp", str(self.qmp)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def finish(self, within: float) -> int:
        """QEMU's launcher's exit status; a VM still running then is killed (a power cut)."""
        try:
            code = self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait()
        self._reader.join(timeout=10)
        self._sock_dir.cleanup()
        return code

    def qemu_pids(self) -> list[int]:
        """QEMU processes this launcher started, newest last (``vm: qemu pid N`` lines)."""
        with self._changed:
            return [int(m.group(1)) for line in self.lines
                    if (m := re.match(r"vm: qemu pid (\d+)$", line))]  # fmt: skip

    def power_cut(self) -> int | None:
        """SIGKILL the running QEMU (the launcher then ends: a killed QEMU is not a reboot)."""
        import os
        import signal

        pids = self.qemu_pids()
        if not pids:
            return None
        try:  # a QEMU that already exited (a zombie until reaped) would take the signal in vain
            with open(f"/proc/{pids[-1]}/stat", encoding="ascii") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return None
        except (OSError, IndexError):
            return None
        try:
            os.kill(pids[-1], signal.SIGKILL)
        except ProcessLookupError:
            return None
        return pids[-1]

    def kill(self) -> None:
        """Stop the launcher (SIGTERM: it kills QEMU on its way out)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._sock_dir.cleanup()


def device_change_bundle(out: Path, key_path: Path, *, revision: int = 2,
                         stable_timeout: int | None = None) -> Path:  # fmt: skip
    """A signed bundle of the default state's HEAD with device.json changed: a reboot update.

    Built like ``tests/integration/test_update_device.py``'s ``Updater.bundle``:
    the same objects (so only the state changes), one group's timeout
    raised by a second, parent = HEAD's envelope, signed with the test key.
    ``stable_timeout``: every container's ``auto_recovery.stable_timeout`` in
    the new revision (the default state's 30 s make a try's testing last
    that long; the power-cut test wants many updates, not long ones).
    """
    from datetime import UTC, datetime

    from pvinit.bundle.writer import write_bundle
    from pvinit.checkout.checkout import Checkout
    from pvinit.signing.envelope import Envelope
    from pvinit.signing.keys import load_signing_key
    from pvinit.signing.trust import sign_envelope
    from pvinit.state.canonical import canonical_bytes

    checkout = Checkout(REPO / "state")
    head = checkout.revisions.load(checkout.revisions.resolve("HEAD"))
    entries = json.loads(head.state.canonical_bytes())
    groups = entries["device.json"]["groups"]
    groups[-1]["timeout"] = groups[-1]["timeout"] + revision
    if stable_timeout is not None:
        for name, entry in entries.items():
            recovery = entry.get("auto_recovery") if name.endswith("/run.json") else None
            if isinstance(recovery, dict) and "stable_timeout" in recovery:
                recovery["stable_timeout"] = stable_timeout
    state_bytes = canonical_bytes(entries)
    envelope = Envelope.create(
        revision=revision, parent=head.envelope.digest, state_bytes=state_bytes,
        sizes=dict(head.envelope.sizes), created=datetime(2026, 1, 2, tzinfo=UTC),
        message=f"vm test: device.json change (revision {revision})",
    )  # fmt: skip
    envelope = sign_envelope(envelope, load_signing_key(key_path))
    write_bundle(out, envelope=envelope, state_bytes=state_bytes, store=checkout.store,
                 object_ids=sorted(envelope.sizes))  # fmt: skip
    return out


def debugfs_put(disk: Path, directory: str, source: Path, name: str) -> None:
    """Write ``source`` into the guest disk as ``directory/name`` (mkdir -p), without mounting."""
    parts = [p for p in directory.split("/") if p]
    script = "".join(f"mkdir /{'/'.join(parts[: i + 1])}\n" for i in range(len(parts)))
    script += f"cd {directory}\nrm {name}\nwrite {source} {name}\n"
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as cmds:
        cmds.write(script)
        cmds.flush()
        subprocess.run(["debugfs", "-w", "-f", cmds.name, str(disk)], capture_output=True,
                       check=True)  # fmt: skip


def fresh_disk(built: Path, dest: Path) -> Path:
    """A sparse copy of a built disk: a fresh device."""
    subprocess.run(["cp", "--sparse=always", str(built), str(dest)], check=True)
    return dest


def guest_env(disk: Path, work: Path) -> dict[str, str]:
    """The guest's U-Boot environment, read as the bootloader reads it (debugfs + fw_printenv)."""
    vm = sys.modules.get("pvinit_tools_vm") or load_vm_tool()
    guest = vm.GuestDisk(disk)
    guest.replay_journal()
    work.mkdir(parents=True, exist_ok=True)
    image = vm.UBootImage(work)
    if not guest.dump("/storage/boot/uboot.env", image.image):
        return {}
    values: dict[str, str] = image.printenv()
    return values

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


def build_image(out_dir: Path, factory: Path | None, log: Path) -> None:
    """``images/vm/build``: a no-op when nothing it is made from changed."""
    argv = [str(VM_BUILD), "--out", str(out_dir)]
    if factory is not None:
        argv += ["--factory", str(factory)]
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

    def __init__(self, build_dir: Path, disk: Path, timeout: float = 900.0) -> None:
        # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be too deep.
        self._sock_dir = tempfile.TemporaryDirectory(prefix="pvvm", dir="/tmp")
        self.qmp = Path(self._sock_dir.name) / "qmp"
        argv = [sys.executable, str(VM_TOOL), "--build-dir", str(build_dir), "boot",
                "--disk", str(disk), "--qmp", str(self.qmp), "--timeout", str(timeout)]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
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

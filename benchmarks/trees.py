"""Test trees and real kernel pairs shared by the update benchmarks.

``update_size`` (bytes on the wire) and ``update_time`` (apply and rollback
time) measure the same four changes, so they build them here, one way:

- a deterministic root filesystem (:func:`build_tree`): busybox, real shared
  libraries copied from the build host, seeded random blobs and seeded text,
  so compressors and delta tools see data with the mix of a real rootfs
  rather than all-random or all-zero bytes;
- (a) :func:`change_one_file`: one line of one text file replaced;
- (b) :func:`change_many_files`: a "library upgrade": ~5% of the files get
  patched regions and one shifting insertion each (offsets move, which is
  what defeats naive block diffs);
- (c) a new container: another :func:`build_tree` with other libraries and
  other seeds, so it shares nothing by accident with the first;
- (d) :func:`kernel_pair`: two *real* consecutive Debian cloud kernels
  (``linux-image-6.1.0-N-cloud-amd64``: the one ``linux-image-cloud-amd64``
  depends on, which is what ``bsp/gather.py`` ships, and the previous ABI),
  unpacked and squashed exactly like ``bsp/gather.py`` does, so the BSP
  objects are the ones a device would really hold.

The kernels are cached under ``build/cache/kernels`` (``.deb`` files checked
against apt's SHA256, and the gathered BSP directories): gathering is
deterministic, so reusing a gathered directory gives the same bytes as
gathering again, and a benchmark run does not pay for two downloads.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bsp.gather import (
    FIRMWARE_PACKAGE,
    KERNEL_METAPACKAGE,
    DebPackage,
    download,
    extract,
    parse_depends,
    parse_show,
)
from pvinit.build.squashfs import make_squashfs

from .context import REPO

LIB_DIR = Path("/usr/lib/x86_64-linux-gnu")
WORDS = [
    "device", "sensor", "update", "revision", "container", "object", "delta", "state", "kernel",
    "module", "firmware", "rollback", "commit", "signature", "channel", "network", "volume",
    "config", "service", "log", "error", "warning", "info", "debug", "timeout", "retry", "value",
    "table", "index",
]
#: Where downloaded kernel packages and the BSP directories gathered from them are kept.
KERNEL_CACHE = REPO / "build" / "cache" / "kernels"
_KERNEL_NAME = re.compile(r"^linux-image-(\d+\.\d+\.\d+)-(\d+)-cloud-amd64$")


# -- root filesystems --------------------------------------------------------------
def _real_libraries(budget: int, *, from_end: bool = False) -> list[Path]:
    """Regular .so files of the host, sorted by name (or from the end), until ``budget`` bytes."""
    chosen: list[Path] = []
    total = 0
    for path in sorted(LIB_DIR.rglob("*.so*"), reverse=from_end):
        if path.is_symlink() or not path.is_file():
            continue
        size = path.stat().st_size
        if size > 4 << 20 or size < 4096:
            continue
        chosen.append(path)
        total += size
        if total >= budget:
            break
    return chosen


def _text(rng: random.Random, size: int) -> bytes:
    lines: list[str] = []
    total = 0
    while total < size:
        line = f"{rng.randrange(100000):05} " + " ".join(rng.choice(WORDS) for _ in range(9))
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()


def build_tree(root: Path, size_mb: float, rng: random.Random, *, prefix: str = "") -> None:
    """busybox + ~45% real libraries + ~15% random + the rest text, about ``size_mb`` MiB.

    ``prefix`` names every file differently and takes the libraries from the
    other end of the sorted list: a second tree built with it (a new
    container) shares no file with the first.
    """
    budget = int(size_mb * (1 << 20))
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "usr/lib", "usr/share/doc",
              "var/lib/data"):
        (root / d).mkdir(parents=True, exist_ok=True)
    busybox = root / "bin" / "busybox"
    if not busybox.exists():
        shutil.copy("/bin/busybox", busybox)
    for applet in ("sh", "ls", "cat", "sleep", "mount"):
        if not (root / "bin" / applet).is_symlink() and not (root / "bin" / applet).exists():
            (root / "bin" / applet).symlink_to("busybox")
    libs = _real_libraries(budget * 45 // 100, from_end=bool(prefix))
    for lib in libs:
        shutil.copy(lib, root / "usr/lib" / f"{prefix}{lib.name}")
    used = sum((root / "usr/lib" / f"{prefix}{lib.name}").stat().st_size for lib in libs)
    random_budget = budget * 15 // 100
    done = 0
    i = 0
    while done < random_budget:
        size = rng.randrange(4 << 10, 256 << 10)
        (root / "var/lib/data" / f"{prefix}blob{i:04}.bin").write_bytes(rng.randbytes(size))
        done += size
        i += 1
    text_budget = max(0, budget - used - done)
    done, i = 0, 0
    while done < text_budget:
        size = rng.randrange(1 << 10, 64 << 10)
        (root / "usr/share/doc" / f"{prefix}doc{i:04}.txt").write_bytes(_text(rng, size))
        done += size
        i += 1
    (root / "etc" / "hostname").write_text("device\n")


def regular_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (what a tool wrote there)."""
    return sum(p.lstat().st_size for p in regular_files(path))


def copy_tree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, symlinks=True)


def change_one_file(root: Path) -> str:
    """Edit one mid-size text file: one line replaced (a config or script update)."""
    docs = sorted(p for p in (root / "usr/share/doc").iterdir() if p.suffix == ".txt")
    target = docs[len(docs) // 2]
    lines = target.read_bytes().split(b"\n")
    lines[len(lines) // 2] = b"00000 this line was changed by the update"
    target.write_bytes(b"\n".join(lines))
    return str(target.relative_to(root))


def change_many_files(root: Path, rng: random.Random, fraction: float = 0.05) -> int:
    """A "library upgrade": ``fraction`` of the files get patched regions and a shifting insert.

    Files under ``bin/`` (busybox, the init scripts of a runnable rootfs) are left alone.
    """
    files = [p for p in regular_files(root) if p.relative_to(root).parts[0] != "bin"]
    chosen = rng.sample(files, max(1, int(len(files) * fraction)))
    for path in chosen:
        data = bytearray(path.read_bytes())
        for offset in range(0, len(data), 64 << 10):
            at = offset + rng.randrange(0, max(1, min(64 << 10, len(data) - offset)))
            data[at:at + 256] = rng.randbytes(min(256, len(data) - at))
        insert_at = rng.randrange(0, max(1, len(data)))
        data[insert_at:insert_at] = rng.randbytes(rng.randrange(16, 512))
        path.write_bytes(bytes(data))
    return len(chosen)


# -- real kernels --------------------------------------------------------------------
@dataclass(frozen=True)
class KernelBsp:
    """One gathered BSP: ``kernel.img``, ``modules/``, ``firmware/`` and their squashfs."""

    package: DebPackage
    #: The kernel release (``6.1.0-56-cloud-amd64``), the directory under ``modules/``.
    release: str
    root: Path

    @property
    def label(self) -> str:
        return f"{self.package.name} {self.package.version}"

    def objects(self) -> dict[str, Path]:
        """The files ``bsp/run.json`` names, as a revision holds them (``bsp/<name>``)."""
        return {"kernel.img": self.root / "kernel.img",
                "modules.squashfs": self.root / "modules.squashfs",
                "firmware.squashfs": self.root / "firmware.squashfs"}

    def link_tree(self, dest: Path) -> None:
        """The BSP as files, the way a file-based updater (OSTree, casync) would hold it.

        ``boot/vmlinuz-<release>``, ``lib/modules/<release>/...``,
        ``lib/firmware/...``; hard links into the cache, so it costs nothing.
        """
        (dest / "boot").mkdir(parents=True, exist_ok=True)
        os.link(self.root / "kernel.img", dest / "boot" / f"vmlinuz-{self.release}")
        (dest / "lib").mkdir(parents=True, exist_ok=True)
        for part in ("modules", "firmware"):
            subprocess.run(["cp", "-al", str(self.root / part), str(dest / "lib" / part)],
                           check=True)


def _apt(*argv: str) -> str:
    result = subprocess.run(["apt-cache", *argv], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"apt-cache {' '.join(argv)}: {result.stderr.strip()[-500:]}")
    return result.stdout


def _abi(name: str) -> int | None:
    match = _KERNEL_NAME.match(name)
    return int(match.group(2)) if match else None


def kernel_pair_packages() -> tuple[DebPackage, DebPackage]:
    """(previous, current) cloud kernel packages in this machine's apt index.

    Current is what ``linux-image-cloud-amd64`` depends on (the kernel
    ``bsp/gather.py`` ships); previous is the highest ABI below it that apt
    knows (bookworm keeps each security update's ABI package installable):
    a device updating from one to the other gets a real kernel security update.
    """
    current = parse_depends(_apt("depends", KERNEL_METAPACKAGE), "linux-image-")
    current_abi = _abi(current)
    if current_abi is None:
        raise RuntimeError(f"{KERNEL_METAPACKAGE} depends on {current}, not a cloud kernel")
    names = [line.split(" - ", 1)[0].strip() for line in
             _apt("search", "--names-only", r"^linux-image-[0-9.]+-[0-9]+-cloud-amd64$")
             .splitlines()]
    older = sorted((abi, name) for name in names
                   if (abi := _abi(name)) is not None and abi < current_abi)
    if not older:
        raise RuntimeError(f"apt knows no cloud kernel older than {current}")
    previous = older[-1][1]
    return (parse_show(_apt("show", "--no-all-versions", previous), previous),
            parse_show(_apt("show", "--no-all-versions", current), current))


def gather_kernel(package: DebPackage, firmware: DebPackage,
                  cache: Path = KERNEL_CACHE) -> KernelBsp:
    """The BSP of ``package`` as ``bsp/gather.py`` builds it, from the cache when gathered before.

    Same steps as ``bsp/gather.py`` (``dpkg-deb -x``, ``depmod -b``,
    reproducible squashfs), into ``cache/bsp/<package>_<version>`` by rename
    when complete; a ``.deb`` already under ``bsp/out/cache`` is reused
    (``download`` checks its SHA256 either way).
    """
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for pkg in (package, firmware):
        seeded = REPO / "bsp" / "out" / "cache" / pkg.deb_name
        if not (debs / pkg.deb_name).exists() and seeded.is_file():
            shutil.copyfile(seeded, debs / pkg.deb_name)
    final = cache / "bsp" / f"{package.name}_{package.version}"
    done = final / "packages.json"
    if done.is_file():
        release = json.loads(done.read_text())["kernel_version"]
        return KernelBsp(package=package, release=str(release), root=final)
    kernel_deb = download(package, debs)
    firmware_deb = download(firmware, debs)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gather.", dir=final.parent) as scratch:
        work = Path(scratch)
        extract(kernel_deb, work / "kernel")
        extract(firmware_deb, work / "firmware")
        modules = next(p for p in (work / "kernel/lib/modules", work / "kernel/usr/lib/modules")
                       if p.is_dir())
        releases = sorted(p.name for p in modules.iterdir() if p.is_dir())
        if len(releases) != 1:
            raise RuntimeError(f"expected one kernel release in {kernel_deb.name}: {releases}")
        release = releases[0]
        out = work / "out"
        (out / "depmod" / "lib").mkdir(parents=True)
        modules.rename(out / "depmod" / "lib" / "modules")
        subprocess.run(["depmod", "-b", str(out / "depmod"), release], check=True)
        (out / "depmod" / "lib" / "modules").rename(out / "modules")
        firmware_dir = next(p for p in (work / "firmware/lib/firmware",
                                        work / "firmware/usr/lib/firmware") if p.is_dir())
        firmware_dir.rename(out / "firmware")
        (work / "kernel" / "boot" / f"vmlinuz-{release}").rename(out / "kernel.img")
        shutil.rmtree(out / "depmod")
        make_squashfs(out / "modules", out / "modules.squashfs")
        make_squashfs(out / "firmware", out / "firmware.squashfs")
        (out / "packages.json").write_text(json.dumps(
            {"kernel_version": release, "packages": [package.to_dict(), firmware.to_dict()]},
            indent=2, sort_keys=True) + "\n")
        out.rename(final)
    return KernelBsp(package=package, release=release, root=final)


def kernel_pair(cache: Path = KERNEL_CACHE) -> tuple[KernelBsp, KernelBsp]:
    """(previous, current) real kernel BSPs, gathered or from the cache; raises when impossible."""
    previous, current = kernel_pair_packages()
    firmware = parse_show(_apt("show", "--no-all-versions", FIRMWARE_PACKAGE), FIRMWARE_PACKAGE)
    return gather_kernel(previous, firmware, cache), gather_kernel(current, firmware, cache)

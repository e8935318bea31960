#!/usr/bin/env python3
"""Gather the default BSP from Debian's packages (no build, only apt).

    python3 bsp/gather.py OUTDIR [--cache DIR] [--no-squashfs]

writes into OUTDIR:

* ``kernel.img``  the cloud kernel's vmlinuz (a bzImage);
* ``modules/``    its modules, as mounted at /lib/modules (``<version>/...``,
                  with the depmod index, since the image is read-only);
* ``firmware/``   Debian's firmware-linux-free, as mounted at /lib/firmware;
* ``version``     the kernel version (``6.1.0-56-cloud-amd64``);
* ``packages.json`` the exact Debian packages used (name, version, sha256 of
                  the .deb): what is needed to gather identical bytes again;
* ``modules.squashfs`` and ``firmware.squashfs`` (reproducible; skip them
  with ``--no-squashfs``), the objects ``bsp/run.json`` names.

The kernel is whatever ``linux-image-cloud-amd64`` depends on today; nothing
is pinned by hand.  The same package versions give the same digests, since
every step (dpkg-deb -x, depmod, mksquashfs with fixed times) is
deterministic.  Downloaded .debs are kept in the cache (``bsp/out/cache``)
and checked against the SHA256 apt knows before they are used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pvinit import durable  # noqa: E402 - needs the path above
from pvinit.build.squashfs import make_squashfs  # noqa: E402
from pvinit.errors import (  # noqa: E402
    BadInputError,
    ExternalToolError,
    IntegrityError,
    NotFoundError,
    PvError,
)

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
FIRMWARE_PACKAGE = "firmware-linux-free"
DEFAULT_CACHE = HERE / "out" / "cache"


@dataclass(frozen=True)
class DebPackage:
    """One Debian binary package as apt's index describes it."""

    name: str
    version: str
    architecture: str
    sha256: str

    @property
    def deb_name(self) -> str:
        """The file name ``apt-get download`` gives it (an epoch's ':' is '%3a')."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version,
                "architecture": self.architecture, "sha256": self.sha256}


def _run(argv: list[str], *, cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ExternalToolError(f"cannot run {argv[0]}: {exc}", where=argv[0]) from exc
    if result.returncode != 0:
        raise ExternalToolError(
            f"{' '.join(argv)} exited with status {result.returncode}: "
            f"{result.stderr.strip()[-1500:]}",
            where=argv[0],
        )
    return result.stdout


def parse_depends(output: str, prefix: str) -> str:
    """The first ``Depends:`` of ``apt-cache depends`` output that starts with ``prefix``."""
    for line in output.splitlines():
        match = re.match(r"\s*\|?Depends:\s*(\S+)", line)
        if match and match.group(1).startswith(prefix):
            return match.group(1)
    raise NotFoundError(f"no dependency starting with {prefix!r}", where=KERNEL_METAPACKAGE)


def parse_show(output: str, name: str) -> DebPackage:
    """A DebPackage from ``apt-cache show --no-all-versions`` output."""
    fields: dict[str, str] = {}
    for line in output.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep and not line.startswith(" "):
            fields[key] = value.strip()
    try:
        return DebPackage(name=fields["Package"], version=fields["Version"],
                          architecture=fields["Architecture"], sha256=fields["SHA256"])
    except KeyError as exc:
        raise NotFoundError(f"apt has no {exc.args[0]} for the package", where=name) from exc


def resolve(name: str) -> DebPackage:
    """What apt would install for ``name`` now."""
    return parse_show(_run(["apt-cache", "show", "--no-all-versions", name]), name)


def download(package: DebPackage, cache: Path) -> Path:
    """The package's .deb in ``cache``, downloaded if missing, always checked."""
    durable.makedirs(cache)
    deb = cache / package.deb_name
    if not deb.is_file():
        _run(["apt-get", "download", "-q", f"{package.name}={package.version}"], cwd=cache)
        if not deb.is_file():
            raise NotFoundError("apt-get download did not produce the .deb", where=str(deb))
    digest = hashlib.sha256()
    with deb.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != package.sha256:
        raise IntegrityError(
            f"sha256 {digest.hexdigest()} does not match apt's {package.sha256}",
            where=str(deb), hint="delete the file and run again",
        )
    return deb


def extract(deb: Path, dest: Path) -> None:
    _run(["dpkg-deb", "-x", str(deb), str(dest)])


def _lib_dir(root: Path, name: str) -> Path:
    """``lib/<name>`` of an unpacked package, wherever (usr-merged or not) it is."""
    for candidate in (root / "lib" / name, root / "usr" / "lib" / name):
        if candidate.is_dir():
            return candidate
    raise BadInputError(f"package has no lib/{name} directory", where=str(root))


def gather(outdir: Path, cache: Path, *, squashfs: bool = True) -> dict[str, object]:
    """Gather the BSP into ``outdir``; return what was used (packages.json)."""
    kernel_name = parse_depends(_run(["apt-cache", "depends", KERNEL_METAPACKAGE]),
                                "linux-image-")
    kernel_pkg = resolve(kernel_name)
    firmware_pkg = resolve(FIRMWARE_PACKAGE)
    kernel_deb = download(kernel_pkg, cache)
    firmware_deb = download(firmware_pkg, cache)

    durable.makedirs(outdir)
    with tempfile.TemporaryDirectory(prefix=".gather.", dir=outdir) as scratch:
        work = Path(scratch)
        extract(kernel_deb, work / "kernel")
        extract(firmware_deb, work / "firmware")
        modules = _lib_dir(work / "kernel", "modules")
        versions = sorted(p.name for p in modules.iterdir() if p.is_dir())
        if len(versions) != 1:
            raise BadInputError(f"expected one kernel version, found {versions}",
                                where=kernel_deb.name)
        version = versions[0]
        vmlinuz = work / "kernel" / "boot" / f"vmlinuz-{version}"
        if not vmlinuz.is_file():
            raise BadInputError(f"no boot/vmlinuz-{version}", where=kernel_deb.name)
        # depmod wants BASE/lib/modules/<version>: give it a base of our own
        depmod_base = work / "depmod"
        (depmod_base / "lib").mkdir(parents=True)
        modules.rename(depmod_base / "lib" / "modules")
        _run(["depmod", "-b", str(depmod_base), version])

        _replace_tree(depmod_base / "lib" / "modules", outdir / "modules")
        _replace_tree(_lib_dir(work / "firmware", "firmware"), outdir / "firmware")
        with vmlinuz.open("rb") as src, durable.save_file(outdir / "kernel.img",
                                                           name="bsp.kernel") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    durable.write_file(outdir / "version", f"{version}\n".encode(), name="bsp.version")
    used: dict[str, object] = {
        "kernel_version": version,
        "packages": [kernel_pkg.to_dict(), firmware_pkg.to_dict()],
    }
    durable.write_file(outdir / "packages.json",
                       (json.dumps(used, indent=2, sort_keys=True) + "\n").encode(),
                       name="bsp.packages")
    if squashfs:
        make_squashfs(outdir / "modules", outdir / "modules.squashfs")
        make_squashfs(outdir / "firmware", outdir / "firmware.squashfs")
    return used


def depmod_available() -> bool:
    return shutil.which("depmod") is not None or Path("/usr/sbin/depmod").exists()


def _replace_tree(src: Path, dest: Path) -> None:
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    src.rename(dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="where downloaded .debs are kept (default: %(default)s)")
    parser.add_argument("--no-squashfs", action="store_true",
                        help="skip modules.squashfs and firmware.squashfs")
    args = parser.parse_args(argv)
    try:
        if not depmod_available():
            raise ExternalToolError("depmod is not installed", where="depmod",
                                    hint="apt-get install kmod")
        used = gather(args.outdir, args.cache, squashfs=not args.no_squashfs)
    except PvError as exc:
        print(f"bsp/gather.py: {exc}", file=sys.stderr)
        return exc.exit_code
    for name in ("kernel.img", "modules.squashfs", "firmware.squashfs"):
        path = args.outdir / name
        if path.exists():
            print(f"{name}: {path.stat().st_size} bytes")
    print(f"version: {used['kernel_version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

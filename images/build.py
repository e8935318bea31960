#!/usr/bin/env python3
"""Build the default container images as rootfs trees (and squashfs images).

    python3 images/build.py OUTDIR [NAME...] [--squashfs]

creates ``OUTDIR/<name>/`` for each image (all of them when no NAME is
given), and with ``--squashfs`` also ``OUTDIR/<name>.squashfs``.  Every image
is Debian's busybox-static with its applet links, a minimal ``/etc``, the
empty mount points LXC needs, and the image's own files from
``images/<name>/files/``.  Nothing is fetched from the network.

The output is deterministic: the same inputs (busybox binary, gcc, the files
in this directory) give identical trees on every run, with fixed modes and
all timestamps at 0, and so identical squashfs bytes and object ids.
Only the standard library and pvinit are used, so it runs with the
system's python3 from a checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pvinit.build.squashfs import make_squashfs  # noqa: E402 - needs the path above
from pvinit.errors import BadInputError, ExternalToolError, PvError  # noqa: E402

DEFAULT_BUSYBOX = Path("/bin/busybox")
PVNOTIFY_SOURCE = HERE / "common" / "pvnotify.c"

#: Empty directories every image has: mount points for LXC and writable places.
EMPTY_DIRS = ("dev", "etc", "proc", "root", "run", "sys", "tmp", "var")
USERS = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUPS = "root:x:0:\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class Recipe:
    """What goes into one image beyond the common busybox base."""

    name: str
    #: Whether the image gets bin/pvnotify (it signals READY over sd_notify).
    pvnotify: bool = False

    @property
    def files(self) -> Path:
        return HERE / self.name / "files"


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("platform"),
        Recipe("sensor", pvnotify=True),
        Recipe("dashboard"),
    )
}


def busybox_applets(busybox: Path) -> list[str]:
    """The applet paths (``bin/sh``, ``usr/bin/env``...) this busybox provides, sorted."""
    try:
        listing = subprocess.run(
            [str(busybox), "--list-full"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ExternalToolError(
            f"cannot list busybox applets: {exc}", where=str(busybox),
            hint="apt-get install busybox-static",
        ) from exc
    applets = set()
    for line in listing.splitlines():
        path = line.strip().strip("/")
        # linuxrc is an initrd's init, not an applet a container wants
        if path and path not in ("bin/busybox", "linuxrc") and ".." not in path.split("/"):
            applets.add(path)
    return sorted(applets)


def compile_pvnotify(workdir: Path) -> Path:
    """Compile the static sd_notify sender once; the binary is deterministic (-s)."""
    if not PVNOTIFY_SOURCE.is_file():
        raise BadInputError("pvnotify source is missing", where=str(PVNOTIFY_SOURCE))
    out = workdir / "pvnotify"
    argv = ["gcc", "-static", "-Os", "-s", "-o", str(out), PVNOTIFY_SOURCE.name]
    try:
        result = subprocess.run(
            argv, cwd=PVNOTIFY_SOURCE.parent, capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise ExternalToolError(f"cannot run gcc: {exc}", where="gcc",
                                hint="apt-get install gcc libc6-dev") from exc
    if result.returncode != 0:
        raise ExternalToolError(
            f"gcc failed: {result.stderr.strip()[-1500:]}", where=str(PVNOTIFY_SOURCE),
            hint="static linking needs libc6-dev",
        )
    return out


def build_tree(recipe: Recipe, root: Path, *, busybox: Path, applets: list[str],
               pvnotify: Path | None) -> None:
    """Populate an empty directory ``root`` with the image's tree."""
    for name in EMPTY_DIRS:
        (root / name).mkdir(mode=0o755)
    (root / "tmp").chmod(0o1777)
    _install(busybox, root / "bin" / "busybox", 0o755)
    for applet in applets:
        link = root / applet
        link.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(os.path.relpath(root / "bin" / "busybox", link.parent))
    for name, text in (("passwd", USERS), ("group", GROUPS)):
        (root / "etc" / name).write_text(text)
        (root / "etc" / name).chmod(0o644)
    if recipe.pvnotify:
        if pvnotify is None:
            raise BadInputError("pvnotify was not compiled", where=recipe.name)
        _install(pvnotify, root / "bin" / "pvnotify", 0o755)
    _copy_files(recipe.files, root)
    _normalise(root)


def _install(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def _copy_files(src_root: Path, root: Path) -> None:
    """Copy an image's own files: 0755 when executable in the checkout, else 0644.

    Only files and directories: a symlink or special file there is a mistake
    in the recipe, not something to copy blindly.
    """
    if not src_root.is_dir():
        raise BadInputError("image has no files/ directory", where=str(src_root))
    for src in sorted(src_root.rglob("*")):
        rel = src.relative_to(src_root)
        dest = root / rel
        if src.is_symlink() or not (src.is_file() or src.is_dir()):
            raise BadInputError("only regular files and directories are allowed",
                                where=str(src))
        if src.is_dir():
            dest.mkdir(mode=0o755, parents=True, exist_ok=True)
            continue
        if dest.is_symlink() or dest.is_dir():
            raise BadInputError(f"would replace /{rel} of the base image", where=str(src))
        _install(src, dest, 0o755 if os.access(src, os.X_OK) else 0o644)


def _normalise(root: Path) -> None:
    """Fix directory modes and set every timestamp to 0, deepest first."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        directory = Path(dirpath)
        for name in filenames + dirnames:
            path = directory / name
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o1777 if path == root / "tmp" else 0o755)
            os.utime(path, (0, 0), follow_symlinks=False)
    root.chmod(0o755)
    os.utime(root, (0, 0))


def build_image(recipe: Recipe, outdir: Path, *, busybox: Path, applets: list[str],
                pvnotify: Path | None, squashfs: bool) -> Path:
    """Build ``outdir/<name>/`` (replacing an older one only once the new one is done)."""
    work = Path(tempfile.mkdtemp(prefix=f".{recipe.name}.", dir=outdir))
    try:
        tree = work / "root"
        tree.mkdir()
        build_tree(recipe, tree, busybox=busybox, applets=applets, pvnotify=pvnotify)
        final = outdir / recipe.name
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.exists():
            shutil.rmtree(final)
        tree.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if squashfs:
        make_squashfs(final, outdir / f"{recipe.name}.squashfs")
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="where OUTDIR/<name>/ trees are written")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"images to build (default: all of {', '.join(RECIPES)})")
    parser.add_argument("--squashfs", action="store_true",
                        help="also write OUTDIR/<name>.squashfs")
    parser.add_argument("--busybox", type=Path, default=DEFAULT_BUSYBOX,
                        help="the static busybox to install (default: %(default)s)")
    args = parser.parse_args(argv)
    names = args.names or list(RECIPES)
    unknown = [name for name in names if name not in RECIPES]
    if unknown:
        parser.error(f"unknown image {unknown[0]!r} (known: {', '.join(RECIPES)})")
    try:
        args.outdir.mkdir(parents=True, exist_ok=True)
        if not args.busybox.is_file():
            raise ExternalToolError("busybox is not installed", where=str(args.busybox),
                                    hint="apt-get install busybox-static")
        applets = busybox_applets(args.busybox)
        with tempfile.TemporaryDirectory(prefix="pvnotify.") as scratch:
            needs_pvnotify = any(RECIPES[name].pvnotify for name in names)
            pvnotify = compile_pvnotify(Path(scratch)) if needs_pvnotify else None
            for name in names:
                tree = build_image(RECIPES[name], args.outdir, busybox=args.busybox,
                                   applets=applets, pvnotify=pvnotify, squashfs=args.squashfs)
                line = f"{name}: {tree}"
                if args.squashfs:
                    image = args.outdir / f"{name}.squashfs"
                    line += f" {image} ({image.stat().st_size} bytes)"
                print(line)
    except PvError as exc:
        print(f"images/build.py: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Edits of a checkout that build objects: ``add``, ``container add``, ``bsp set``.

``container add`` builds its root volume from a rootfs directory or tar, or
from a container image (see :class:`ImageSource`): an OCI image layout, a
docker-archive or a registry reference; an image's config fills run.json's
``init``/``env``/``cwd``/``user`` unless the options say otherwise.

Each edit builds its objects in ``.pvstate/tmp``, composes the state the
tree would hold afterwards, validates it, and only then moves files into
the working tree (see :meth:`Checkout.apply_staged`).  A bad group name or
a broken source tree therefore changes nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from pvinit.build.oci import Image, OciLayout
from pvinit.build.oci_archive import read_docker_archive
from pvinit.build.oci_run import RunFields, run_fields
from pvinit.build.rootfs import extract_tar
from pvinit.build.squashfs import make_squashfs
from pvinit.checkout.checkout import Checkout, Staged
from pvinit.checkout.worktree import Progress, hash_file
from pvinit.errors import BadInputError, ConflictError, NotFoundError
from pvinit.record import field, record, replace
from pvinit.state.model import State
from pvinit.state.paths import check_key

ROOT_VOLUME = "root.squashfs"
DEFAULT_INIT = ("/sbin/init",)
DEFAULT_AUTO_RECOVERY: dict[str, object] = {
    "policy": "on-failure",
    "max_retries": 5,
    "retry_delay": 1,
    "backoff_factor": 2.0,
    "stable_timeout": 30,
}


@record(frozen=True)
class Added:
    key: str
    object_id: str
    size: int

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "id": self.object_id, "size": self.size}


def _stage_object(source: Path, stage: Path, progress: Progress | None) -> Path:
    """A staged object file for ``source``: a directory becomes a reproducible squashfs."""
    out = stage / f"obj-{len(list(stage.iterdir()))}"
    if source.is_dir():
        make_squashfs(source, out, progress=None if progress is None else _fraction(progress))
    elif source.is_file():
        shutil.copyfile(source, out)
    else:
        raise NotFoundError("no such file or directory", where=str(source))
    return out


def _fraction(progress: Progress) -> Callable[[float], None]:
    def report(fraction: float) -> None:
        progress(int(fraction * 1000), 1000)

    return report


def add_path(
    co: Checkout, source: Path, key: str | None, progress: Progress | None = None
) -> Added:
    """Add a file (as is) or a directory (as a squashfs) to the working tree at ``key``."""
    source = source.absolute()
    inside = source.resolve().is_relative_to(co.root)
    if key is None:
        if not inside or source.is_dir():
            raise BadInputError(
                "say where it goes in the state with --as KEY "
                "(a directory becomes a squashfs object)",
                where=str(source),
            )
        key = source.resolve().relative_to(co.root).as_posix()
    key = check_key(key, where=key)
    if key.endswith(".json"):
        raise BadInputError("*.json keys are inline documents: edit the file instead", where=key)
    target = co.root / key
    if inside and source.is_file() and source.resolve() == target.resolve():
        object_id = co.store.add_file(target)
        return Added(key=key, object_id=object_id, size=target.stat().st_size)
    with co.staging() as stage:
        staged_file = _stage_object(source, stage, progress)
        size = staged_file.stat().st_size
        object_id = hash_file(staged_file)
        co.apply_staged(Staged(files={key: staged_file}), validate=False)
    return Added(key=key, object_id=object_id, size=size)


@record(frozen=True)
class ContainerOptions:
    """What ``pvstate container add`` writes into the container's run.json.

    ``init`` None means "the image's command" (``/sbin/init`` when it has
    none); ``env`` entries override the image's; ``cwd``/``user`` None mean
    "the image's" (left out of run.json when it sets none).
    """

    group: str = "app"
    status_goal: str = "STARTED"
    restart_policy: str = "container"
    init: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    lxc: Mapping[str, str] = field(default_factory=dict)
    persistence: str = "boot"
    roles: tuple[str, ...] = ()
    auto_recovery: Mapping[str, object] | None = None

    def run_json(self, name: str) -> dict[str, object]:
        doc: dict[str, object] = {
            "name": name,
            "type": "lxc",
            "root-volume": ROOT_VOLUME,
            "group": self.group,
            "status_goal": self.status_goal,
            "restart_policy": self.restart_policy,
            "init": list(self.init or DEFAULT_INIT),
            "env": dict(self.env),
            "storage": {"lxc-overlay": {"persistence": self.persistence}},
        }
        if self.cwd:
            doc["cwd"] = self.cwd
        if self.user:
            doc["user"] = self.user
        if self.lxc:
            doc["lxc"] = dict(self.lxc)
        if self.roles:
            doc["roles"] = list(self.roles)
        recovery = self.auto_recovery
        if recovery is None and self.restart_policy == "container":
            recovery = DEFAULT_AUTO_RECOVERY
        if recovery is not None:
            doc["auto_recovery"] = dict(recovery)
        return doc


    def with_image(self, image: RunFields) -> ContainerOptions:
        """These options over an image config's: what is given here wins."""
        return replace(
            self,
            init=self.init if self.init is not None else image.init,
            env={**image.env, **self.env},
            cwd=self.cwd if self.cwd is not None else image.cwd or None,
            user=self.user if self.user is not None else image.user or None,
        )


@record(frozen=True)
class ImageSource:
    """Where ``container add --from`` takes a root filesystem from.

    ``kind`` is ``path`` (a rootfs directory or tar archive), ``oci``
    (``oci:PATH[:TAG]``), ``docker-archive`` (``docker-archive:FILE[:REF]``)
    or ``docker`` (``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]``).
    """

    kind: str
    location: str
    reference: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageSource:
        if text.startswith("oci:"):
            rest = text[len("oci:"):]
            path, colon, tag = rest.rpartition(":")
            if Path(rest).is_dir() or not colon or "/" in tag or not tag:
                return cls("oci", rest)
            return cls("oci", path, tag)
        if text.startswith("docker-archive:"):
            rest = text[len("docker-archive:"):]
            path, colon, ref = rest.partition(":")
            if Path(rest).is_file() or not colon or not ref:
                return cls("docker-archive", rest)
            return cls("docker-archive", path, ref)
        if text.startswith("docker://"):
            from pvinit.build.oci_registry import RegistryRef

            pulled = RegistryRef.parse(text[len("docker://"):])
            return cls("docker", f"{pulled.host}/{pulled.repository}", pulled.reference)
        return cls("path", text)

    def __str__(self) -> str:
        if self.kind == "path":
            return self.location
        if self.kind == "docker":
            sep = "@" if (self.reference or "").startswith("sha256:") else ":"
            return f"docker://{self.location}{sep}{self.reference}"
        tail = f":{self.reference}" if self.reference else ""
        return f"{self.kind}:{self.location}{tail}"


@record(frozen=True)
class PullOptions:
    """How to reach a registry for a ``docker://`` source."""

    authfile: Path | None = None
    insecure: bool = False


def read_image(source: ImageSource, stage: Path, pull: PullOptions | None = None) -> Image:
    """The image ``source`` names, its blobs local (in ``stage`` when copied) and checked."""
    if source.kind == "oci":
        return OciLayout(Path(source.location)).image(source.reference)
    if source.kind == "docker-archive":
        blobs = stage / "docker-archive"
        blobs.mkdir()
        return read_docker_archive(Path(source.location), source.reference, blobs)
    if source.kind == "docker":
        from pvinit.build import oci_registry

        pull = pull or PullOptions()
        ref = oci_registry.RegistryRef.parse(str(source)[len("docker://"):])
        credentials = oci_registry.load_credentials(ref.host, pull.authfile)
        return oci_registry.pull(ref, stage / "pulled", credentials=credentials,
                                 insecure=pull.insecure)
    raise BadInputError(f"not an image source: {source}")


def check_container_name(name: str) -> str:
    check_key(name, where=name)
    if "/" in name or name in {"bsp", "device.json"} or name.endswith(".json"):
        raise BadInputError("a container name is one path part, not 'bsp'", where=name)
    return name


def add_container(
    co: Checkout,
    name: str,
    source: Path | str | ImageSource,
    options: ContainerOptions,
    *,
    replace: bool = False,
    progress: Progress | None = None,
    image_config: bool = True,
    pull: PullOptions | None = None,
) -> State:
    """Build ``source`` into ``NAME/root.squashfs`` and ``NAME/run.json``.

    ``source`` is a rootfs directory or tar (a Path), or an image source
    (text as :meth:`ImageSource.parse` reads it).  With ``image_config`` an
    image's config is mapped into run.json under ``options``.
    """
    check_container_name(name)
    existing = [k for k in co.tracked_files() if k.split("/", 1)[0] == name]
    if existing and not replace:
        raise ConflictError(f"container {name!r} exists already", where=name, hint="use --replace")
    if isinstance(source, ImageSource):
        spec = source
    elif isinstance(source, Path):
        spec = ImageSource("path", str(source))
    else:
        spec = ImageSource.parse(source)
    if spec.kind == "path" and not Path(spec.location).exists():
        raise NotFoundError("no such rootfs directory or archive", where=spec.location)
    with co.staging() as stage:
        path = Path(spec.location)
        if spec.kind == "path" and path.is_dir():
            rootfs = path
        elif spec.kind == "path":
            rootfs = stage / "rootfs"
            rootfs.mkdir()
            extract_tar(path, rootfs)
        else:
            image = read_image(spec, stage, pull)
            rootfs = stage / "rootfs"
            image.unpack(rootfs)
            if image_config:
                options = options.with_image(run_fields(image.config, rootfs, where=str(spec)))
        volume = _stage_object(rootfs, stage, progress)
        keep = {f"{name}/{ROOT_VOLUME}", f"{name}/run.json"}
        removals = tuple(k for k in existing if k not in keep)
        state = co.apply_staged(
            Staged(
                files={f"{name}/{ROOT_VOLUME}": volume},
                documents={f"{name}/run.json": options.run_json(name)},
            ),
            removals=removals,
        )
    assert state is not None
    return state


BSP_PARTS = ("linux", "initrd", "modules", "firmware", "dtb")
BSP_KEYS = {
    "linux": "kernel.img",
    "initrd": "initrd.img",
    "modules": "modules.squashfs",
    "firmware": "firmware.squashfs",
    "dtb": "board.dtb",
}


def set_bsp(co: Checkout, parts: Mapping[str, Path], progress: Progress | None = None) -> State:
    """Set BSP parts (kernel/initrd/dtb files; modules/firmware directories or squashfs files)."""
    unknown = sorted(set(parts) - set(BSP_PARTS))
    if unknown:
        raise BadInputError(f"unknown BSP part(s) {unknown}; known: {list(BSP_PARTS)}")
    if not parts:
        raise BadInputError(
            "nothing to set: give --kernel, --initrd, --modules, --firmware or --dtb"
        )
    run_path = co.root / "bsp" / "run.json"
    run: dict[str, object] = {}
    if run_path.exists():
        from pvinit.checkout.worktree import read_document

        run = dict(read_document(run_path, "bsp/run.json"))
    staged = Staged()
    with co.staging() as stage:
        for part, source in sorted(parts.items()):
            if part in {"linux", "initrd", "dtb"} and not source.is_file():
                raise BadInputError(f"the {part} must be a file", where=str(source))
            key_name = str(run.get(part) or BSP_KEYS[part])
            staged.files[f"bsp/{key_name}"] = _stage_object(source, stage, progress)
            run[part] = key_name
        staged.documents["bsp/run.json"] = run
        state = co.apply_staged(staged)
    assert state is not None
    return state

"""Turn a revision's containers into mounted roots and LXC specs (the supervisor's I/O hands).

Per container, under ``<run-dir>/pvinit/mnt/<name>/``:

- ``lower``: its root volume, the trail's hard link of the squashfs object,
  loop-mounted read-only;
- ``root``: an overlay over it whose ``upper``/``work`` live in the
  persistence scope of its ``storage["lxc-overlay"]`` (``boot`` when absent):
  ``disks/perm``, ``disks/rev/<rev>`` or ``disks/boot`` + ``/<name>/lxc-overlay``;
- ``vol/<volume>``: each extra squashfs volume, read-only, bound at
  ``/volumes/<volume>`` inside.

Every other ``storage`` entry is a plain directory on its scope, bound
read-write at ``/storage/<volume>`` inside: a container sees its persistent
data at one fixed place whatever its scope, and the scope decides only how
long the data lives.  The BSP's modules and firmware squashfs are mounted
once under ``<run-dir>/pvinit/bsp/`` and bound read-only at ``/lib/modules``
and ``/lib/firmware`` (optional binds: a revision without them still runs).

Every container gets its own notify directory at ``/run/pvinit`` (its
readiness socket, nothing else).  A container whose run.json lists the
``mgmt`` role also gets the control socket's directory bound read-write at
``/run/pvinit/ctl`` (socket ``ctl.sock``): the directory, not the file, so a
supervisor restart that re-creates the socket is seen inside.  Its root is
root on the host (no user namespace), so the control server lets it in.

Every failure is a PvError naming the container and the key or path; what was
mounted before it is recorded in :attr:`Unit.mounts` so it is undone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from pvinit import durable
from pvinit.containers.driver import ContainerDriver
from pvinit.containers.inroot import make_dirs_in_root
from pvinit.containers.notify import NotifyReceiver
from pvinit.containers.spec import BindMount, ContainerSpec
from pvinit.containers.users import Identity, home_in_root, resolve_in_root
from pvinit.containers.volumes import OVERLAY_DIRS, mount_overlay, mount_squashfs, unmount
from pvinit.control.paths import MGMT_MOUNT, MGMT_ROLE, SOCKET_DIR
from pvinit.errors import BadInputError, ObjectNotFoundError, PvError
from pvinit.pid1.mounts import plan_unmounts, read_mountinfo
from pvinit.record import field, record
from pvinit.state.documents import AutoRecovery, Container, split_user
from pvinit.supervisor.status import ContainerReport, ContainerStatus
from pvinit.trails.install import InstalledRevision
from pvinit.trails.layout import StorageLayout

OVERLAY_VOLUME = "lxc-overlay"
DEFAULT_INIT = ("/sbin/init",)
CONSOLE_LOG_BYTES = 1 << 20

Log = Callable[[str], None]


@record
class Unit:
    """One container of the running revision and everything the supervisor tracks about it."""

    container: Container
    goal: str
    restart_policy: str
    recovery: AutoRecovery | None
    status: ContainerStatus = ContainerStatus.WAITING
    pid: int | None = None
    started_at: float | None = None
    started_mono: float | None = None
    restarts: int = 0
    retries: int = 0
    reason: str | None = None
    restart_at: float | None = None
    mounts: list[Path] = field(default_factory=list)
    notify: NotifyReceiver | None = None
    defined: bool = False

    @property
    def name(self) -> str:
        return self.container.name

    @property
    def group(self) -> str:
        return self.container.group

    @property
    def running(self) -> bool:
        return self.status in (ContainerStatus.STARTED, ContainerStatus.READY)

    def report(self) -> ContainerReport:
        return ContainerReport(
            name=self.name,
            group=self.group,
            status=self.status,
            goal=self.goal,
            pid=self.pid,
            started_at=self.started_at,
            restarts=self.restarts,
            reason=self.reason,
        )


@record(frozen=True)
class BspMounts:
    """Host paths of the mounted BSP parts (None: not in this revision or failed)."""

    modules: Path | None = None
    firmware: Path | None = None


class Runtime:
    """Mounts, LXC specs and teardown for the containers of one installed revision."""

    def __init__(
        self,
        *,
        layout: StorageLayout,
        installed: InstalledRevision,
        run_dir: Path,
        driver: ContainerDriver,
        log: Log,
    ) -> None:
        self.layout = layout
        self.installed = installed
        self.base = run_dir / "pvinit"
        self.driver = driver
        self.log = log
        self.bsp = BspMounts()
        self._bsp_mounts: list[Path] = []

    @property
    def revision(self) -> int:
        return self.installed.revision

    # -- the BSP ------------------------------------------------------------

    def mount_bsp(self) -> BspMounts:
        """Mount the modules and firmware squashfs read-only; a failure is logged, not fatal."""
        bsp = self.installed.state.bsp
        found: dict[str, Path] = {}
        for role in ("modules", "firmware"):
            name = getattr(bsp, role) if bsp is not None else None
            if name is None:
                continue
            image = self.installed.file(f"bsp/{name}")
            target = self.base / "bsp" / role
            try:
                mount_squashfs(image, target, name=f"bsp/{name}")
            except PvError as error:
                self.log(f"BSP {role} not available to containers: {error}")
                continue
            self._bsp_mounts.append(target)
            found[role] = target
        self.bsp = BspMounts(modules=found.get("modules"), firmware=found.get("firmware"))
        return self.bsp

    def unmount_bsp(self) -> None:
        for target in reversed(self._bsp_mounts):
            with contextlib.suppress(PvError):
                unmount(target)
        self._bsp_mounts.clear()

    # -- one container -----------------------------------------------------------

    def _object_file(self, unit: Unit, relative: str) -> Path:
        key = f"{unit.name}/{relative}"
        path = self.installed.file(key)
        if not path.is_file():
            object_id = self.installed.state.objects.get(key, "?")
            raise ObjectNotFoundError(
                f"object {object_id} of {key} is missing from the trail", where=unit.name
            )
        return path

    def _persistence(self, unit: Unit, volume: str, *inside: str) -> Path:
        """The directory that keeps ``volume``'s writes, created (with ``inside`` it) if missing.

        Durably (fsynced where created) on the permanent and revision scopes;
        without fsync on the boot scope, which the next boot replaces anyway.
        """
        storage = unit.container.storage.get(volume)
        scope = storage.persistence if storage is not None else "boot"
        directory = self.layout.volume_dir(scope, self.revision, unit.name, volume)
        make = durable.ensure_dir if scope == "boot" else durable.makedirs
        for path in (directory, *(directory / name for name in inside)):
            make(path)
        return directory

    def _process(self, unit: Unit, root: Path) -> Identity | None:
        """Resolve run.json ``user`` and create ``cwd`` inside the mounted ``root``.

        Both are done in the container's own tree (its passwd and group, its
        directories; symlinks never leave it), after its overlay is mounted,
        so a missing ``cwd`` lands in the overlay's upper layer, owned by
        root with mode 0755 as Docker creates it.
        """
        container = unit.container
        if container.cwd is not None:
            try:
                make_dirs_in_root(root, container.cwd)
            except OSError as error:
                raise BadInputError(
                    f"cannot create the working directory {container.cwd!r} in the "
                    f"container: {error.strerror or error}",
                    where=unit.name,
                ) from None
        if container.user is None:
            return None
        user, group = split_user(container.user)
        return resolve_in_root(root, user, group, where=unit.name)

    def prepare(self, unit: Unit) -> ContainerSpec:
        """Mount the container's volumes, bind its notify socket, define it in LXC."""
        container = unit.container
        where = unit.name
        top = self.base / "mnt" / unit.name
        image = self._object_file(unit, container.root_volume)
        lower, root = top / "lower", top / "root"
        mount_squashfs(image, lower, name=f"{where}: {container.root_volume}")
        unit.mounts.append(lower)
        mount_overlay([lower], self._persistence(unit, OVERLAY_VOLUME, *OVERLAY_DIRS), root)
        unit.mounts.append(root)
        identity = self._process(unit, root)
        env = dict(container.env)
        if "HOME" not in env:  # as runc: from the image's passwd unless run.json sets it
            env["HOME"] = (
                identity.home if identity is not None else home_in_root(root, 0, where=where)
            )
        binds: list[BindMount] = []
        for volume in container.volumes:
            label = Path(volume).name.removesuffix(".squashfs")
            target = top / "vol" / label
            mount_squashfs(self._object_file(unit, volume), target, name=f"{where}: {volume}")
            unit.mounts.append(target)
            binds.append(BindMount(source=target, target=f"/volumes/{label}", readonly=True))
        for volume in sorted(container.storage):
            if volume == OVERLAY_VOLUME:
                continue
            directory = self._persistence(unit, volume)
            binds.append(BindMount(source=directory, target=f"/storage/{volume}"))
        if self.bsp.modules is not None:
            binds.append(BindMount(self.bsp.modules, "/lib/modules", readonly=True, optional=True))
        if self.bsp.firmware is not None:
            binds.append(
                BindMount(self.bsp.firmware, "/lib/firmware", readonly=True, optional=True)
            )
        if MGMT_ROLE in container.roles:
            control_dir = self.base / SOCKET_DIR
            control_dir.mkdir(mode=0o750, parents=True, exist_ok=True)  # /run: not persistent
            binds.append(BindMount(source=control_dir, target=MGMT_MOUNT))
        notify_dir = self.base / "notify" / unit.name
        if unit.notify is None:
            unit.notify = NotifyReceiver(notify_dir)
        spec = ContainerSpec(
            name=unit.name,
            rootfs=root,
            init=container.init or DEFAULT_INIT,
            console_log=self.layout.log_dir(self.revision, unit.name) / "console.log",
            env=env,
            lxc_keys=dict(container.lxc),
            mounts=tuple(binds),
            log_size_bytes=CONSOLE_LOG_BYTES,
            notify_dir=notify_dir,
            cwd=container.cwd,
            uid=identity.uid if identity is not None else None,
            gid=identity.gid if identity is not None else None,
            groups=identity.groups if identity is not None else (),
        )
        self.driver.create(spec)
        unit.defined = True
        return spec

    def release(self, unit: Unit) -> None:
        """Forget the LXC definition, close the notify socket, unmount (reverse order)."""
        if unit.defined:
            try:
                self.driver.destroy(unit.name)
            except PvError as error:
                self.log(f"{unit.name}: cannot remove its LXC definition: {error}")
            unit.defined = False
        if unit.notify is not None:
            unit.notify.close()
            unit.notify = None
        for target in reversed(unit.mounts):
            try:
                unmount(target)
            except PvError as error:
                self.log(f"{unit.name}: {error}")
        unit.mounts.clear()


def clean_run_dir(run_dir: Path, lxcpath: Path, driver: ContainerDriver, log: Log) -> None:
    """Undo what a supervisor that died without stopping left: containers, then mounts."""
    if lxcpath.is_dir():
        for entry in sorted(lxcpath.iterdir()):
            if (entry / "config").is_file():
                log(f"removing container {entry.name} left by an earlier run")
                with contextlib.suppress(PvError):
                    driver.destroy(entry.name)
    base = (run_dir / "pvinit").absolute()
    for mount in plan_unmounts(read_mountinfo(), str(base), keep_api=False):
        log(f"unmounting {mount.mount_point} left by an earlier run")
        with contextlib.suppress(PvError):
            unmount(Path(mount.mount_point))


BOOT_SCOPE_OLD = ".boot-old-"
"""Prefix, under ``disks/``, of a boot scope moved aside by :func:`fresh_boot_scope`."""


def fresh_boot_scope(layout: StorageLayout) -> None:
    """Give this boot an empty ``boot`` persistence scope, in one rename.

    The last boot's scope is moved aside rather than deleted: deleting its
    overlay trees is dozens of ``unlink``/``rmdir`` calls (~6 ms for the
    default state) on the way to the first container.  :func:`sweep_boot_scope`
    removes what was moved aside once every group has started.  A power cut
    in between leaves a ``.boot-old-*`` tree that the next sweep removes;
    nothing reads it in the meantime.
    """
    boot = layout.scope_dir("boot", 0)
    if boot.exists():
        old = layout.disks / f"{BOOT_SCOPE_OLD}{time.time_ns()}"
        boot.rename(old)  # not fsynced: a rename lost to a power cut is done again next boot
    durable.ensure_dir(boot)


def sweep_boot_scope(layout: StorageLayout, log: Log) -> None:
    """Remove the boot scopes earlier boots moved aside (see :func:`fresh_boot_scope`)."""
    if not layout.disks.is_dir():
        return
    for entry in sorted(layout.disks.iterdir()):
        if entry.name.startswith(BOOT_SCOPE_OLD) and entry.is_dir():
            try:
                durable.remove_tree(entry)
            except OSError as error:
                log(f"cannot remove an old boot scope {entry.name}: {error}")

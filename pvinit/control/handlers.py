"""The control API's endpoints, answered from the supervisor's own state (see control-api.md).

Handlers run inside the supervisor's loop, so they are quick and never
block on a client: large work (a bundle install) is handed to the update
worker through the inbox.  Every :class:`PvError` becomes a JSON error with
the matching status (:func:`error_response`); storage changes happen only
after every check passed, so a refused request changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from pvinit.control import actions
from pvinit.control.http import HttpError, RequestHead, Response, parse_json_body
from pvinit.control.logs import FileFollower, log_file, log_sources, tail_bytes
from pvinit.control.server import (
    MAX_JSON_BODY,
    MAX_UPLOAD,
    Peer,
    Reply,
    Request,
    StreamingResponse,
)
from pvinit.errors import (
    BadInputError,
    BusyError,
    ConflictError,
    NoSpaceError,
    NotFoundError,
    PvError,
    RefusedError,
)
from pvinit.trails.layout import StorageLayout
from pvinit.trails.refs import REF_NAMES, read_ref
from pvinit.typecheck import TYPE_CHECKING, Protocol
from pvinit.update.journal import list_journals, read_journal

if TYPE_CHECKING:
    from typing import Any

    from pvinit.supervisor.runtime import Unit
    from pvinit.supervisor.status import StatusDocument, SupervisorPhase
    from pvinit.supervisor.updates import UpdateCoordinator

Log = Callable[[str], None]
API = "/v1"


class Device(Protocol):
    """What the handlers need from the supervisor."""

    layout: StorageLayout
    revision: int | None
    phase: SupervisorPhase
    updates: UpdateCoordinator | None

    @property
    def log(self) -> Log: ...

    @property
    def units(self) -> list[Unit]: ...
    def document(self) -> StatusDocument: ...
    def request_stop(self, *, reboot: bool, why: str) -> None: ...
    def stop_container(self, unit: Unit) -> None: ...
    def start_container(self, unit: Unit) -> None: ...
    def request_poweroff(self, why: str) -> None: ...


def error_response(error: PvError) -> Response:
    extra: dict[str, str] = {}
    if isinstance(error, NotFoundError):
        status, kind = 404, "NotFound"
    elif isinstance(error, BadInputError):
        status, kind = 400, "BadInput"
    elif isinstance(error, BusyError):
        status, kind = 409, "Busy"
        extra["Retry-After"] = str(actions.RETRY_AFTER)
    elif isinstance(error, RefusedError):
        status, kind = 409, "Refused"
    elif isinstance(error, ConflictError):
        status, kind = 409, "Conflict"
    elif isinstance(error, NoSpaceError):
        status, kind = 507, "NoSpace"
    else:
        status, kind = 500, "Failed"
    return HttpError(status, kind, str(error), extra, hint=error.hint).response()


def _revision(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise NotFoundError(f"not a revision number: {text[:40]!r}")
    return int(text)


def _uptime() -> float | None:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


Route = tuple[str, "re.Pattern[str]", str]
ROUTES: list[Route] = [
    ("GET", re.compile(r"/status"), "status"),
    ("GET", re.compile(r"/containers"), "containers"),
    ("POST", re.compile(r"/containers/([^/]+)/(start|stop|restart)"), "container_action"),
    ("GET", re.compile(r"/revisions"), "revisions"),
    ("GET", re.compile(r"/revisions/([^/]+)"), "revision"),
    ("GET", re.compile(r"/revisions/([^/]+)/diff/([^/]+)"), "diff"),
    ("POST", re.compile(r"/install"), "install"),
    ("GET", re.compile(r"/install/([^/]+)"), "install_progress"),
    ("POST", re.compile(r"/rollback"), "rollback"),
    ("POST", re.compile(r"/reboot"), "reboot"),
    ("POST", re.compile(r"/poweroff"), "poweroff"),
    ("POST", re.compile(r"/gc"), "gc"),
    ("GET", re.compile(r"/logs"), "logs"),
    ("GET", re.compile(r"/logs/([^/]+)"), "log"),
]


class ControlApi:
    """Routes a request to one endpoint; an instance lives as long as the supervisor."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.started = time.monotonic()

    # -- server hooks -----------------------------------------------------------------
    def body_limit(self, head: RequestHead) -> tuple[int, bool]:
        if head.method == "POST" and head.path == f"{API}/install" \
                and head.content_type != "application/json":
            return MAX_UPLOAD, True
        return MAX_JSON_BODY, False

    def __call__(self, request: Request) -> Reply:
        head = request.head
        if not head.path.startswith(f"{API}/"):
            raise HttpError(
                404, "NotFound", f"no endpoint {head.path[:80]!r} (the API is under /v1)"
            )
        tail = head.path[len(API):].rstrip("/") or "/"
        methods: list[str] = []
        for method, pattern, name in ROUTES:
            match = pattern.fullmatch(tail)
            if match is None:
                continue
            methods.append(method)
            if method == head.method or (method == "GET" and head.method == "HEAD"):
                handler: Callable[..., Reply] = getattr(self, f"do_{name}")
                try:
                    return handler(request, *match.groups())
                except PvError as error:
                    return error_response(error)
        if methods:
            raise HttpError(405, "MethodNotAllowed",
                            f"{head.method} is not allowed on {head.path[:80]}; "
                            f"use {', '.join(methods)}",
                            {"Allow": ", ".join(methods)})
        raise HttpError(404, "NotFound", f"no endpoint {head.path[:80]!r}")

    @staticmethod
    def _no_body(request: Request) -> None:
        if request.body.strip() and request.head.content_type not in ("", "application/json"):
            raise HttpError(415, "UnsupportedMediaType", "send a JSON body")

    # -- status --------------------------------------------------------------------------
    def _busy(self) -> str | None:
        updates = self.device.updates
        testing = updates.testing if updates is not None else None
        worker = updates.worker if updates is not None else None
        handed = worker is not None and not worker.idle.is_set()
        return actions.busy_reason(self.device.layout, testing, handed)

    def do_status(self, request: Request) -> Reply:
        device, layout = self.device, self.device.layout
        doc = device.document()
        refs = {name: read_ref(layout, name) for name in REF_NAMES}
        journals = list_journals(layout)
        latest = journals[-1].to_dict() if journals else None
        env: dict[str, str] = {}
        if device.updates is not None:
            with contextlib.suppress(PvError, OSError):
                env = dict(device.updates.bootenv.read())
        disk = os.statvfs(layout.root)  # as shutil.disk_usage, without importing shutil
        total, free = disk.f_blocks * disk.f_frsize, disk.f_bavail * disk.f_frsize
        used = (disk.f_blocks - disk.f_bfree) * disk.f_frsize
        from pvinit.objects.disk import DiskObjectStore

        stats = DiskObjectStore(layout.objects).stats().to_dict() if layout.objects.is_dir() \
            else {"count": 0, "total_bytes": 0}
        busy = self._busy()
        return Response.json(200, {
            "revision": device.revision,
            "phase": doc.phase.value,
            "reason": doc.reason,
            "refs": refs,
            "try": refs.get("try"),
            "last_committed": refs.get("done"),
            "bootenv": env,
            "updates_enabled": device.updates is not None,
            "update": {"busy": busy is not None, "why": busy, "latest": latest},
            "uptime": {"supervisor": round(time.monotonic() - self.started, 1),
                       "system": _uptime()},
            "storage": {"objects": stats, "free_bytes": free, "total_bytes": total,
                        "used_bytes": used, "path": str(layout.root)},
            "containers": len(doc.containers),
        })

    def do_containers(self, request: Request) -> Reply:
        policies = {u.name: u.restart_policy for u in self.device.units}
        rows = []
        for report in self.device.document().containers:
            row = report.to_dict()
            row["restart_policy"] = policies.get(report.name)
            rows.append(row)
        return Response.json(200, {"revision": self.device.revision, "containers": rows})

    def _unit(self, name: str) -> Unit:
        for unit in self.device.units:
            if unit.name == name:
                return unit
        raise NotFoundError(f"no container {name!r} in revision {self.device.revision}",
                            hint="'pvctl ps' lists them")

    def do_container_action(self, request: Request, name: str, action: str) -> Reply:
        self._no_body(request)
        unit = self._unit(name)
        if unit.restart_policy != "container":
            raise RefusedError(
                f"{name} has restart policy {unit.restart_policy!r}: stopping or restarting it "
                "would reboot the device",
                hint="only 'container'-policy containers can be managed")
        updates = self.device.updates
        if updates is not None and updates.testing is not None:
            actions.refuse_if_busy(self._busy(), f"{action} {name}")
        if action in ("stop", "restart"):
            self.device.stop_container(unit)
        if action in ("start", "restart"):
            if unit.running:
                raise ConflictError(f"{name} is already running", hint="use restart")
            self.device.start_container(unit)
        who = f"uid {request.peer.uid}"
        self.device.log(f"{name}: {action} asked by {who} over the control socket")
        return Response.json(200, {"name": name, "action": action,
                                   "container": unit.report().to_dict()})

    # -- revisions --------------------------------------------------------------------------
    def _revision_summary(self, revision: int, refs: dict[str, int | None]) -> dict[str, Any]:
        layout = self.device.layout
        journal = read_journal(layout, revision)
        row: dict[str, Any] = {
            "revision": revision,
            "stored": layout.trail(revision).is_dir(),
            "refs": sorted(name for name, rev in refs.items() if rev == revision),
            "running": revision == self.device.revision,
            "state": journal.state.value if journal is not None else None,
            "reason": journal.reason if journal is not None else "",
            "message": None,
            "created": None,
        }
        envelope = layout.trail(revision) / "envelope.json"
        with contextlib.suppress(OSError, PvError):
            from pvinit.signing.envelope import Envelope

            env = Envelope.from_json(envelope.read_bytes(), source=str(envelope))
            row["message"], row["created"] = env.message, env.to_dict().get("created")
        return row

    def do_revisions(self, request: Request) -> Reply:
        layout = self.device.layout
        refs = {name: read_ref(layout, name) for name in REF_NAMES}
        numbers = set(actions.stored_revisions(layout))
        numbers |= {j.revision for j in list_journals(layout)}
        return Response.json(200, {"revisions": [self._revision_summary(n, refs)
                                                 for n in sorted(numbers)]})

    def do_revision(self, request: Request, text: str) -> Reply:
        revision = _revision(text)
        layout = self.device.layout
        refs = {name: read_ref(layout, name) for name in REF_NAMES}
        journal = read_journal(layout, revision)
        if not layout.trail(revision).is_dir() and journal is None:
            raise NotFoundError(f"revision {revision} is neither stored nor journaled")
        out = self._revision_summary(revision, refs)
        out["journal"] = journal.to_dict() if journal is not None else None
        if layout.trail(revision).is_dir():
            from pvinit.trails.install import load_trail

            installed = load_trail(layout, revision)
            state = installed.state
            out["envelope"] = installed.envelope.to_dict()
            out["digest"] = state.digest
            out["containers"] = {
                name: {"group": c.group, "restart_policy": state.restart_policy_of(name),
                       "status_goal": state.status_goal_of(name)}
                for name, c in state.containers.items()}
            out["objects"] = len(state.object_ids())
        return Response.json(200, out)

    def do_diff(self, request: Request, a: str, b: str) -> Reply:
        from pvinit.objects.disk import DiskObjectStore
        from pvinit.state.diff import diff_states
        from pvinit.state.plan import plan_update
        from pvinit.trails.install import load_trail

        layout = self.device.layout
        old, new = (load_trail(layout, _revision(x)).state for x in (a, b))
        diff = diff_states(old, new)
        store = DiskObjectStore(layout.objects)
        plan = plan_update(old, new, store.contains, diff=diff)
        return Response.json(200, {"from": int(a), "to": int(b), "diff": diff.to_dict(),
                                   "plan": plan.to_dict()})

    # -- install ----------------------------------------------------------------------------
    @property
    def inbox(self) -> Path:
        return self.device.layout.root / "inbox"

    def do_install(self, request: Request) -> Reply:
        actions.refuse_if_busy(self._busy(), "install")
        source: Path | None = None
        if request.upload is not None:
            revision = actions.bundle_revision(request.upload)
        elif request.head.content_type == "application/json":
            body = parse_json_body(request.body, where="install")
            path = body.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                raise BadInputError("'path' must be an absolute path of a bundle on the device",
                                    where="install#path")
            source = Path(path)
            if not source.is_file():
                raise NotFoundError("no such bundle file", where=path)
            revision = actions.bundle_revision(source)
        else:
            raise BadInputError("send the bundle bytes, or JSON {\"path\": ...}", where="install")
        if self.device.updates is None:  # checked last: bad input is named first
            raise RefusedError("updates are disabled on this device (see the pvinit log)")
        how = "uploaded"
        if source is not None:  # linked at once, or copied by a thread: never in this loop
            target, how = actions.place_in_inbox(source, self.inbox, revision,
                                                 log=self.device.log)
        else:
            assert request.upload is not None
            target = actions.take_upload(request.upload, self.inbox, revision)
        self.device.log(f"install of revision {revision} asked by uid {request.peer.uid}: "
                        f"{target.name} {how} into the inbox")
        return Response.json(202, {"revision": revision, "inbox": target.name, "how": how,
                                   "progress": f"{API}/install/{revision}"})

    def do_install_progress(self, request: Request, text: str) -> Reply:
        revision = _revision(text)
        journal = read_journal(self.device.layout, revision)
        inbox = actions.inbox_state(self.inbox, revision)
        if journal is None and inbox is None:
            raise NotFoundError(f"no install of revision {revision} is known")
        return Response.json(200, {
            "revision": revision,
            "state": journal.state.value if journal is not None else "WAITING",
            "journal": journal.to_dict() if journal is not None else None,
            **(inbox or {}),
        })

    # -- rollback, reboot, poweroff, gc -----------------------------------------------------
    def do_rollback(self, request: Request) -> Reply:
        body = parse_json_body(request.body, where="rollback")
        wanted = body.get("revision")
        if wanted is not None and (isinstance(wanted, bool) or not isinstance(wanted, int)
                                   or wanted < 0):
            raise BadInputError("'revision' must be a revision number", where="rollback#revision")
        actions.refuse_if_busy(self._busy(), "roll back")
        device = self.device
        if device.updates is None:
            raise RefusedError("updates are disabled on this device: cannot write the boot env")
        layout = device.layout
        target = actions.rollback_target(layout, device.revision, wanted)
        from pvinit.boot.rule import commit

        note = actions.record_rollback(layout, target=target, running=device.revision,
                                       uid=request.peer.uid)
        device.updates.bootenv.update(commit(target))
        actions.point_done(layout, target)
        device.request_stop(reboot=True, why=f"{note} to revision {target}")
        return Response.json(202, {"revision": target, "from": device.revision,
                                   "action": "rebooting"})

    def do_reboot(self, request: Request) -> Reply:
        self._no_body(request)
        actions.refuse_if_busy(self._busy(), "reboot")
        self.device.request_stop(reboot=True, why=f"reboot asked by uid {request.peer.uid}")
        return Response.json(202, {"action": "rebooting"})

    def do_poweroff(self, request: Request) -> Reply:
        self._no_body(request)
        actions.refuse_if_busy(self._busy(), "power off")
        self.device.request_poweroff(f"poweroff asked by uid {request.peer.uid}")
        return Response.json(202, {"action": "powering off"})

    def do_gc(self, request: Request) -> Reply:
        self._no_body(request)
        actions.refuse_if_busy(self._busy(), "collect garbage")
        from pvinit.objects.disk import DiskObjectStore
        from pvinit.update.gc import collect_garbage

        layout = self.device.layout
        report = collect_garbage(layout, DiskObjectStore(layout.objects), log=self.device.log)
        return Response.json(200, report.to_dict())

    # -- logs -------------------------------------------------------------------------------
    def _log_revision(self, request: Request) -> int | None:
        text = request.head.query.get("rev")
        return _revision(text) if text else self.device.revision

    def do_logs(self, request: Request) -> Reply:
        revision = self._log_revision(request)
        return Response.json(200, {"revision": revision,
                                   "sources": log_sources(self.device.layout, revision)})

    def do_log(self, request: Request, name: str) -> Reply:
        query = request.head.query
        revision = self._log_revision(request)
        path = log_file(self.device.layout, revision, name)
        tail_text = query.get("tail", "100")
        if not tail_text.isdigit() or len(tail_text) > 7:
            raise BadInputError("'tail' must be a number of lines", where="tail")
        data, offset = tail_bytes(path, int(tail_text))
        response = Response(200, data, content_type="text/plain; charset=utf-8")
        if query.get("follow") in ("1", "true", "yes"):
            return StreamingResponse(response, FileFollower(path, offset, first=data))
        return response


def allow_peer(layout: StorageLayout) -> Callable[[Peer], bool]:
    """Root, or a member of ``control.group`` (read once, when the socket opens)."""
    gid = actions.control_group(layout)

    def allowed(peer: Peer) -> bool:
        if peer.uid == 0:
            return True
        return gid is not None and gid in actions.peer_groups(peer.pid, peer.gid)

    return allowed


def socket_path(run_dir: Path) -> Path:
    """The socket, alone in ``<run-dir>/pvinit/ctl/`` (see :mod:`pvinit.control.paths`)."""
    from pvinit.control.paths import socket_path as in_own_dir

    return in_own_dir(run_dir)

"""``pvctl``: the field technician's tool, a thin shell over the control API.

``pvctl [--socket PATH] [--json] status|ps|start NAME|stop NAME|restart NAME|
revisions|show REV|diff A B|install BUNDLE|rollback [REV]|reboot|poweroff|gc|
logs [NAME] [-f]``.  The socket defaults to ``$PVCTL_SOCKET``, else
``/run/pvinit/ctl.sock``; a dev device started with ``pvinit --storage DIR``
has it at ``/proc/<its PID 1>/root<DIR>/run/pvinit/ctl.sock``.  Exit codes
follow :mod:`pvinit.errors`: refused 9, not found 4, busy 8, bad input 3,
failed 1, cannot connect 12.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pvinit import __version__
from pvinit.cli.common import Parser, run
from pvinit.cli.output import Output, human_size
from pvinit.control.client import ControlClient

STATE_COLOURS = {"READY": "green", "STARTED": "green", "DONE": "green", "UPDATED": "green",
                 "FAILED": "red", "ERROR": "red", "WONTGO": "red", "EXITED": "yellow",
                 "STOPPED": "yellow", "TESTING": "yellow"}


def _client(args: argparse.Namespace) -> ControlClient:
    if args.storage and not args.socket:
        from pvinit.errors import NotFoundError
        from pvinit.pid1.locate import dev_socket_path, find_dev_pid1

        storage = Path(args.storage)
        pid = find_dev_pid1(storage)
        if pid is None:
            raise NotFoundError("no dev device is running on this storage", where=str(storage),
                                hint="start it with 'pvinit --storage DIR'")
        return ControlClient(dev_socket_path(pid, storage))
    return ControlClient(Path(args.socket) if args.socket else None)


def _coloured(out: Output, text: object) -> str:
    value = "-" if text is None else str(text)
    colour = STATE_COLOURS.get(value)
    return out.colour(value, colour) if colour else value


def _show(out: Output, data: Any) -> bool:
    if out.json_mode:
        out.data(data)
    return out.json_mode


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    data = _client(args).call("GET", "/v1/status")
    if _show(out, data):
        return 0
    up = data["uptime"]
    store = data["storage"]
    update = data["update"]
    latest = update.get("latest") or {}
    rows = [
        ("revision", data["revision"]),
        ("phase", _coloured(out, data["phase"])
         + (f" ({data['reason']})" if data["reason"] else "")),
        ("try", data["try"] if data["try"] is not None else "-"),
        ("last committed", data["last_committed"] if data["last_committed"] is not None else "-"),
        ("update", update["why"] or (
            f"revision {latest['revision']} {latest['state']}" if latest else "none")),
        ("uptime", f"{up['supervisor']:.0f}s (supervisor)"
         + (f", {up['system']:.0f}s (system)" if up.get("system") is not None else "")),
        ("objects", f"{store['objects']['count']} ({human_size(store['objects']['total_bytes'])})"),
        ("storage free",
         f"{human_size(store['free_bytes'])} of {human_size(store['total_bytes'])}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.line(f"{key.ljust(width)}  {value}")
    return 0


def cmd_ps(args: argparse.Namespace, out: Output) -> int:
    data = _client(args).call("GET", "/v1/containers")
    if _show(out, data):
        return 0
    now = time.time()
    rows = []
    for c in data["containers"]:
        started = c.get("started_at")
        running = c["status"] in ("STARTED", "READY")
        uptime = f"{now - started:.0f}s" if running and started else "-"
        rows.append((c["name"], c["group"], _coloured(out, c["status"]), c["goal"],
                     c.get("restart_policy") or "-", c["pid"] or "-", uptime, c["restarts"],
                     c.get("reason") or ""))
    out.table(("name", "group", "status", "goal", "policy", "pid", "uptime", "restarts",
               "reason"), rows)
    return 0


def cmd_container(args: argparse.Namespace, out: Output) -> int:
    data = _client(args).call("POST", f"/v1/containers/{args.name}/{args.action}")
    if not _show(out, data):
        out.line(f"{args.name}: {data['container']['status']}")
    return 0


def cmd_revisions(args: argparse.Namespace, out: Output) -> int:
    data = _client(args).call("GET", "/v1/revisions")
    if _show(out, data):
        return 0
    rows = [(("* " if r["running"] else "  ") + str(r["revision"]), _coloured(out, r["state"]),
             ",".join(r["refs"]) or "-", "yes" if r["stored"] else "no", r.get("message") or "",
             r.get("reason") or "") for r in data["revisions"]]
    out.table(("rev", "state", "refs", "stored", "message", "reason"), rows)
    return 0


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    data = _client(args).call("GET", f"/v1/revisions/{args.rev}")
    if _show(out, data):
        return 0
    out.line(f"revision {data['revision']}" + (" (running)" if data["running"] else ""))
    out.line(f"state    {_coloured(out, data['state'])}  refs: {', '.join(data['refs']) or '-'}")
    if data.get("message"):
        out.line(f"message  {data['message']}")
    if data.get("digest"):
        out.line(f"digest   {data['digest']}")
    for name, c in sorted((data.get("containers") or {}).items()):
        out.line(f"  {name}: group {c['group']}, policy {c['restart_policy']}, "
                 f"goal {c['status_goal']}")
    journal = data.get("journal") or {}
    for step in journal.get("history", []):
        out.line(f"  {step['time']}  {_coloured(out, step['state'])}  {step['note']}")
    return 0


def cmd_diff(args: argparse.Namespace, out: Output) -> int:
    data = _client(args).call("GET", f"/v1/revisions/{args.a}/diff/{args.b}")
    if _show(out, data):
        return 0
    diff, plan = data["diff"], data["plan"]
    for label, colour in (("added", "green"), ("changed", "yellow"), ("removed", "red")):
        for key in diff.get(label, []):
            out.line(out.colour(f"{label + ':':9} {key}", colour))
    out.line(f"reboot: {'yes' if plan.get('reboot') else 'no'}")
    for reason in plan.get("reasons", []):
        out.line(f"  {reason}")
    return 0


def cmd_install(args: argparse.Namespace, out: Output) -> int:
    client = _client(args)
    if args.on_device:
        data = client.call("POST", "/v1/install", {"path": args.bundle})
    else:
        bundle = Path(args.bundle)
        if not bundle.is_file():
            from pvinit.errors import NotFoundError

            raise NotFoundError("no such bundle file", where=str(bundle))
        bar = out.progress(f"uploading {bundle.name}")
        try:
            data = client.upload(bundle, bar)
        finally:
            if bar:
                bar.close()
    if not args.wait:
        if not _show(out, data):
            out.line(f"revision {data['revision']} queued ({data['inbox']}); "
                     f"follow it with 'pvctl show {data['revision']}'")
        return 0
    return _wait_install(client, out, int(data["revision"]), args.wait)


def _wait_install(client: ControlClient, out: Output, revision: int, timeout: float) -> int:
    from pvinit.errors import PvError, RefusedError

    deadline = time.monotonic() + timeout
    last = None
    progress: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            progress = client.call("GET", f"/v1/install/{revision}")
        except PvError:
            progress = {}  # the device may be rebooting into the update
        state = progress.get("state")
        if state != last and state is not None:
            out.note(f"revision {revision}: {state}")
            last = state
        if state in ("DONE", "UPDATED", "WONTGO", "ERROR") or progress.get("inbox") == "failed":
            break
        time.sleep(0.5)
    if _show(out, progress) is False:
        out.line(f"revision {revision}: {last}")
    if last in ("DONE", "UPDATED"):
        return 0
    if last in ("WONTGO", "ERROR") or progress.get("inbox") == "failed":
        reason = progress.get("reason") or (progress.get("journal") or {}).get("reason", "")
        raise RefusedError(f"revision {revision} was not installed: {reason}")
    return 1


def cmd_rollback(args: argparse.Namespace, out: Output) -> int:
    payload = {} if args.rev is None else {"revision": args.rev}
    data = _client(args).call("POST", "/v1/rollback", payload)
    if not _show(out, data):
        out.line(f"rolling back from revision {data['from']} to {data['revision']}: rebooting")
    return 0


def cmd_simple(args: argparse.Namespace, out: Output) -> int:
    data = _client(args).call("POST", f"/v1/{args.endpoint}")
    if not _show(out, data):
        if args.endpoint == "gc":
            out.line(f"reclaimed {human_size(data['reclaimed_bytes'])} "
                     f"({len(data['removed'])} objects removed)")
        else:
            out.line(data.get("action", "ok"))
    return 0


def cmd_logs(args: argparse.Namespace, out: Output) -> int:
    client = _client(args)
    query = f"?tail={args.tail}" + (f"&rev={args.rev}" if args.rev is not None else "")
    if args.name is None:
        data = client.call("GET", "/v1/logs" + query)
        if not _show(out, data):
            for source in data["sources"]:
                out.line(source)
        return 0
    path = f"/v1/logs/{args.name}{query}"
    if not args.follow:
        out.out.write(client.text(path).decode(errors="replace"))
        return 0
    for block in client.follow(path + "&follow=1"):
        out.out.write(block.decode(errors="replace"))
        out.out.flush()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pvctl", description="talk to a pvinit device's control socket")
    parser.add_argument("--version", action="version", version=f"pvctl {__version__}")
    parser.add_argument("--socket", help="control socket (default $PVCTL_SOCKET or "
                        "/run/pvinit/ctl.sock)")
    parser.add_argument("--storage", metavar="DIR",
                        help="reach the dev device booted with 'pvinit --storage DIR'")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    sub.add_parser("status", help="revision, update state, uptime, storage").set_defaults(
        func=cmd_status)
    sub.add_parser("ps", help="containers").set_defaults(func=cmd_ps)
    for action in ("start", "stop", "restart"):
        p = sub.add_parser(action, help=f"{action} a container-policy container")
        p.add_argument("name")
        p.set_defaults(func=cmd_container, action=action)
    sub.add_parser("revisions", help="stored revisions and their updates").set_defaults(
        func=cmd_revisions)
    p = sub.add_parser("show", help="one revision and its journal")
    p.add_argument("rev", type=int)
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("diff", help="what changes from revision A to B")
    p.add_argument("a", type=int)
    p.add_argument("b", type=int)
    p.set_defaults(func=cmd_diff)
    p = sub.add_parser("install", help="upload a bundle (or name one on the device)")
    p.add_argument("bundle")
    p.add_argument("--on-device", action="store_true",
                   help="BUNDLE is a path on the device (a USB stick), not uploaded")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS for the update to finish")
    p.set_defaults(func=cmd_install)
    p = sub.add_parser("rollback", help="boot the last committed (or a named stored) revision")
    p.add_argument("rev", type=int, nargs="?")
    p.set_defaults(func=cmd_rollback)
    for endpoint, text in (("reboot", "reboot the device"), ("poweroff", "power the device off"),
                           ("gc", "remove unused revisions and objects")):
        sub.add_parser(endpoint, help=text).set_defaults(func=cmd_simple, endpoint=endpoint)
    p = sub.add_parser("logs", help="list log sources, or show one")
    p.add_argument("name", nargs="?")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", type=int, default=100)
    p.add_argument("--rev", type=int, help="revision whose logs to read (default: running)")
    p.set_defaults(func=cmd_logs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run("pvctl", build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

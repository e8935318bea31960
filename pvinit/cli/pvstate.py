"""``pvstate``: the release engineer's tool over a state checkout.

Git-like: ``init``, ``status``, ``add``, ``container add``, ``bsp set``,
``commit``, ``log``, ``show``, ``diff``, ``checkout``, ``export``, plus
``keygen``/``sign``/``verify``, ``publish`` and store upkeep (``fsck``, ``gc``).  Every
read command takes ``--json``; exit codes follow :mod:`pvinit.errors`.
Each command is a thin shell over :mod:`pvinit.checkout`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pvinit import __version__
from pvinit.checkout.checkout import Checkout
from pvinit.checkout.editing import (
    ContainerOptions,
    PullOptions,
    add_container,
    add_path,
    set_bsp,
)
from pvinit.checkout.revisions import Revision
from pvinit.cli.common import Parser, parse_assignments, run
from pvinit.cli.output import Output, human_size
from pvinit.errors import BadInputError, UsageError
from pvinit.remote.oci import OciTarget, is_oci_url

if TYPE_CHECKING:
    from pvinit.transport.registry import RegistryAuth


def _checkout(args: argparse.Namespace) -> Checkout:
    return Checkout.find(Path(args.directory))




# -- init / status ------------------------------------------------------------
def cmd_init(args: argparse.Namespace, out: Output) -> int:
    root = Path(args.path or args.directory)
    root.mkdir(parents=True, exist_ok=True)
    objects = Path(args.objects) if args.objects else root / ".pvstate" / "objects"
    co = Checkout.init(root, objects, device=not args.no_device)
    if out.json_mode:
        out.data({"checkout": str(co.root), "objects": str(co.objects_dir)})
    else:
        out.line(f"initialised state checkout in {co.root} (objects: {co.objects_dir})")
    return 0


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    co = _checkout(args)
    bar = out.progress("hashing")
    status = co.status(progress=bar)
    if bar:
        bar.close()
    if out.json_mode:
        out.data(status.to_dict())
        return 0
    head = f"revision {status.head}" if status.head is not None else "no revision yet"
    out.line(f"on {head}")
    for label, keys, colour in (
        ("added", status.added, "green"),
        ("modified", status.modified, "yellow"),
        ("removed", status.removed, "red"),
    ):
        for key in keys:
            out.line(out.colour(f"  {label + ':':10} {key}", colour))
    if status.clean:
        out.line("working tree matches HEAD")
    if status.problem:
        out.line(out.colour(f"invalid: {status.problem}", "red"))
    return 0


# -- editing ------------------------------------------------------------------
def cmd_add(args: argparse.Namespace, out: Output) -> int:
    co = _checkout(args)
    if args.key and len(args.sources) != 1:
        raise UsageError("--as takes exactly one source")
    results = []
    for source in args.sources:
        bar = out.progress(f"adding {source}")
        results.append(add_path(co, Path(source), args.key, progress=bar))
        if bar:
            bar.close()
    if out.json_mode:
        out.data([r.to_dict() for r in results])
    else:
        for r in results:
            out.line(f"{r.key}  {r.object_id[:12]}  {human_size(r.size)}")
    return 0


def cmd_rm(args: argparse.Namespace, out: Output) -> int:
    co = _checkout(args)
    from pvinit.checkout.checkout import Staged

    tracked = set(co.tracked_files())
    removals = []
    for given in args.keys:
        key = given.rstrip("/")
        matched = [k for k in tracked if k == key or k.startswith(key + "/")]
        if not matched:
            raise BadInputError("not in the working tree", where=key)
        removals.extend(matched)
    co.apply_staged(Staged(), removals=tuple(sorted(set(removals))), validate=False)
    if not out.json_mode:
        for key in sorted(set(removals)):
            out.line(f"removed {key}")
    else:
        out.data(sorted(set(removals)))
    return 0


def cmd_container_add(args: argparse.Namespace, out: Output) -> int:
    co = _checkout(args)
    options = ContainerOptions(
        group=args.group,
        status_goal=args.status_goal,
        restart_policy=args.restart_policy,
        init=tuple(args.init) if args.init else None,
        env=parse_assignments(args.env, "--env"),
        lxc=parse_assignments(args.lxc, "--lxc"),
        persistence=args.persistence,
        roles=tuple(args.role or ()),
    )
    bar = out.progress(f"building {args.name}")
    state = add_container(
        co, args.name, args.source, options, replace=args.replace, progress=bar,
        image_config=not args.no_config,
        pull=PullOptions(authfile=Path(args.authfile) if args.authfile else None,
                         insecure=args.insecure_registry),
    )
    if bar:
        bar.close()
    key = f"{args.name}/root.squashfs"
    object_id = state.objects[key]
    if out.json_mode:
        out.data({"container": args.name, "root-volume": key, "id": object_id,
                  "size": co.store.size(object_id)})
    else:
        out.line(f"container {args.name}: {key} {object_id[:12]} "
                 f"({human_size(co.store.size(object_id))})")
    return 0


def cmd_container_list(args: argparse.Namespace, out: Output) -> int:
    co = _checkout(args)
    state = co.working_state()
    rows = []
    for name, c in sorted(state.containers.items()):
        rows.append([name, c.group, c.status_goal, c.restart_policy, " ".join(c.init)])
    if out.json_mode:
        out.data([dict(zip(["name", "group", "status_goal", "restart_policy", "init"], r,
                           strict=True)) for r in rows])
    else:
        out.table(["name", "group", "goal", "restart", "init"], rows)
    return 0


def cmd_bsp_set(args: argparse.Namespace, out: Output) -> int:
    co = _checkout(args)
    parts = {
        name: Path(value)
        for name, value in (
            ("linux", args.kernel), ("initrd", args.initrd), ("modules", args.modules),
            ("firmware", args.firmware), ("dtb", args.dtb),
        )
        if value
    }
    bar = out.progress("building BSP")
    state = set_bsp(co, parts, progress=bar)
    if bar:
        bar.close()
    bsp = {k: v for k, v in state.objects.items() if k.startswith("bsp/")}
    if out.json_mode:
        out.data(bsp)
    else:
        for key, oid in sorted(bsp.items()):
            out.line(f"{key}  {oid[:12]}  {human_size(co.store.size(oid))}")
    return 0


# -- revisions ----------------------------------------------------------------
def cmd_commit(args: argparse.Namespace, out: Output) -> int:
    co = _checkout(args)
    bar = out.progress("hashing")
    rev = co.commit(args.message, expires=args.expires, allow_empty=args.allow_empty, progress=bar)
    if bar:
        bar.close()
    if out.json_mode:
        out.data(_revision_summary(rev))
    else:
        out.line(f"revision {rev.number} {rev.envelope.digest[:12]} state {rev.state.digest[:12]}: "
                 f"{rev.envelope.message}")
    return 0


def _revision_summary(rev: Revision) -> dict[str, object]:
    env = rev.envelope
    return {
        "revision": env.revision,
        "digest": env.digest,
        "parent": env.parent,
        "state": env.state,
        "created": env.created,
        "expires": env.expires,
        "message": env.message,
        "signatures": [s.keyid for s in env.signatures],
        "objects": len(rev.state.object_ids()),
        "bytes": sum(env.sizes.values()),
    }


def cmd_log(args: argparse.Namespace, out: Output) -> int:
    co = _checkout(args)
    head = co.revisions.head()
    revs = [co.revisions.load(n) for n in reversed(co.revisions.numbers())]
    if out.json_mode:
        out.data([{**_revision_summary(r), "head": r.number == head} for r in revs])
        return 0
    for r in revs:
        mark = out.colour(" (HEAD)", "green") if r.number == head else ""
        signed = f" signed:{len(r.envelope.signatures)}" if r.envelope.signatures else ""
        out.line(f"{out.colour(str(r.number), 'yellow')} {r.envelope.digest[:12]} "
                 f"{r.envelope.created}{signed}{mark}  {r.envelope.message}")
    return 0


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    co = _checkout(args)
    rev = co.revisions.load(co.revisions.resolve(args.rev))
    if args.state:
        out.data(rev.state.to_dict())
        return 0
    if out.json_mode:
        out.data({"envelope": rev.envelope.to_dict(), "state": rev.state.to_dict()})
        return 0
    env = rev.envelope
    out.line(f"revision {env.revision}  {env.digest}")
    out.line(f"parent   {env.parent or '-'}")
    out.line(f"state    {env.state}")
    out.line(f"created  {env.created}" + (f"  expires {env.expires}" if env.expires else ""))
    out.line(f"signed   {', '.join(s.keyid[:12] for s in env.signatures) or 'no'}")
    out.line(f"message  {env.message}")
    out.line("")
    rows = []
    for key, value in sorted(rev.state.to_dict().items()):
        if key == "#spec":
            continue
        if isinstance(value, str):
            rows.append([key, value[:12], human_size(env.sizes.get(value, 0))])
        else:
            rows.append([key, "(json)", ""])
    out.table(["key", "object", "size"], rows)
    return 0


def cmd_diff(args: argparse.Namespace, out: Output) -> int:
    from pvinit.state.diff import diff_states
    from pvinit.state.plan import plan_update

    co = _checkout(args)
    if len(args.revs) > 2:
        raise UsageError("diff takes at most two revisions")
    if len(args.revs) == 2:
        old = co.revisions.load(co.revisions.resolve(args.revs[0])).state
        new = co.revisions.load(co.revisions.resolve(args.revs[1])).state
    else:
        base = args.revs[0] if args.revs else "HEAD"
        old = co.revisions.load(co.revisions.resolve(base)).state
        new = co.working_state()
    diff = diff_states(old, new)
    have = old.object_ids()
    plan = plan_update(old, new, have.__contains__)
    if out.json_mode:
        out.data({"old": old.digest, "new": new.digest, "diff": diff.to_dict(),
                  "plan": plan.to_dict()})
        return 0
    for part, pd in sorted(diff.parts.items()):
        out.line(out.colour(f"{part} ({pd.kind})", "bold"))
        for key in pd.added:
            out.line(out.colour(f"  + {key}", "green"))
        for key in pd.removed:
            out.line(out.colour(f"  - {key}", "red"))
        for key in pd.changed:
            out.line(out.colour(f"  ~ {key}", "yellow"))
    if not diff.parts:
        out.line("no differences")
        return 0
    fetch = sum(co.store.size(o) for o in plan.objects_to_fetch if co.store.contains(o))
    out.line("")
    out.line(f"update plan: {'REBOOT' if plan.reboot else 'no reboot'}; "
             f"fetch {len(plan.objects_to_fetch)} object(s), {human_size(fetch)}")
    if plan.containers_to_stop:
        out.line(f"  stop:  {', '.join(plan.containers_to_stop)}")
    if plan.containers_to_start:
        out.line(f"  start: {', '.join(plan.containers_to_start)}")
    for reason in plan.reasons:
        out.line(f"  because {reason}")
    return 0


def cmd_checkout(args: argparse.Namespace, out: Output) -> int:
    co = _checkout(args)
    rev = co.checkout(args.rev, force=args.force)
    if out.json_mode:
        out.data(_revision_summary(rev))
    else:
        out.line(f"working tree is now revision {rev.number}: {rev.envelope.message}")
    return 0


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    from pvinit.bundle.writer import write_bundle

    co = _checkout(args)
    rev = co.revisions.load(co.revisions.resolve(args.rev))
    objects = set(rev.state.object_ids())
    base_digest = None
    if args.base:
        base = co.revisions.load(co.revisions.resolve(args.base))
        objects -= base.state.object_ids()
        base_digest = base.envelope.digest
    bar = out.progress("exporting")
    write_bundle(
        Path(args.output),
        envelope=rev.envelope,
        state_bytes=rev.state.canonical_bytes(),
        store=co.store,
        object_ids=sorted(objects),
        base=base_digest,
        progress=bar,
    )
    if bar:
        bar.close()
    size = Path(args.output).stat().st_size
    result = {"revision": rev.number, "bundle": args.output, "objects": len(objects),
              "bytes": size, "base": base_digest}
    if out.json_mode:
        out.data(result)
    else:
        out.line(f"exported revision {rev.number} to {args.output}: {len(objects)} object(s), "
                 f"{human_size(size)}")
    return 0


# -- signatures -------------------------------------------------------------
def cmd_keygen(args: argparse.Namespace, out: Output) -> int:
    from pvinit.signing.keys import SigningKey, save_keypair

    key = SigningKey.generate()
    private, public = save_keypair(Path(args.name), key)
    if out.json_mode:
        out.data({"keyid": key.keyid, "private": str(private), "public": str(public)})
    else:
        out.line(f"key {key.keyid}")
        out.line(f"  private: {private} (keep it secret)")
        out.line(f"  public:  {public}")
    return 0


def cmd_sign(args: argparse.Namespace, out: Output) -> int:
    from pvinit.signing.keys import load_signing_key
    from pvinit.signing.trust import sign_envelope

    co = _checkout(args)
    number = co.revisions.resolve(args.rev)
    envelope = co.revisions.envelope(number)
    keys = [load_signing_key(Path(p)) for p in args.key]
    for key in keys:
        envelope = sign_envelope(envelope, key)
    co.revisions.write_envelope(envelope, replace=True)
    if out.json_mode:
        out.data({"revision": number, "signatures": [s.keyid for s in envelope.signatures]})
    else:
        for key in keys:
            out.line(f"signed revision {number} with {key.keyid[:12]}")
    return 0


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    from pvinit.signing.keys import load_verify_key
    from pvinit.signing.trust import TrustPolicy, load_trust, verify_signatures

    co = _checkout(args)
    number = co.revisions.resolve(args.rev)
    envelope = co.revisions.envelope(number)
    if args.trust:
        policy = load_trust(Path(args.trust))
    elif args.key:
        policy = TrustPolicy.from_keys(
            [(load_verify_key(Path(p)), Path(p).stem) for p in args.key],
            threshold=args.threshold,
        )
    else:
        raise UsageError("give --trust FILE or at least one --key PUBFILE")
    valid = verify_signatures(envelope, policy)
    # The signed envelope is only as good as the state it names: check it too.
    rev = co.revisions.load(number)
    if out.json_mode:
        out.data({"revision": number, "valid": list(valid), "state": rev.state.digest})
    else:
        out.line(f"revision {number}: good signature(s) by "
                 f"{', '.join(k[:12] for k in valid)} (threshold {policy.threshold})")
    return 0


# -- publishing ---------------------------------------------------------------
def _publish_target(spec: str) -> Path | OciTarget:
    """A repository directory (``DIR``, ``file://DIR``) or a registry (``oci://HOST/REPO``)."""
    from urllib.parse import unquote, urlsplit

    from pvinit.errors import RefusedError

    if is_oci_url(spec):
        return OciTarget.parse(spec)
    if "://" not in spec:
        return Path(spec)
    url = urlsplit(spec)
    if url.scheme in {"http", "https"}:
        raise RefusedError("publishing to an HTTP(S) remote is not supported", where=spec,
                           hint="publish to a directory and serve or sync it, or to a "
                                "registry with oci://HOST/REPO (issue 6)")
    if url.scheme != "file" or url.netloc not in {"", "localhost"} or not url.path:
        raise UsageError("--to takes a directory, a file:///path URL or oci://HOST/REPO",
                         where=spec)
    return Path(unquote(url.path))


def _registry_auth() -> RegistryAuth | None:
    """Registry credentials from PVSTATE_REGISTRY_USER/_PASSWORD or PVSTATE_REGISTRY_TOKEN."""
    from pvinit.transport.registry import RegistryAuth

    user = os.environ.get("PVSTATE_REGISTRY_USER")
    password = os.environ.get("PVSTATE_REGISTRY_PASSWORD")
    token = os.environ.get("PVSTATE_REGISTRY_TOKEN")
    if user is None and token is None:
        return None
    if user is not None and password is None:
        raise UsageError("PVSTATE_REGISTRY_USER needs PVSTATE_REGISTRY_PASSWORD",
                         where="environment")
    return RegistryAuth(username=user, password=password, token=token)


def cmd_publish(args: argparse.Namespace, out: Output) -> int:
    from pvinit.remote.publish import publish

    co = _checkout(args)
    target = _publish_target(args.to)
    bar = out.progress(f"publishing to {args.channel}")
    if isinstance(target, Path):
        report = publish(co, target, args.channel, revision=args.rev,
                         delta_depth=args.delta_depth, level=args.level,
                         allow_unsigned=args.allow_unsigned, force=args.force, progress=bar)
    else:
        from pvinit.remote.oci_publish import publish_oci

        report = publish_oci(co, target, args.channel, revision=args.rev,
                             delta_depth=args.delta_depth, level=args.level,
                             allow_unsigned=args.allow_unsigned, force=args.force,
                             progress=bar, auth=_registry_auth())
    if bar:
        bar.close()
    if out.json_mode:
        out.data({**report.to_dict(), "to": str(target)})
        return 0
    out.line(f"published revision {report.revision} to {target} channel {report.channel}: "
             f"{report.objects_written} object(s) written, {report.objects_skipped} already "
             f"there, {report.deltas_written} delta(s), {human_size(report.bytes_written)}")
    for d in report.deltas:
        out.line(f"  delta {d.base[:12]} -> {d.target[:12]}: {human_size(d.size)} "
                 f"(object {human_size(d.full_size)})")
    if not report.channel_moved:
        out.line(f"channel {report.channel} already pointed at revision {report.revision}")
    return 0


# -- store upkeep -------------------------------------------------------------
def cmd_fsck(args: argparse.Namespace, out: Output) -> int:
    co = _checkout(args)
    report = co.store.fsck(repair=args.repair)
    missing = []
    for number in co.revisions.numbers():
        env = co.revisions.envelope(number)
        for oid in [env.state, *env.sizes]:
            if not co.store.contains(oid):
                missing.append({"revision": number, "object": oid})
    if out.json_mode:
        out.data({**report.to_dict(), "missing": missing})
    else:
        out.line(f"checked {report.checked} object(s)")
        for p in report.problems:
            out.line(out.colour(f"  {p.kind}: {p.path}: {p.detail}", "red"))
        for path in report.repaired:
            out.line(f"  quarantined {path}")
        for m in missing:
            out.line(out.colour(f"  missing: {m['object']} (revision {m['revision']})", "red"))
        if report.clean and not missing:
            out.line("store is clean")
    return 0 if (report.clean or args.repair) and not missing else 5


def cmd_gc(args: argparse.Namespace, out: Output) -> int:
    co = _checkout(args)
    keep: set[str] = set()
    for number in co.revisions.numbers():
        env = co.revisions.envelope(number)
        keep.add(env.state)
        keep.update(env.sizes)
    report = co.store.gc(keep)
    if out.json_mode:
        out.data(report.to_dict())
    else:
        out.line(f"removed {len(report.removed)} object(s), reclaimed "
                 f"{human_size(report.reclaimed_bytes)}; kept {report.kept}")
    return 0


# -- the parser ---------------------------------------------------------------
def build_parser() -> Parser:
    parser = Parser(prog="pvstate", description="Build, sign and ship pvinit state revisions.")
    parser.add_argument("--version", action="version", version=f"pvstate {__version__}")
    parser.add_argument("-C", dest="directory", default=".", metavar="DIR",
                        help="run as if started in DIR")
    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def add(name: str, func: object, help_text: str) -> Parser:
        p: Parser = sub.add_parser(name, help=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    p = add("init", cmd_init, "create a state checkout")
    p.add_argument("path", nargs="?", help="directory (default: -C or .)")
    p.add_argument("--objects", help="object store to use (default: .pvstate/objects)")
    p.add_argument("--no-device", action="store_true", help="do not write a default device.json")

    add("status", cmd_status, "working tree vs HEAD")

    p = add("add", cmd_add, "add a file, or a directory as a squashfs object")
    p.add_argument("sources", nargs="+")
    p.add_argument("--as", dest="key", help="state key to place it at")

    p = add("rm", cmd_rm, "remove keys (or a container directory) from the working tree")
    p.add_argument("keys", nargs="+")

    p_container = sub.add_parser("container", help="add or list containers")
    csub = p_container.add_subparsers(title="container commands", metavar="COMMAND")
    p = csub.add_parser("add", help="build a container from a rootfs dir, tar or OCI image",
                        parents=[common])
    p.set_defaults(func=cmd_container_add)
    p.add_argument("name")
    p.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                   help="rootfs directory or tar archive; or an image: oci:PATH[:TAG], "
                        "docker-archive:FILE[:REPO:TAG], docker://HOST[:PORT]/REPO[:TAG|@DIGEST]")
    p.add_argument("--no-config", action="store_true",
                   help="ignore the image config (command, env, workdir, user)")
    p.add_argument("--authfile", metavar="FILE",
                   help="registry credentials (skopeo/docker login format; default: "
                        "$REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, "
                        "~/.docker/config.json)")
    p.add_argument("--insecure-registry", action="store_true",
                   help="pull over plain HTTP (loopback registries always are)")
    p.add_argument("--group", default="app")
    p.add_argument("--status-goal", default="STARTED", choices=["MOUNTED", "STARTED", "READY"])
    p.add_argument("--restart-policy", default="container", choices=["system", "container"])
    p.add_argument("--init", nargs="+",
                   help="init command and arguments (default: the image's, or /sbin/init)")
    p.add_argument("--env", action="append", metavar="K=V", help="overrides the image's Env")
    p.add_argument("--lxc", action="append", metavar="KEY=VALUE", help="extra LXC config")
    p.add_argument("--persistence", default="boot", choices=["permanent", "revision", "boot"],
                   help="where the writable overlay lives")
    p.add_argument("--role", action="append", help="grant a role (e.g. mgmt)")
    p.add_argument("--replace", action="store_true", help="replace an existing container")
    p = csub.add_parser("list", help="containers of the working tree", parents=[common])
    p.set_defaults(func=cmd_container_list)

    p_bsp = sub.add_parser("bsp", help="set BSP parts")
    bsub = p_bsp.add_subparsers(title="bsp commands", metavar="COMMAND")
    p = bsub.add_parser("set", help="set kernel, initrd, modules, firmware, dtb", parents=[common])
    p.set_defaults(func=cmd_bsp_set)
    for opt in ("kernel", "initrd", "modules", "firmware", "dtb"):
        p.add_argument(f"--{opt}")

    p = add("commit", cmd_commit, "record the working tree as a new revision")
    p.add_argument("-m", "--message", required=True)
    p.add_argument("--expires", help="expiry, YYYY-MM-DDTHH:MM:SSZ")
    p.add_argument("--allow-empty", action="store_true")

    add("log", cmd_log, "list revisions, newest first")

    p = add("show", cmd_show, "show a revision")
    p.add_argument("rev", nargs="?", default="HEAD")
    p.add_argument("--state", action="store_true", help="print only the state JSON")

    p = add("diff", cmd_diff, "diff two revisions (or a revision and the working tree)")
    p.add_argument("revs", nargs="*")

    p = add("checkout", cmd_checkout, "switch the working tree to a revision")
    p.add_argument("rev")
    p.add_argument("--force", action="store_true", help="discard local changes")

    p = add("export", cmd_export, "write a revision as a single-file bundle")
    p.add_argument("rev", nargs="?", default="HEAD")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--base", help="only objects this revision lacks")

    p = add("keygen", cmd_keygen, "make an Ed25519 key pair NAME.key / NAME.pub")
    p.add_argument("name")

    p = add("sign", cmd_sign, "sign a revision")
    p.add_argument("rev", nargs="?", default="HEAD")
    p.add_argument("--key", action="append", required=True, help="private key file")

    p = add("verify", cmd_verify, "verify a revision's signatures")
    p.add_argument("rev", nargs="?", default="HEAD")
    p.add_argument("--key", action="append", help="trusted public key file")
    p.add_argument("--threshold", type=int, default=1)
    p.add_argument("--trust", help="trust file (instead of --key)")

    p = add("publish", cmd_publish,
            "publish a signed revision to a repository directory or an OCI registry")
    p.add_argument("rev", nargs="?", default="HEAD")
    p.add_argument("--to", required=True, metavar="DIR|file://DIR|oci://HOST/REPO",
                   help="repository to write (registry credentials: PVSTATE_REGISTRY_USER "
                        "and _PASSWORD, or PVSTATE_REGISTRY_TOKEN)")
    p.add_argument("--channel", required=True, help="channel to point at the revision")
    p.add_argument("--delta-depth", type=int, default=3, metavar="N",
                   help="make deltas from the last N revisions of the channel (default 3)")
    p.add_argument("--level", type=int, default=19, help="zstd level (default 19)")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="publish an unsigned revision (devices with a trust file refuse it)")
    p.add_argument("--force", action="store_true",
                   help="move the channel backwards or replace a different revision N")

    p = add("fsck", cmd_fsck, "check the object store")
    p.add_argument("--repair", action="store_true", help="quarantine bad files")

    add("gc", cmd_gc, "remove objects no revision references")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run("pvstate", build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Containers from OCI images made by real tools: umoci, skopeo, docker-registry.

One image is built with umoci from a busybox rootfs: a base layer, a
second layer that deletes a file (a ``.wh.`` whiteout, written by umoci),
a third added verbatim with ``umoci raw add-layer`` that makes a directory
opaque, and a config with Entrypoint, Cmd, Env, WorkingDir and User.  skopeo
copies it to a docker-archive, to a zstd-compressed OCI layout, and pushes it
to Debian's docker-registry started on a loopback port chosen here (with
htpasswd basic auth for one test).  Every route must give the same root
volume, byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvinit.cli.pvstate import main
from tests.conftest import need_tool
from tests.unit.test_oci_layers import f, hard, layer_tar, sym
from tests.unit.test_oci_layout import LayoutWriter

pytestmark = pytest.mark.root

TAG = "v1"


def sh(*argv: str, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


def busybox_rootfs(root: Path) -> None:
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc/keep", "data/old"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    app = root / "bin" / "app"
    app.write_text("#!/bin/sh\necho \"app $*\"\nexec sleep 1000\n")
    app.chmod(0o755)
    (root / "etc" / "gone").write_text("deleted by layer 2\n")
    (root / "etc" / "keep" / "x").write_text("kept\n")
    (root / "data" / "old" / "y").write_text("hidden by the opaque layer 3\n")
    (root / "data" / "lower").write_text("hidden by the opaque layer 3\n")


def opaque_layer() -> bytes:
    """Layer 3: ``data`` becomes opaque and gets one new file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("data/.wh..wh..opq", b""), ("data/new", b"from layer 3\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    umoci = need_tool("umoci")
    skopeo = need_tool("skopeo")
    need_tool("mksquashfs")
    work = tmp_path_factory.mktemp("images")
    layout = work / "layout"
    bundle = work / "bundle"
    sh(umoci, "init", "--layout", str(layout))
    sh(umoci, "new", "--image", f"{layout}:{TAG}")
    sh(umoci, "unpack", "--image", f"{layout}:{TAG}", str(bundle))
    busybox_rootfs(bundle / "rootfs")
    sh(umoci, "repack", "--image", f"{layout}:{TAG}", str(bundle))
    shutil.rmtree(bundle)
    sh(umoci, "unpack", "--image", f"{layout}:{TAG}", str(bundle))
    (bundle / "rootfs" / "etc" / "gone").unlink()
    sh(umoci, "repack", "--image", f"{layout}:{TAG}", str(bundle))
    (work / "opaque.tar").write_bytes(opaque_layer())
    sh(umoci, "raw", "add-layer", "--image", f"{layout}:{TAG}", str(work / "opaque.tar"))
    sh(umoci, "config", "--image", f"{layout}:{TAG}",
       "--config.entrypoint", "app", "--config.cmd", "--rate", "--config.cmd", "5",
       "--config.env", "PATH=/usr/bin:/bin", "--config.env", "RATE=5",
       "--config.workingdir", "/data", "--config.user", "1000:1000")
    archive = work / "image.tar"
    sh(skopeo, "copy", f"oci:{layout}:{TAG}", f"docker-archive:{archive}:demo/app:{TAG}")
    zstd_layout = work / "zstd"
    sh(skopeo, "copy", "--dest-compress-format", "zstd", f"oci:{layout}:{TAG}",
       f"oci:{zstd_layout}:{TAG}")
    return {"oci": layout, "docker-archive": archive, "zstd": zstd_layout}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def checkout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    co = tmp_path / "state"
    code, _, err = run(capsys, "init", str(co), "--objects", str(tmp_path / "objects"))
    assert code == 0, err
    return co


def add(capsys: pytest.CaptureFixture[str], co: Path, name: str, source: str,
        *extra: str) -> tuple[int, dict[str, object] | str]:
    code, out, err = run(capsys, "-C", str(co), "container", "add", "--json", name,
                         "--from", source, *extra)
    return code, (json.loads(out) if code == 0 else err)


def unsquash(tmp_path: Path, co: Path, object_id: str) -> Path:
    objects = co.parent / "objects"
    image = objects / object_id[:2] / object_id[2:]
    out = tmp_path / f"unsquashed-{object_id[:12]}"
    sh("unsquashfs", "-no-xattrs", "-d", str(out), str(image))
    return out


def run_json(co: Path, name: str) -> dict[str, object]:
    doc = json.loads((co / name / "run.json").read_text())
    assert isinstance(doc, dict)
    return doc


def test_oci_layout_becomes_a_root_volume_with_whiteouts_and_opaque_dirs_applied(
    images: dict[str, Path], checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result = add(capsys, checkout, "app", f"oci:{images['oci']}:{TAG}")
    assert code == 0, result
    assert isinstance(result, dict)
    root = unsquash(tmp_path, checkout, str(result["id"]))
    assert (root / "bin" / "busybox").is_file()
    assert str((root / "bin" / "sh").readlink()) == "busybox"
    assert not (root / "etc" / "gone").exists()          # .wh.gone
    assert (root / "etc" / "keep" / "x").read_text() == "kept\n"
    assert sorted(p.name for p in (root / "data").iterdir()) == ["new"]  # opaque
    assert (root / "data" / "new").read_text() == "from layer 3\n"


def test_image_config_is_mapped_into_run_json(
    images: dict[str, Path], checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result = add(capsys, checkout, "app", f"oci:{images['oci']}:{TAG}")
    assert code == 0, result
    doc = run_json(checkout, "app")
    assert doc["init"] == ["/bin/app", "--rate", "5"]  # "app" found on the image's PATH
    assert doc["env"] == {"PATH": "/usr/bin:/bin", "RATE": "5"}
    assert doc["cwd"] == "/data"
    assert doc["user"] == "1000:1000"
    code, _, err = run(capsys, "-C", str(checkout), "status")
    assert code == 0, err


def test_explicit_init_and_env_override_the_image_config(
    images: dict[str, Path], checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result = add(capsys, checkout, "app", f"oci:{images['oci']}:{TAG}",
                       "--env", "RATE=9", "--init", "/bin/sh", "/bin/app", "fast")
    assert code == 0, result
    doc = run_json(checkout, "app")
    assert doc["init"] == ["/bin/sh", "/bin/app", "fast"]
    assert doc["env"] == {"PATH": "/usr/bin:/bin", "RATE": "9"}


def test_no_config_ignores_the_image_config(
    images: dict[str, Path], checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result = add(capsys, checkout, "app", f"oci:{images['oci']}:{TAG}", "--no-config")
    assert code == 0, result
    doc = run_json(checkout, "app")
    assert doc["init"] == ["/sbin/init"]
    assert doc["env"] == {}
    assert "cwd" not in doc and "user" not in doc


def test_docker_archive_and_zstd_layout_give_the_same_volume_as_the_oci_layout(
    images: dict[str, Path], checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = set()
    for i, source in enumerate((f"oci:{images['oci']}:{TAG}",
                                f"docker-archive:{images['docker-archive']}",
                                f"oci:{images['zstd']}:{TAG}",
                                f"oci:{images['oci']}:{TAG}")):
        code, result = add(capsys, checkout, f"app{i}", source)
        assert code == 0, (source, result)
        assert isinstance(result, dict)
        ids.add(result["id"])
        assert run_json(checkout, f"app{i}")["cwd"] == "/data"
    assert len(ids) == 1


def test_unknown_tag_is_refused_naming_the_tags_there(
    images: dict[str, Path], checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = add(capsys, checkout, "app", f"oci:{images['oci']}:nope")
    assert code == 4
    assert "nope" in str(err) and TAG in str(err)
    assert not (checkout / "app").exists()


def test_a_tampered_layer_blob_is_refused_naming_its_digest(
    images: dict[str, Path], checkout: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    layout = tmp_path / "tampered"
    shutil.copytree(images["oci"], layout)
    index = json.loads((layout / "index.json").read_text())
    manifest_hex = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_hex).read_bytes())
    layer_digest = manifest["layers"][-1]["digest"]
    blob = layout / "blobs" / "sha256" / layer_digest.split(":")[1]
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    code, err = add(capsys, checkout, "app", f"oci:{layout}:{TAG}")
    assert code == 5, err
    assert layer_digest in str(err)
    assert not (checkout / "app").exists()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (to prove 'no change on disk')."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "tmp" not in p.relative_to(root).parts
            and p.name != "cache.json"}


@pytest.mark.parametrize(
    ("hostile", "member"),
    [
        (lambda: layer_tar(f("../../etc/cron.d/evil")), "../../etc/cron.d/evil"),
        (lambda: layer_tar(f("/etc/passwd")), "/etc/passwd"),
        (lambda: layer_tar(sym("out", "../../../"), f("out/x")), "out"),
        (lambda: layer_tar(hard("shadow", "../../etc/shadow")), "shadow"),
        (lambda: layer_tar(sym("etc", "/etc"), f("etc/.wh.passwd")), "etc/.wh.passwd"),
    ],
)
def test_hostile_layers_are_refused_naming_the_member_with_nothing_changed(
    checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    hostile: object, member: str,
) -> None:
    need_tool("mksquashfs")
    layout = LayoutWriter(tmp_path / "hostile")
    assert callable(hostile)
    layout.image([layer_tar(f("bin/ok")), hostile()], tag=TAG)
    before = snapshot(checkout.parent)
    code, err = add(capsys, checkout, "evil", f"oci:{layout.root}:{TAG}")
    assert code == 3, err
    assert f"tar member {member!r}" in str(err)
    assert snapshot(checkout.parent) == before


# -- registry ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for the registry's htpasswd file, via glibc's libxcrypt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))  # noqa: S324 - bcrypt


class Registry:
    """Debian's docker-registry on a loopback port, storage in a temp dir."""

    def __init__(self, work: Path, *, htpasswd: str | None = None,
                 extra_config: list[str] | None = None) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        work.mkdir(parents=True)
        config = [
            "version: 0.1",
            "log: {level: warn}",
            "storage:",
            f"  filesystem: {{rootdirectory: {work / 'data'}}}",
            "  delete: {enabled: true}",
            f"http: {{addr: '{self.host}'}}",
        ]
        if htpasswd is not None:
            (work / "htpasswd").write_text(htpasswd + "\n")
            config += ["auth:", "  htpasswd:", "    realm: test",
                       f"    path: {work / 'htpasswd'}"]
        config += extra_config or []
        (work / "config.yml").write_text("\n".join(config) + "\n")
        self.log = (work / "registry.log").open("wb")
        self.proc = subprocess.Popen(
            [need_tool("docker-registry"), "serve", str(work / "config.yml")],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "docker-registry exited"
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2).close()
                return
            except urllib.error.HTTPError:
                return  # 401: up, and asking for credentials
            except OSError:
                time.sleep(0.1)
        raise AssertionError("docker-registry did not start")

    def push(self, layout: Path, repo: str, *, creds: str | None = None) -> None:
        argv = [need_tool("skopeo"), "copy", "--dest-tls-verify=false"]
        if creds is not None:
            argv += ["--dest-creds", creds]
        sh(*argv, f"oci:{layout}:{TAG}", f"docker://{self.host}/{repo}:{TAG}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    server = Registry(tmp_path / "registry")
    yield server
    server.close()


def test_registry_reference_pulls_the_same_volume_and_config(
    images: dict[str, Path], registry: Registry, checkout: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry.push(images["oci"], "demo/app")
    code, pulled = add(capsys, checkout, "pulled", f"docker://{registry.host}/demo/app:{TAG}")
    assert code == 0, pulled
    code, local = add(capsys, checkout, "local", f"oci:{images['oci']}:{TAG}")
    assert code == 0, local
    assert isinstance(pulled, dict) and isinstance(local, dict)
    assert pulled["id"] == local["id"]
    assert run_json(checkout, "pulled")["user"] == "1000:1000"


def test_registry_reference_by_digest_and_unknown_tag(
    images: dict[str, Path], registry: Registry, checkout: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry.push(images["oci"], "demo/app")
    with urllib.request.urlopen(urllib.request.Request(
        f"http://{registry.host}/v2/demo/app/manifests/{TAG}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )) as response:
        digest = "sha256:" + hashlib.sha256(response.read()).hexdigest()
    code, result = add(capsys, checkout, "bydigest", f"docker://{registry.host}/demo/app@{digest}")
    assert code == 0, result
    code, err = add(capsys, checkout, "missing", f"docker://{registry.host}/demo/app:nope")
    assert code == 4, err
    assert "nope" in str(err)


def test_registry_with_basic_auth_needs_the_auth_file(
    images: dict[str, Path], tmp_path: Path, checkout: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = Registry(tmp_path / "authreg", htpasswd=f"ci:{bcrypt_hash('s3cret')}")
    try:
        server.push(images["oci"], "demo/app", creds="ci:s3cret")
        source = f"docker://{server.host}/demo/app:{TAG}"
        empty = tmp_path / "noauth.json"
        empty.write_text('{"auths": {}}')
        code, err = add(capsys, checkout, "app", source, "--authfile", str(empty))
        assert code == 9, err
        assert not (checkout / "app").exists()
        authfile = write_authfile(tmp_path / "auth.json", server.host, "ci:s3cret")
        code, result = add(capsys, checkout, "app", source, "--authfile", str(authfile))
        assert code == 0, result
    finally:
        server.close()


# -- registry with token auth ---------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """A token realm for docker-registry's ``token`` auth: RS256 JWTs with an x5c chain.

    It answers ``GET /token?service=..&scope=..`` with a token granting the
    scopes asked for, but only to a client that sends the right Basic
    credentials; every request's Authorization header is recorded.
    """

    def __init__(self, work: Path, *, user: str, password: str) -> None:
        import datetime
        import http.server
        import threading

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
        from cryptography.x509.oid import NameOID

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pvinit test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(1)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        self.cert_pem = work / "token-cert.pem"
        self.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.seen: list[str | None] = []
        service = self

        def token(scope: str, aud: str) -> str:
            access = []
            for item in scope.split(" "):
                kind, _, rest = item.partition(":")
                repo, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": repo, "actions": actions.split(",")})
            issued = int(time.time())
            header = {"alg": "RS256", "typ": "JWT", "x5c": [x5c]}
            claims = {"iss": "pvinit-test", "sub": user, "aud": aud, "exp": issued + 600,
                      "nbf": issued - 60, "iat": issued, "jti": str(issued), "access": access}
            signing_input = (b64url(json.dumps(header).encode()) + "."
                             + b64url(json.dumps(claims).encode()))
            signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
            return signing_input + "." + b64url(signature)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                import urllib.parse

                auth = self.headers.get("Authorization")
                service.seen.append(auth)
                if auth != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                body = json.dumps({"token": token(" ".join(query.get("scope", [""])),
                                                  query["service"][0])}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_registry_with_token_auth_gets_a_token_with_the_auth_files_credentials(
    images: dict[str, Path], tmp_path: Path, checkout: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tokens = TokenService(tmp_path, user="ci", password="s3cret")
    auth = ["auth:", "  token:", f"    realm: {tokens.realm}", "    service: pvinit-registry",
            "    issuer: pvinit-test", f"    rootcertbundle: {tokens.cert_pem}"]
    server = Registry(tmp_path / "tokenreg", extra_config=auth)
    try:
        server.push(images["oci"], "demo/app", creds="ci:s3cret")
        source = f"docker://{server.host}/demo/app:{TAG}"
        tokens.seen.clear()
        code, err = add(capsys, checkout, "app", source, "--authfile",
                        str(write_authfile(tmp_path / "wrong.json", server.host, "ci:nope")))
        assert code == 9, err
        assert "token service refused" in str(err)
        code, result = add(capsys, checkout, "app", source, "--authfile",
                           str(write_authfile(tmp_path / "auth.json", server.host, "ci:s3cret")))
        assert code == 0, result
        assert tokens.seen[-1] == "Basic " + base64.b64encode(b"ci:s3cret").decode()
    finally:
        server.close()
        tokens.close()


def write_authfile(path: Path, host: str, creds: str) -> Path:
    token = base64.b64encode(creds.encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path

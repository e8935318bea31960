"""Registry references, loopback rule and auth files (the pulls run against a real registry
in tests/integration/test_oci_images.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pvinit.build.oci_registry import RegistryClient, RegistryRef, is_loopback, load_credentials
from pvinit.errors import BadInputError, NotFoundError


def test_reference_parts_and_text() -> None:
    ref = RegistryRef.parse("127.0.0.1:5000/demo/app:v1")
    assert (ref.host, ref.repository, ref.reference) == ("127.0.0.1:5000", "demo/app", "v1")
    assert str(ref) == "docker://127.0.0.1:5000/demo/app:v1"
    digest = "sha256:" + "a" * 64
    assert str(RegistryRef.parse(f"host/app@{digest}")) == f"docker://host/app@{digest}"


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost:5000", True), ("127.0.0.1", True), ("127.1.2.3:80", True), ("[::1]:5000", True),
    ("registry.example", False), ("10.0.0.1:5000", False),
])
def test_only_loopback_hosts_default_to_plain_http(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    client = RegistryClient(RegistryRef(host=host, repository="a", reference="v1"))
    assert client.scheme == ("http" if loopback else "https")


def test_insecure_allows_plain_http_anywhere() -> None:
    ref = RegistryRef(host="registry.example", repository="a", reference="v1")
    assert RegistryClient(ref, insecure=True).scheme == "http"


def auth_file(path: Path, auths: dict[str, object]) -> Path:
    path.write_text(json.dumps({"auths": auths}))
    return path


def test_credentials_come_from_the_auth_file_by_host(tmp_path: Path) -> None:
    token = base64.b64encode(b"ci:pa:ss").decode()
    path = auth_file(tmp_path / "auth.json", {"https://reg.example": {"auth": token}})
    assert load_credentials("reg.example", path) == ("ci", "pa:ss")
    assert load_credentials("other.example", path) is None


def test_credentials_fall_back_to_registry_auth_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = base64.b64encode(b"u:p").decode()
    path = auth_file(tmp_path / "auth.json", {"reg.example": {"auth": token}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_credentials("reg.example") == ("u", "p")


def test_a_missing_or_broken_auth_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_credentials("reg.example", tmp_path / "none.json")
    broken = auth_file(tmp_path / "broken.json",
                       {"reg.example": {"auth": base64.b64encode(b"nocolon").decode()}})
    with pytest.raises(BadInputError, match="user:password"):
        load_credentials("reg.example", broken)
    (tmp_path / "notjson").write_text("{")
    with pytest.raises(BadInputError):
        load_credentials("reg.example", tmp_path / "notjson")

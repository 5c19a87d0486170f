"""Trust in the registry client: credentials only to their own origin, Retry-After up to
--retry-max-wait, 416 and lost PUT answers during uploads, schema 1 refused, the empty
config, missing credential helpers, the containers auth file, host name case, one GET
when HEAD has no digest, and stalls named as stalls.

All against real registries on 127.0.0.1, with faults from FaultProxy in front of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from bundler import TransferError, export_bundle
from bundler.cli.main import main
from bundler.errors import AuthenticationError, RateLimitError, TransportError
from bundler.events import Event
from bundler.oci.content import EMPTY_JSON_DIGEST, ManifestError
from bundler.oci.digest import Digest
from bundler.oci.reference import Reference
from bundler.registry import tls
from bundler.registry.client import RegistryClient, TransportOptions
from bundler.registry.credentials import Credentials, Keychain
from bundler.sandbox import (
    FaultProxy,
    LocalRegistry,
    TokenServer,
    make_artifact,
    make_image,
    make_layer,
    push,
    random_layer,
    start_registry,
)

FIXTURES = Path(__file__).parent / "fixtures"
FAST = TransportOptions(retries=2, retry_delay_s=0.01, retry_cap_s=0.5)
IMAGE = make_image([make_layer({"trust.txt": b"trust nothing that came in"})])
USER, PASSWORD = "alice", "alice-secret-pw"
#: The registry digest of the schema 1 fixture: over its JWS payload (fixtures/README.md).
SCHEMA1_DIGEST = "sha256:02fee8c3220ba806531f606525eceb83f4feb654f62b207191b1c9209188dedd"


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No auth file or certs.d directory of the machine may leak in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tls, "CERTS_D_ROOTS", (str(tmp_path / "no-certs.d"),))
    return home


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def has_authorization(headers: dict[str, str]) -> bool:
    return any(key.lower() == "authorization" for key in headers)


def registry_blob(reg: LocalRegistry, repository: str, digest: str) -> bytes:
    with reg.client() as http:
        response = http.get(f"{reg.url}/v2/{repository}/blobs/{digest}")
    assert response.status_code == 200
    return response.content


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# -- credentials go only where they were meant to -------------------------------------
@pytest.fixture
def storage_pair(registry_factory: Callable[..., LocalRegistry],
                 fault_proxy: Callable[..., FaultProxy]
                 ) -> tuple[LocalRegistry, FaultProxy, FaultProxy]:
    """(htpasswd registry, the registry's front proxy, a 'storage host' on another port).

    The storage host stands for a place an upload session may be sent to: it accepts
    the upload by its URL alone (it adds the credentials itself, after recording what
    the client sent)."""
    dest = registry_factory(htpasswd=(USER, PASSWORD))
    storage = fault_proxy(dest.url)
    storage.set_request_header(".", "Authorization", basic(USER, PASSWORD))
    front = fault_proxy(dest.url)
    return dest, front, storage


def test_upload_location_on_another_port_gets_no_authorization(storage_pair: tuple) -> None:
    dest, front, storage = storage_pair
    front.rewrite_location(r"/blobs/uploads/$", storage.host, method="POST")
    layer = random_layer(5, 250_000)
    options = TransportOptions(credentials=Credentials(USER, PASSWORD), chunk_size=100_000,
                               retries=1, retry_delay_s=0.01)
    with RegistryClient(front.host, options) as client:
        client.put_blob("app", Digest.parse(layer.digest), layer.size, lambda: iter([layer.data]))
    sent = [(method, headers) for method, _, headers in storage.headers]
    assert [method for method, _ in sent] == ["PATCH", "PATCH", "PATCH", "PUT"]
    assert [has_authorization(headers) for _, headers in sent] == [False] * 4
    # the registry itself did get them
    assert [has_authorization(h) for m, _, h in front.headers if m == "POST"] == [True]
    assert registry_blob(dest, "app", layer.digest) == layer.data


def test_upload_redirected_to_another_port_gets_no_authorization(storage_pair: tuple) -> None:
    dest, front, storage = storage_pair
    front.status(r"/blobs/uploads/$", 307,
                 {"Location": f"{storage.url}/v2/app/blobs/uploads/"}, method="POST")
    layer = random_layer(6, 2_000)
    options = TransportOptions(credentials=Credentials(USER, PASSWORD), retries=1,
                               retry_delay_s=0.01)
    with RegistryClient(front.host, options) as client:
        client.put_blob("app", Digest.parse(layer.digest), layer.size, lambda: iter([layer.data]))
    sent = [(method, headers) for method, _, headers in storage.headers]
    assert [method for method, _ in sent] == ["POST", "PUT"]
    assert [has_authorization(headers) for _, headers in sent] == [False, False]
    assert registry_blob(dest, "app", layer.digest) == layer.data


@pytest.fixture
def tls_token_registry(tmp_path: Path, ca: Any) -> Iterator[tuple[LocalRegistry, TokenServer]]:
    """A TLS registry whose token realm is plain http (anonymous pulls allowed)."""
    tokens = TokenServer({USER: PASSWORD}, anonymous=True).start()
    reg = start_registry(tmp_path / "tls-token", tls=ca, token=tokens)
    try:
        with reg.client() as http:
            push(reg, "team/app", IMAGE, tag="v1", client=http)
        tokens.requests.clear()
        yield reg, tokens
    finally:
        reg.stop()
        tokens.stop()


def test_plain_http_realm_of_a_tls_registry_gets_no_credentials(
        tls_token_registry: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg, tokens = tls_token_registry
    options = TransportOptions(credentials=Credentials(USER, PASSWORD), cert_dir=reg.cert_dir,
                               retries=0)
    with caplog.at_level(logging.WARNING, logger="bundler"):
        result = export_bundle([f"{reg.host}/team/app:v1"], tmp_path / "anon", options=options)
    assert str(result.images[0].descriptor.digest) == IMAGE.digest
    assert tokens.requests and {user for _, _, _, user in tokens.requests} == {None}
    assert caplog.messages == [
        f"{reg.host}: not sending credentials to the token service {tokens.realm}: it is "
        "plain http while the registry is reached over https (plain http is allowed with "
        "--src-tls-verify=false/--dest-tls-verify=false); asking for an anonymous token"]

    tokens.anonymous = False  # now the credentials would be needed: a clear refusal
    with pytest.raises(TransferError) as info:
        export_bundle([f"{reg.host}/team/app:v1"], tmp_path / "refused", options=options)
    assert isinstance(info.value.cause, AuthenticationError)
    assert str(info.value.cause) == (
        f"{reg.host}: the token service refused anonymously (credentials withheld: "
        f"{tokens.realm} is plain http while {reg.host} is reached over https; plain http "
        "is allowed with --src-tls-verify=false/--dest-tls-verify=false) (HTTP 401 from "
        f"{tokens.realm})")
    assert {user for _, _, _, user in tokens.requests} == {None}


def test_plain_http_realm_gets_credentials_when_plain_http_is_allowed(
        tls_token_registry: tuple, tmp_path: Path) -> None:
    reg, tokens = tls_token_registry
    tokens.anonymous = False
    options = TransportOptions(credentials=Credentials(USER, PASSWORD), tls_verify=False,
                               retries=0)
    result = export_bundle([f"{reg.host}/team/app:v1"], tmp_path / "b", options=options)
    assert str(result.images[0].descriptor.digest) == IMAGE.digest
    assert {user for _, _, _, user in tokens.requests} == {USER}


# -- Retry-After up to --retry-max-wait ----------------------------------------------
@pytest.fixture
def pushed(registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy]
           ) -> tuple[LocalRegistry, FaultProxy]:
    """A registry holding a/b:1 (IMAGE), behind a fresh proxy."""
    push(registry, "a/b", IMAGE, tag="1")
    return registry, fault_proxy(registry.url)


def test_retry_after_longer_than_the_backoff_cap_is_waited_and_reported(pushed: tuple) -> None:
    _, proxy = pushed
    proxy.status(r"/manifests/1$", 429, {"Retry-After": "2"}, method="GET")
    events: list[Event] = []
    options = TransportOptions(retries=2, retry_delay_s=0.01, retry_cap_s=0.5,
                               retry_max_wait_s=3, reporter=events.append)
    with RegistryClient(proxy.host, options) as client:
        assert str(client.get_manifest("a/b", "1")[2]) == IMAGE.digest
    assert events == [Event("wait", proxy.host, "start", total=2,
                            detail="HTTP 429 with Retry-After: retrying in 2 s")]
    assert [s for m, p, s, _ in proxy.requests if "/manifests/" in p] == [429, 200]


def test_retry_after_beyond_the_max_wait_fails_at_once(pushed: tuple) -> None:
    _, proxy = pushed
    proxy.status(r"/manifests/1$", 429, {"Retry-After": "40"}, method="GET")
    events: list[Event] = []
    options = TransportOptions(retries=3, retry_delay_s=0.01, retry_cap_s=0.5,
                               retry_max_wait_s=5, reporter=events.append)
    with RegistryClient(proxy.host, options) as client, pytest.raises(RateLimitError) as info:
        client.get_manifest("a/b", "1")
    assert str(info.value) == (
        f"manifest {proxy.host}/a/b:1: {proxy.host} answered HTTP 429 (asked to retry after "
        "40 s, longer than the longest wait allowed, --retry-max-wait 5 s)")
    assert proxy.count("GET", "/manifests/") == 1
    assert events == []


def test_cli_retry_max_wait_option_and_the_wait_shown(pushed: tuple, tmp_path: Path) -> None:
    _, proxy = pushed
    proxy.status(r"/manifests/1$", 429, {"Retry-After": "40"}, method="GET")
    result = run("export", f"{proxy.host}/a/b:1", "-o", str(tmp_path / "b1"),
                 "--retry-max-wait", "5", "--progress", "plain")
    assert result.exit_code == 1
    assert "--retry-max-wait 5 s)" in result.stderr
    assert result.stderr.startswith("error: ") or "\nerror: " in result.stderr

    proxy.status(r"/manifests/1$", 429, {"Retry-After": "1"}, method="GET")
    result = run("export", f"{proxy.host}/a/b:1", "-o", str(tmp_path / "b2"),
                 "--progress", "plain")
    assert result.exit_code == 0, result.stderr
    assert (f"waiting for {proxy.host}: HTTP 429 with Retry-After: retrying in 1 s\n"
            in result.stderr)

    result = run("export", f"{proxy.host}/a/b:1", "-o", str(tmp_path / "b3"),
                 "--retry-max-wait", "-1")
    assert result.exit_code == 2
    assert "--retry-max-wait" in result.stderr


# -- uploads: 416 and a lost PUT answer -------------------------------------------------
def _post_patch_put_head(proxy: FaultProxy) -> list[tuple[str, int]]:
    return [(m, s) for m, p, s, _ in proxy.requests if "/blobs/" in p]


def test_chunk_answered_416_resumes_from_the_session_offset(
        registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(registry.url)
    proxy.add_rule("status", r"/blobs/uploads/", method="PATCH", times=1, skip=1, code=416,
                   headers={}, body=b"")
    layer = random_layer(7, 250_000)
    options = TransportOptions(chunk_size=100_000, retries=2, retry_delay_s=0.01)
    with RegistryClient(proxy.host, options) as client:
        client.put_blob("app", Digest.parse(layer.digest), layer.size, lambda: iter([layer.data]))
    assert _post_patch_put_head(proxy) == [
        ("POST", 202), ("PATCH", 202), ("PATCH", 416), ("GET", 204), ("PATCH", 202),
        ("PATCH", 202), ("PUT", 201)]
    assert registry_blob(registry, "app", layer.digest) == layer.data


@pytest.mark.parametrize("chunk_size", [100_000, 1 << 20], ids=["chunked", "monolithic"])
def test_put_that_landed_but_answered_500_is_not_sent_again(
        chunk_size: int, registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(registry.url)
    proxy.forward_then_status(r"/blobs/uploads/.*digest=", 500, method="PUT")
    layer = random_layer(8, 150_000)
    options = TransportOptions(chunk_size=chunk_size, retries=2, retry_delay_s=0.01)
    with RegistryClient(proxy.host, options) as client:
        client.put_blob("app", Digest.parse(layer.digest), layer.size, lambda: iter([layer.data]))
    patches = [("PATCH", 202)] * 2 if chunk_size < layer.size else []
    assert _post_patch_put_head(proxy) == [("POST", 202), *patches, ("PUT", 500), ("HEAD", 200)]
    assert registry_blob(registry, "app", layer.digest) == layer.data


def test_final_put_answered_500_is_retried_on_the_same_session(
        registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(registry.url)
    proxy.status(r"/blobs/uploads/.*digest=", 500, method="PUT")
    layer = random_layer(9, 150_000)
    options = TransportOptions(chunk_size=100_000, retries=2, retry_delay_s=0.01)
    with RegistryClient(proxy.host, options) as client:
        client.put_blob("app", Digest.parse(layer.digest), layer.size, lambda: iter([layer.data]))
    assert _post_patch_put_head(proxy) == [
        ("POST", 202), ("PATCH", 202), ("PATCH", 202), ("PUT", 500), ("HEAD", 404),
        ("PUT", 201)]
    assert registry_blob(registry, "app", layer.digest) == layer.data


# -- manifests and configs seen in the field ---------------------------------------------
@pytest.mark.parametrize("content_type", [
    "application/vnd.docker.distribution.manifest.v1+prettyjws", "application/json"])
def test_schema1_manifest_is_refused_not_a_digest_mismatch(
        content_type: str, registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy],
        tmp_path: Path) -> None:
    raw = (FIXTURES / "docker-schema1-signed.hello-world.json").read_bytes()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() != SCHEMA1_DIGEST
    proxy = fault_proxy(registry.url)
    headers = {"Content-Type": content_type, "Docker-Content-Digest": SCHEMA1_DIGEST}
    proxy.status(r"/manifests/", 200, headers, raw, method="GET", times=None)
    proxy.status(r"/manifests/", 200, headers, method="HEAD", times=None)
    name = f"{proxy.host}/library/hello-world"
    with pytest.raises(TransferError) as info:
        export_bundle([f"{name}:latest"], tmp_path / "b", options=FAST)
    assert isinstance(info.value.cause, ManifestError)
    assert str(info.value.cause) == (
        f"manifest {name}:latest: schema1 is not supported (Docker image manifest v2 schema "
        "1 is deprecated); rebuild or re-push the image with schema 2 or OCI")
    with RegistryClient(proxy.host, FAST) as client, pytest.raises(ManifestError) as by_digest:
        client.get_manifest("library/hello-world", str(client.resolve("library/hello-world",
                                                                      "latest")))
    assert "schema1 is not supported" in str(by_digest.value)
    result = run("export", f"{name}:latest", "-o", str(tmp_path / "c"))
    assert result.exit_code == 1
    assert "schema1 is not supported" in result.stderr
    assert "digest" not in result.stderr.split("schema1")[0].split("error:")[-1]


@pytest.mark.parametrize("served", [(200, b""), (404, b"")], ids=["empty", "missing"])
def test_empty_config_is_the_two_bytes_even_when_served_empty(
        served: tuple[int, bytes], registry: LocalRegistry,
        fault_proxy: Callable[..., FaultProxy], tmp_path: Path) -> None:
    image = push_artifact(registry)
    proxy = fault_proxy(registry.url)
    proxy.status(rf"/blobs/{EMPTY_JSON_DIGEST}$", served[0], {}, served[1], method="GET",
                 times=None)
    export_bundle([f"{proxy.host}/a/sig:1"], tmp_path / "b", options=FAST)
    assert (tmp_path / "b" / "blobs" / "sha256" / EMPTY_JSON_DIGEST.hex).read_bytes() == b"{}"
    assert proxy.count("GET", rf"/blobs/{EMPTY_JSON_DIGEST}$") == 1
    assert json.loads((tmp_path / "b" / "index.json").read_text())["manifests"][0][
        "digest"] == image.digest


def push_artifact(registry: LocalRegistry) -> Any:
    push(registry, "a/sig", IMAGE, tag="subject")
    artifact = make_artifact(IMAGE, b'{"signed": true}')
    assert artifact.config.digest == str(EMPTY_JSON_DIGEST)
    push(registry, "a/sig", artifact, tag="1")
    return artifact


def test_empty_config_served_with_other_bytes_is_still_refused(
        registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy], tmp_path: Path) -> None:
    push_artifact(registry)
    proxy = fault_proxy(registry.url)
    proxy.status(rf"/blobs/{EMPTY_JSON_DIGEST}$", 200, {}, b"[]", method="GET", times=None)
    with pytest.raises(TransferError) as info:
        export_bundle([f"{proxy.host}/a/sig:1"], tmp_path / "b", options=FAST)
    assert str(EMPTY_JSON_DIGEST) in str(info.value)


def test_head_without_digest_fetches_the_manifest_once(pushed: tuple, tmp_path: Path) -> None:
    registry, proxy = pushed
    proxy.drop_response_header(r"/manifests/", "Docker-Content-Digest", method="HEAD")
    with RegistryClient(proxy.host, FAST) as client:
        digest = client.resolve("a/b", "1")
        assert str(digest) == IMAGE.digest
        assert str(client.get_manifest("a/b", "1")[2]) == IMAGE.digest
        assert str(client.resolve("a/b", "1")) == IMAGE.digest
        assert str(client.get_manifest("a/b", str(digest))[2]) == IMAGE.digest
    assert [(m, s) for m, p, s, _ in proxy.requests if "/manifests/" in p] == [
        ("HEAD", 200), ("GET", 200), ("HEAD", 200), ("GET", 200)]
    # an export into an existing bundle HEADs the tag first: still one GET
    push(registry, "a/c", IMAGE, tag="1")
    bundle = tmp_path / "bundle"
    export_bundle([f"{registry.host}/a/b:1"], bundle, options=FAST)
    proxy.requests.clear()
    export_bundle([f"{proxy.host}/a/c:1"], bundle, options=FAST)
    assert [(m, p) for m, p, _, _ in proxy.requests if "/manifests/" in p] == [
        ("HEAD", "/v2/a/c/manifests/1"), ("GET", "/v2/a/c/manifests/1")]


# -- credential helpers and auth files ----------------------------------------------------
def test_missing_credential_helper_is_a_warning_and_anonymous_access(
        registry: LocalRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    push(registry, "a/b", IMAGE, tag="1")
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"credHelpers": {registry.host: "bundler-absent-lib"}}))
    options = TransportOptions(keychain=Keychain(authfile=authfile), retries=0)
    with caplog.at_level(logging.WARNING, logger="bundler"):
        result = export_bundle([f"{registry.host}/a/b:1"], tmp_path / "b", options=options)
    assert str(result.images[0].descriptor.digest) == IMAGE.digest
    assert caplog.messages == [
        f"credential helper docker-credential-bundler-absent-lib (for '{registry.host}') is "
        "not on PATH; going on without its credentials (anonymous access)"]
    authfile.write_text(json.dumps({"credsStore": "bundler-absent-cli"}))
    result = run("export", f"{registry.host}/a/b:1", "-o", str(tmp_path / "c"),
                 "--src-authfile", str(authfile))
    assert result.exit_code == 0, result.stderr
    assert ("warning: credential helper docker-credential-bundler-absent-cli (for "
            f"'{registry.host}') is not on PATH; going on without its credentials "
            "(anonymous access)\n") in result.stderr
    assert "error" not in result.stderr


def test_containers_auth_file_under_the_config_home_is_read(
        registry_factory: Callable[..., LocalRegistry], tmp_path: Path, clean_env: Path) -> None:
    reg = registry_factory(htpasswd=(USER, PASSWORD))
    with reg.client() as http:
        push(reg, "a/b", IMAGE, tag="1", client=http)
    good = {"auths": {reg.host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode())
                                 .decode()}}}
    bad = {"auths": {reg.host: {"auth": base64.b64encode(b"mallory:nope").decode()}}}
    containers = clean_env / ".config" / "containers" / "auth.json"
    containers.parent.mkdir(parents=True)
    containers.write_text(json.dumps(good))
    docker = clean_env / ".docker" / "config.json"  # read after it, as podman does
    docker.parent.mkdir()
    docker.write_text(json.dumps(bad))
    result = export_bundle([f"{reg.host}/a/b:1"], tmp_path / "b",
                           options=TransportOptions(retries=0))
    assert str(result.images[0].descriptor.digest) == IMAGE.digest


# -- host names, stalls -----------------------------------------------------------------
def test_host_names_are_case_insensitive(registry: LocalRegistry, tmp_path: Path) -> None:
    assert Reference.parse("LOCALHOST:5000/a/b:Tag").registry == "localhost:5000"
    assert str(Reference.parse("Docker.IO/library/x")) == "docker.io/library/x:latest"
    assert str(Reference.parse("Registry.Example:5000/a/b:Tag")) == \
        "registry.example:5000/a/b:Tag"  # the tag keeps its case
    push(registry, "a/b", IMAGE, tag="1")
    port = registry.host.rpartition(":")[2]
    result = run("export", f"LOCALHOST:{port}/a/b:1", "-o", str(tmp_path / "b"))
    assert result.exit_code == 0, result.stderr
    entry = json.loads((tmp_path / "b" / "index.json").read_text())["manifests"][0]
    assert entry["digest"] == IMAGE.digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == f"localhost:{port}/a/b:1"


def test_a_stalled_download_is_stalled_not_unreachable(
        pushed: tuple, fault_proxy: Callable[..., FaultProxy]) -> None:
    _, proxy = pushed
    layer = IMAGE.layers[0]
    proxy.stall(rf"/blobs/{layer.digest}$", nbytes=0, seconds=60, times=None)
    options = TransportOptions(retries=1, retry_delay_s=0.01, timeout_s=1.0)
    with RegistryClient(proxy.host, options) as client, pytest.raises(TransportError) as info:
        b"".join(client.iter_blob("a/b", Digest.parse(layer.digest)))
    assert str(info.value) == (f"blob {layer.digest} from {proxy.host}/a/b: {proxy.host} "
                               "stalled: no data moved for 1 s")
    assert "cannot reach" not in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)

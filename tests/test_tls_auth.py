"""TLS trust (cert dirs, certs.d per host, verification off), token auth with identity
tokens and per-repository credentials, and ``--debug`` output free of secrets.

All against real registries on 127.0.0.1: TLS with a trustme CA, token auth through the
sandbox TokenServer.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from bundler import export_bundle
from bundler.cli.main import main
from bundler.errors import AuthenticationError, BundlerError, TransferError, TransportError
from bundler.registry import tls
from bundler.registry.client import RegistryClient, TransportOptions
from bundler.registry.credentials import Credentials, Keychain
from bundler.registry.tls import ssl_context
from bundler.sandbox import (
    LocalRegistry,
    TokenServer,
    make_image,
    make_layer,
    push,
    start_registry,
)

IMAGE = make_image([make_layer({"tls.txt": b"over tls"})])
OTHER = make_image([make_layer({"other.txt": b"other repo"})])
USERS = {"pusher": "push-secret-pw", "alice": "alice-secret-pw", "bob": "bob-secret-pw"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No auth file or certs.d directory of the machine may leak in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tls, "CERTS_D_ROOTS", (str(tmp_path / "no-certs.d"),))


@pytest.fixture(scope="module")
def tls_registries(tmp_path_factory: pytest.TempPathFactory, ca: Any
                   ) -> Iterator[tuple[LocalRegistry, LocalRegistry]]:
    """(source with app:v1, empty destination), both TLS with the session CA."""
    src = start_registry(tmp_path_factory.mktemp("tls-src"), tls=ca)
    dest = start_registry(tmp_path_factory.mktemp("tls-dest"), tls=ca)
    try:
        with src.client() as http:
            push(src, "app", IMAGE, tag="v1", client=http)
        yield src, dest
    finally:
        src.stop()
        dest.stop()


class RecordingTokens(TokenServer):
    """A TokenServer that remembers every token it issued (to grep for them)."""

    issued: list[str]

    def make_token(self, user: str | None, service: str | None, scopes: list[str]) -> str:
        token = super().make_token(user, service, scopes)
        self.issued.append(token)
        return token


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[LocalRegistry, RecordingTokens]]:
    """A token-auth registry with team-a/app:v1 and team-b/app:v1 (pushed as pusher)."""
    tokens = RecordingTokens(dict(USERS))
    tokens.issued = []
    tokens.start()
    reg = start_registry(tmp_path_factory.mktemp("token"), token=tokens)
    try:
        with reg.client() as http:
            push(reg, "team-a/app", IMAGE, tag="v1", client=http)
            push(reg, "team-b/app", OTHER, tag="v1", client=http)
        yield reg, tokens
    finally:
        reg.stop()
        tokens.stop()


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def manifest_digest(reg: LocalRegistry, repo: str, tag: str) -> str:
    with reg.client() as http:
        response = http.head(f"{reg.url}/v2/{repo}/manifests/{tag}", headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert response.status_code == 200
    return response.headers["Docker-Content-Digest"]


# -- TLS ---------------------------------------------------------------------------------
def untrusted(reg: LocalRegistry) -> str:
    return (
        f"ping {reg.host}: the TLS certificate of {reg.host} is not trusted (unable to get "
        f"local issuer certificate); pass its CA with --src-cert-dir/--dest-cert-dir (or put "
        f"it in /etc/containers/certs.d/{reg.host}/), or turn verification off with "
        "--src-tls-verify=false/--dest-tls-verify=false"
    )


def test_export_with_cert_dir_and_failure_without(tls_registries: tuple, tmp_path: Path) -> None:
    src, _ = tls_registries
    ref = f"{src.host}/app:v1"
    bad = run("export", ref, "-o", str(tmp_path / "bad"), "-q", "--retries", "0")
    assert bad.exit_code == 1
    assert bad.stderr == f"error: {ref}: {untrusted(src)}\n"
    with pytest.raises(TransferError) as info:
        export_bundle([ref], tmp_path / "bad2", options=TransportOptions(retries=0))
    assert type(info.value.cause) is TransportError
    assert str(info.value.cause) == untrusted(src)
    assert info.value.cause.registry == src.host
    ok = run("export", ref, "-o", str(tmp_path / "ok"), "-q", "--src-cert-dir", str(src.cert_dir))
    assert ok.exit_code == 0, ok.output
    index = json.loads((tmp_path / "ok" / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [IMAGE.digest]
    off = run("export", ref, "-o", str(tmp_path / "off"), "-q", "--src-tls-verify=false")
    assert off.exit_code == 0, off.output
    assert (tmp_path / "off" / "blobs" / "sha256" / IMAGE.digest.split(":")[1]).exists()


def test_import_finds_the_ca_in_certs_d(tls_registries: tuple, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tls_registries
    bundle = tmp_path / "bundle"
    assert run("export", f"{src.host}/app:v1", "-o", str(bundle), "-q",
               "--src-cert-dir", str(src.cert_dir)).exit_code == 0
    bad = run("import", str(bundle), "--to", f"{dest.host}/mirror", "-q", "--retries", "0")
    assert bad.exit_code == 1
    assert bad.stderr.endswith(untrusted(dest) + "\n")
    # dest.cert_dir is ROOT/127.0.0.1:PORT holding ca.crt: the certs.d layout
    monkeypatch.setattr(tls, "CERTS_D_ROOTS",
                        (str(tmp_path / "empty"), str(dest.cert_dir.parent)))
    ok = run("import", str(bundle), "--to", f"{dest.host}/mirror", "-q")
    assert ok.exit_code == 0, ok.output
    assert manifest_digest(dest, "mirror/app", "v1") == IMAGE.digest


class _WhoAmI(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        peer = self.connection.getpeercert() or {}
        body = json.dumps({"san": [v for _, v in peer.get("subjectAltName", ())]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_client_certificate_pair(tmp_path: Path, ca: Any) -> None:
    """A TLS server on loopback that requires a client certificate accepts the
    ``*.cert``/``*.key`` pair of the cert dir (containers-certs.d(5))."""
    trustme = pytest.importorskip("trustme")
    client_ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WhoAmI)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/"
    try:
        certs = tmp_path / "certs"
        certs.mkdir()
        ca.cert_pem.write_to_path(str(certs / "ca.crt"))
        issued = client_ca.issue_cert("client.example")
        (certs / "client.cert").write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(certs / "client.key"))
        with httpx.Client(verify=ssl_context("127.0.0.1", cert_dir=certs), trust_env=False) as http:
            assert http.get(url).json() == {"san": ["client.example"]}
        (certs / "client.key").unlink()
        with pytest.raises(BundlerError) as info:
            ssl_context("127.0.0.1", cert_dir=certs)
        assert str(info.value) == f"client certificate {certs / 'client.cert'} has no key client.key"
    finally:
        server.shutdown()
        server.server_close()


def test_certs_d_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    (second / "r.example:5000").mkdir(parents=True)
    monkeypatch.setattr(tls, "CERTS_D_ROOTS", (str(first), str(second)))
    assert tls.find_cert_dir("r.example:5000") == second / "r.example:5000"
    (first / "r.example:5000").mkdir(parents=True)
    assert tls.find_cert_dir("r.example:5000") == first / "r.example:5000"
    assert tls.find_cert_dir("r.example") is None
    assert ssl_context("r.example", verify=False) is False


# -- token auth --------------------------------------------------------------------------
def export(reg: LocalRegistry, repos: list[str], out: Path, keychain: Keychain) -> list[str]:
    result = export_bundle([f"{reg.host}/{r}:v1" for r in repos], out,
                           options=TransportOptions(keychain=keychain, retries=0))
    return [str(image.descriptor.digest) for image in result.images]


def test_identity_token_uses_the_refresh_token_grant(token_registry: tuple,
                                                     tmp_path: Path) -> None:
    reg, tokens = token_registry
    refresh = tokens.issue_refresh_token("alice")
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {reg.host: {"identitytoken": refresh}}}))
    before = len(tokens.requests)
    assert export(reg, ["team-a/app"], tmp_path / "ok", Keychain(authfile=authfile)) == [
        IMAGE.digest]
    assert tokens.requests[before:] == [
        ("POST", tokens.service, ("repository:team-a/app:pull",), "alice")]
    authfile.write_text(json.dumps({"auths": {reg.host: {"identitytoken": "refresh-unknown"}}}))
    with pytest.raises(TransferError) as info:
        export(reg, ["team-a/app"], tmp_path / "bad", Keychain(authfile=authfile))
    assert type(info.value.cause) is AuthenticationError
    assert str(info.value.cause) == (f"{reg.host}: the token service refused the identity token "
                                     f"(HTTP 401 from {tokens.realm})")


def test_repository_scoped_keys_pick_credentials_per_request(token_registry: tuple,
                                                            tmp_path: Path) -> None:
    reg, tokens = token_registry
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {
        f"{reg.host}/team-a": {"auth": b64("alice:" + USERS["alice"])},
        f"{reg.host}/team-b/app": {"auth": b64("bob:" + USERS["bob"])},
        reg.host: {"auth": b64("pusher:wrong")},
    }}))
    before = len(tokens.requests)
    digests = export(reg, ["team-a/app", "team-b/app"], tmp_path / "out",
                     Keychain(authfile=authfile))
    assert digests == [IMAGE.digest, OTHER.digest]
    assert sorted(set(tokens.requests[before:])) == [
        ("GET", tokens.service, ("repository:team-a/app:pull",), "alice"),
        ("GET", tokens.service, ("repository:team-b/app:pull",), "bob"),
    ]


def test_login_against_token_registry(token_registry: tuple, tmp_path: Path) -> None:
    reg, _ = token_registry
    path = tmp_path / "auth.json"
    bad = run("login", reg.host, "-u", "alice", "-p", "wrong", "--authfile", str(path))
    assert bad.exit_code == 1
    assert bad.stderr.startswith(f"error: {reg.host}: the token service refused as 'alice' "
                                 "(HTTP 401 from http://127.0.0.1:")
    assert not path.exists()
    ok = run("login", reg.host, "-u", "alice", "--password-stdin", "--authfile", str(path),
             input=USERS["alice"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(path.read_text()) == {
        "auths": {reg.host: {"auth": b64("alice:" + USERS["alice"])}}}


# -- --debug -------------------------------------------------------------------------------
def test_debug_logs_requests_but_no_secret(token_registry: tuple, tmp_path: Path) -> None:
    reg, tokens = token_registry
    password = USERS["pusher"]
    refresh = tokens.issue_refresh_token("bob")
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {f"{reg.host}/team-b": {"identitytoken": refresh}}}))
    issued_before = len(tokens.issued)
    result = run("--debug", "export", f"{reg.host}/team-a/app:v1", f"{reg.host}/team-b/app:v1",
                 "-o", str(tmp_path / "out"), "-q", "--src-authfile", str(authfile),
                 "--src-creds", f"pusher:{password}")
    assert result.exit_code == 0, result.output
    err = result.stderr
    # explicit credentials beat the auth file: no refresh-token grant, pusher everywhere
    assert f"debug: bundler.http: GET {reg.url}/v2/ -> 401\n" in err
    assert (f"debug: bundler.http: GET {tokens.realm}?service={tokens.service}"
            "&scope=repository%3Ateam-a%2Fapp%3Apull&account=pusher -> 200\n") in err
    assert (f"debug: bundler.http: GET {reg.url}/v2/team-b/app/manifests/v1 -> 200\n") in err
    issued = tokens.issued[issued_before:]
    assert len(issued) == 2
    secrets = [password, b64(f"pusher:{password}"), refresh, *issued]
    assert [s for s in secrets if s in result.output] == []

    # the same with the identity token from the auth file
    issued_before = len(tokens.issued)
    result = run("--debug", "export", f"{reg.host}/team-b/app:v1", "-o", str(tmp_path / "out2"),
                 "-q", "--src-authfile", str(authfile))
    assert result.exit_code == 0, result.output
    assert (f"debug: bundler.credentials: credentials for {reg.host}/team-b/app: user '' "
            f"from {authfile}\n") in result.stderr
    assert f"debug: bundler.http: POST {tokens.realm} -> 200\n" in result.stderr
    secrets = [refresh, *tokens.issued[issued_before:]]
    assert len(secrets) == 2
    assert [s for s in secrets if s in result.output] == []


def test_debug_with_basic_auth_has_no_password(tmp_path: Path) -> None:
    password = "basic-secret-pw"
    reg = start_registry(tmp_path / "basic", htpasswd=("carol", password))
    try:
        with reg.client() as http:
            push(reg, "app", IMAGE, tag="v1", client=http)
        ok = run("--debug", "export", f"{reg.host}/app:v1", "-o", str(tmp_path / "ok"), "-q",
                 "--src-username", "carol", "--src-password", password)
        assert ok.exit_code == 0, ok.output
        assert f"debug: bundler.http: GET {reg.url}/v2/app/manifests/v1 -> 200\n" in ok.stderr
        bad = run("--debug", "export", f"{reg.host}/app:v1", "-o", str(tmp_path / "bad"), "-q",
                  "--retries", "0", "--src-creds", f"carol:{password}x")
        assert bad.exit_code == 1
        for result in (ok, bad):
            assert password not in result.output
            assert b64(f"carol:{password}") not in result.output
            assert b64(f"carol:{password}x") not in result.output
    finally:
        reg.stop()


def test_explicit_credentials_object_is_used_as_is(token_registry: tuple, tmp_path: Path) -> None:
    reg, tokens = token_registry
    before = len(tokens.requests)
    keychain = Keychain(Credentials("bob", USERS["bob"]), authfile={"auths": {
        reg.host: {"auth": b64("alice:" + USERS["alice"])}}})
    assert export(reg, ["team-b/app"], tmp_path / "out", keychain) == [OTHER.digest]
    assert {r[3] for r in tokens.requests[before:]} == {"bob"}


# -- proxies from the environment -------------------------------------------------------
class _ForwardProxy(BaseHTTPRequestHandler):
    """A plain-http forward proxy for absolute-form GET/HEAD; refuses CONNECT."""

    protocol_version = "HTTP/1.1"
    seen: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_CONNECT(self) -> None:
        self.seen.append(f"CONNECT {self.path}")
        self.send_response(502)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _forward(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "proxy-connection", "connection")}
        with httpx.Client(trust_env=False) as http:
            answer = http.request(self.command, self.path, headers=headers)
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                   "content-encoding"):
                self.send_header(key, value)
        body = b"" if self.command == "HEAD" else answer.content
        self.send_header("Content-Length", str(len(body) if self.command != "HEAD"
                                               else answer.headers.get("Content-Length", 0)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _forward
    do_HEAD = _forward


def test_proxy_from_the_environment_is_used(registry: LocalRegistry, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with registry.client() as http:
        push(registry, "app", IMAGE, tag="v1", client=http)

    class Handler(_ForwardProxy):
        seen: list[str] = []

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        address = f"http://127.0.0.1:{proxy.server_address[1]}"
        monkeypatch.setenv("HTTP_PROXY", address)
        monkeypatch.setenv("HTTPS_PROXY", address)
        ok = run("export", f"{registry.host}/app:v1", "-o", str(tmp_path / "out"), "-q",
                 "--retries", "0")
        assert ok.exit_code == 0, ok.output
    finally:
        proxy.shutdown()
        proxy.server_close()
    blob_paths = sorted(f"GET {registry.url}/v2/app/blobs/{b.digest}" for b in IMAGE.blobs)
    assert Handler.seen[:2] == [f"CONNECT {registry.host}", f"GET {registry.url}/v2/"]
    assert sorted(s for s in Handler.seen if "/blobs/" in s) == blob_paths


# -- token requests: single flight, retries ------------------------------------------------
def test_concurrent_pulls_of_one_repository_make_one_token_request(token_registry: tuple
                                                                   ) -> None:
    reg, tokens = token_registry
    options = TransportOptions(credentials=Credentials("alice", USERS["alice"]), retries=0)
    with RegistryClient(reg.host, options) as client:
        client.base_url()  # the ping learns the Bearer challenge
        before = len(tokens.requests)
        start = threading.Barrier(8)
        digests: list[str] = []

        def pull() -> None:
            start.wait()
            digests.append(str(client.get_manifest("team-a/app", "v1")[2]))

        threads = [threading.Thread(target=pull) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert digests == [IMAGE.digest] * 8
    assert tokens.requests[before:] == [
        ("GET", tokens.service, ("repository:team-a/app:pull",), "alice")]


class FrontedTokens(TokenServer):
    """A TokenServer whose realm is a FaultProxy in front of it."""

    front = ""

    @property
    def realm(self) -> str:
        return self.front + "/token"


def test_token_service_answering_503_once_is_retried(tmp_path: Path, fault_proxy) -> None:
    tokens = FrontedTokens(dict(USERS)).start()
    proxy = fault_proxy(tokens.url)
    tokens.front = proxy.url
    reg = start_registry(tmp_path / "registry", token=tokens)
    try:
        with reg.client() as http:
            push(reg, "team-a/app", IMAGE, tag="v1", client=http)
        proxy.requests.clear()
        proxy.status(r"^/token", 503, {"Retry-After": "0"}, b"busy", times=1)
        options = TransportOptions(credentials=Credentials("alice", USERS["alice"]), retries=2,
                                   retry_delay_s=0.01)
        result = export_bundle([f"{reg.host}/team-a/app:v1"], tmp_path / "out", options=options)
        assert [str(p.descriptor.digest) for p in result.images] == [IMAGE.digest]
        assert [(m, s) for m, _, s, _ in proxy.requests] == [("GET", 503), ("GET", 200)]
    finally:
        reg.stop()
        tokens.stop()


def test_token_lifetime_is_read_defensively() -> None:
    from bundler.registry.auth import _lifetime_s

    assert [_lifetime_s(v) for v in (300, "120", None, "soon", -5, float("nan"))] == [
        300.0, 120.0, 60.0, 60.0, 60.0, 60.0]

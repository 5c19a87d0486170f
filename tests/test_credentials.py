"""Credential sources: key forms, entry kinds, helpers, precedence, login/logout.

Lookups are checked on parsed files, then end to end against a real htpasswd registry:
the right credentials are whatever the registry accepts, and the user named in the 401
message tells which source was used.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bundler import export_bundle
from bundler.cli.main import main
from bundler.errors import AuthenticationError, BundlerError, TransferError
from bundler.registry.auth import redact_url
from bundler.registry.client import TransportOptions
from bundler.registry.credentials import (
    Credentials,
    Keychain,
    default_authfile,
    lookup_credentials,
    normalize_key,
)
from bundler.sandbox import LocalRegistry, make_image, make_layer, push, start_registry

USER, PASSWORD = "alice", "s3cret-pw"
IMAGE = make_image([make_layer({"cred.txt": b"credentials"})])


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def entry(user: str, password: str) -> dict:
    return {"auth": b64(f"{user}:{password}")}


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No auth file of the machine may leak in: HOME is empty, the variables unset."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A htpasswd registry (alice) holding team/app:v1, other/app:v1 and team-x/app:v1."""
    reg = start_registry(tmp_path_factory.mktemp("htpasswd"), htpasswd=(USER, PASSWORD))
    try:
        with reg.client() as http:
            for repo in ("team/app", "other/app", "team-x/app"):
                push(reg, repo, IMAGE, tag="v1", client=http)
        yield reg
    finally:
        reg.stop()


# -- key forms -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "normal"),
    [
        ("registry.example:5000", "registry.example:5000"),
        ("https://registry.example:5000/v1/", "registry.example:5000"),
        ("http://registry.example/v2/", "registry.example"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("index.docker.io/library/alpine", "docker.io/library/alpine"),
        ("Registry.Example/ns/repo/", "registry.example/ns/repo"),
    ],
)
def test_normalize_key(key: str, normal: str) -> None:
    assert normalize_key(key) == normal


@pytest.mark.parametrize(
    "key",
    ["127.0.0.1:5000", "https://127.0.0.1:5000/v1/", "http://127.0.0.1:5000", "127.0.0.1:5000/"],
)
def test_each_key_form_serves_its_registry(key: str) -> None:
    config = {"auths": {key: entry("u", "p"), "127.0.0.1:5001": entry("x", "y")}}
    assert lookup_credentials(config, "127.0.0.1:5000", "ns/app") == Credentials("u", "p")
    assert lookup_credentials(config, "127.0.0.2:5000") is None


@pytest.mark.parametrize("registry", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_docker_hub_legacy_key_serves_every_hub_name(registry: str) -> None:
    config = {"auths": {"https://index.docker.io/v1/": entry("hubuser", "hubpw")}}
    assert lookup_credentials(config, registry, "library/alpine") == Credentials("hubuser", "hubpw")


def test_most_specific_key_wins() -> None:
    config = {"auths": {
        "r.example": entry("host", "1"),
        "r.example/team": entry("team", "2"),
        "r.example/team/app": entry("app", "3"),
    }}
    assert lookup_credentials(config, "r.example", "team/app").username == "app"
    assert lookup_credentials(config, "r.example", "team/app2").username == "team"
    assert lookup_credentials(config, "r.example", "team/sub/app").username == "team"
    assert lookup_credentials(config, "r.example", "teamx/app").username == "host"
    assert lookup_credentials(config, "r.example").username == "host"


def test_entry_kinds() -> None:
    config = {"auths": {
        "a.example": {"username": "plain", "password": "pw"},
        "b.example": {"identitytoken": "refresh-abc"},
        "c.example": {},
        "d.example": {"auth": ""},
        "e.example": {"auth": "%%%"},
    }}
    assert lookup_credentials(config, "a.example") == Credentials("plain", "pw")
    assert lookup_credentials(config, "b.example") == Credentials(identity_token="refresh-abc")
    assert lookup_credentials(config, "c.example") is None
    assert lookup_credentials(config, "d.example") is None
    with pytest.raises(BundlerError) as info:
        lookup_credentials(config, "e.example")
    assert str(info.value) == "auth entry 'e.example' has an invalid 'auth' value"


def test_secrets_stay_out_of_repr() -> None:
    creds = Credentials("alice", "pw-value", "tok-value")
    assert repr(creds) == "Credentials(username='alice')"
    config = {"auths": {"r.example": entry("alice", "pw-value")}}
    assert repr(Keychain(creds, config)) == "Keychain(explicit=True, authfile='<parsed>')"
    options = TransportOptions(credentials=creds, authfile=config)
    assert "pw-value" not in repr(options) and entry("alice", "pw-value")["auth"] not in repr(
        options)


def test_redact_url_keeps_only_harmless_query_values() -> None:
    url = ("https://r.example/v2/app/blobs/uploads/abc?_state=SECRETSTATE&digest=sha256%3A00"
           "&X-Amz-Signature=SIG")
    assert redact_url(url) == (
        "https://r.example/v2/app/blobs/uploads/abc?_state=%2A%2A%2A&digest=sha256%3A00"
        "&X-Amz-Signature=%2A%2A%2A"
    )
    assert redact_url("https://user:pw@r.example/v2/") == "https://r.example/v2/"


# -- credential helpers ----------------------------------------------------------------
HELPER = """#!{python}
import json, os, sys
server = sys.stdin.read()
with open(os.environ["HELPER_LOG"], "a") as log:
    log.write(sys.argv[1] + " " + server + "\\n")
answers = json.load(open(os.environ["HELPER_DB"]))
if server not in answers:
    print("credentials not found in native keychain")
    sys.exit(1)
json.dump(dict(ServerURL=server, **answers[server]), sys.stdout)
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """``docker-credential-test`` on PATH; returns (answers file, log file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker-credential-test"
    script.write_text(HELPER.format(python=sys.executable))
    script.chmod(0o755)
    db, log = tmp_path / "helper.json", tmp_path / "helper.log"
    db.write_text("{}")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HELPER_DB", str(db))
    monkeypatch.setenv("HELPER_LOG", str(log))
    return db, log


def test_cred_helpers_and_creds_store(helper: tuple[Path, Path]) -> None:
    db, log = helper
    db.write_text(json.dumps({
        "h.example:5000": {"Username": "helped", "Secret": "helper-pw"},
        "https://index.docker.io/v1/": {"Username": "<token>", "Secret": "hub-refresh"},
        "s.example": {"Username": "stored", "Secret": "store-pw"},
    }))
    config = {
        "auths": {"a.example": entry("file", "pw"), "s.example": {}},
        "credHelpers": {"h.example:5000": "test", "docker.io": "test"},
        "credsStore": "test",
    }
    assert lookup_credentials(config, "h.example:5000", "x/y") == Credentials("helped", "helper-pw")
    assert lookup_credentials(config, "docker.io", "library/alpine") == Credentials(
        identity_token="hub-refresh")
    assert lookup_credentials(config, "a.example") == Credentials("file", "pw")
    assert lookup_credentials(config, "s.example") == Credentials("stored", "store-pw")
    assert lookup_credentials(config, "unknown.example") is None
    assert log.read_text().splitlines() == [
        "get h.example:5000",
        "get https://index.docker.io/v1/",
        "get s.example",
        "get unknown.example",
    ]


def test_failing_helper_is_an_error(helper: tuple[Path, Path]) -> None:
    db, _ = helper
    db.write_text("not json")
    with pytest.raises(BundlerError) as info:
        lookup_credentials({"credsStore": "test"}, "q.example")
    assert str(info.value) == "credential helper docker-credential-test (for q.example) failed with exit status 1"


def test_keychain_calls_a_helper_once_per_registry(helper: tuple[Path, Path]) -> None:
    db, log = helper
    db.write_text(json.dumps({"h.example": {"Username": "helped", "Secret": "pw"}}))
    authfile = log.parent / "auth.json"
    authfile.write_text(json.dumps({"credsStore": "test"}))
    keychain = Keychain(authfile=authfile)
    for repo in ("a/b", "c/d", ""):
        assert keychain.resolve("h.example", repo) == Credentials("helped", "pw")
    assert log.read_text().splitlines() == ["get h.example"]


# -- sources and precedence ------------------------------------------------------------
SOURCES = ["authfile", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME",
           "DOCKER_CONFIG", "HOME"]


def place(source: str, root: Path, monkeypatch: pytest.MonkeyPatch, auths: dict) -> Path | None:
    """Write an auth file where ``source`` is read from; return it for --authfile."""
    paths = {
        "authfile": root / "flag" / "auth.json",
        "REGISTRY_AUTH_FILE": root / "raf" / "auth.json",
        "XDG_RUNTIME_DIR": root / "xdg" / "containers" / "auth.json",
        "XDG_CONFIG_HOME": root / "xdgconfig" / "containers" / "auth.json",
        "DOCKER_CONFIG": root / "dockercfg" / "config.json",
        "HOME": Path(os.environ["HOME"]) / ".docker" / "config.json",
    }
    path = paths[source]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    values = {"REGISTRY_AUTH_FILE": str(path), "XDG_RUNTIME_DIR": str(root / "xdg"),
              "XDG_CONFIG_HOME": str(root / "xdgconfig"), "DOCKER_CONFIG": str(root / "dockercfg")}
    if source in values:
        monkeypatch.setenv(source, values[source])
    return path if source == "authfile" else None


def export(reg: LocalRegistry, out: Path, keychain: Keychain, repo: str = "team/app") -> str:
    result = export_bundle([f"{reg.host}/{repo}:v1"], out,
                           options=TransportOptions(keychain=keychain, retries=0))
    return str(result.images[0].descriptor.digest)


def refused(reg: LocalRegistry, user: str, repo: str = "team/app") -> str:
    return (f"manifest {reg.host}/{repo}:v1: {reg.host} answered HTTP 401 "
            f"(authentication failed: credentials for {user!r} refused)")


@pytest.mark.parametrize("source", SOURCES)
def test_each_source_is_read(source: str, htpasswd_registry: LocalRegistry, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    reg = htpasswd_registry
    flag = place(source, tmp_path, monkeypatch, {reg.host: entry(USER, PASSWORD)})
    assert export(reg, tmp_path / "ok", Keychain(authfile=flag)) == IMAGE.digest
    flag = place(source, tmp_path, monkeypatch, {reg.host: entry(f"wrong-{source}", "nope")})
    with pytest.raises(TransferError) as info:
        export(reg, tmp_path / "bad", Keychain(authfile=flag))
    assert isinstance(info.value.cause, AuthenticationError)
    assert str(info.value.cause) == refused(reg, f"wrong-{source}")
    assert info.value.cause.registry == reg.host


@pytest.mark.parametrize("winner", range(len(SOURCES)))
def test_precedence(winner: int, htpasswd_registry: LocalRegistry, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The earliest source that knows the registry answers; the later ones are ignored,
    and ``$DOCKER_CONFIG`` replaces ``~/.docker``."""
    reg = htpasswd_registry
    flag = None
    for index, source in enumerate(SOURCES):
        if index < winner:
            continue  # earlier sources exist in the next test only
        creds = entry(USER, PASSWORD) if index == winner else entry(f"wrong-{source}", "x")
        flag = place(source, tmp_path, monkeypatch, {reg.host: creds}) or flag
    assert export(reg, tmp_path / "ok", Keychain(authfile=flag)) == IMAGE.digest


@pytest.mark.parametrize("loser", range(len(SOURCES) - 1))
def test_earlier_source_shadows_later(loser: int, htpasswd_registry: LocalRegistry,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = htpasswd_registry
    flag = None
    for index, source in enumerate(SOURCES[loser:], start=loser):
        creds = entry(f"wrong-{source}", "x") if index == loser else entry(USER, PASSWORD)
        flag = place(source, tmp_path, monkeypatch, {reg.host: creds}) or flag
    with pytest.raises(TransferError) as info:
        export(reg, tmp_path / "bad", Keychain(authfile=flag))
    assert str(info.value.cause) == refused(reg, f"wrong-{SOURCES[loser]}")


def test_docker_config_replaces_home(htpasswd_registry: LocalRegistry, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    reg = htpasswd_registry
    place("HOME", tmp_path, monkeypatch, {reg.host: entry(USER, PASSWORD)})
    place("DOCKER_CONFIG", tmp_path, monkeypatch, {"elsewhere.example": entry("x", "y")})
    with pytest.raises(TransferError) as info:
        export(reg, tmp_path / "bad", Keychain())
    assert str(info.value.cause) == (f"manifest {reg.host}/team/app:v1: {reg.host} answered "
                                     "HTTP 401 (authentication failed: no credentials given)")


def test_repository_scoped_keys(htpasswd_registry: LocalRegistry, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    reg = htpasswd_registry
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    (tmp_path / "auth.json").write_text(json.dumps({"auths": {
        reg.host: entry("wrong-host", "x"),
        f"{reg.host}/team": entry(USER, PASSWORD),
    }}))
    assert export(reg, tmp_path / "ok", Keychain(), "team/app") == IMAGE.digest
    for repo in ("other/app", "team-x/app"):
        with pytest.raises(TransferError) as info:
            export(reg, tmp_path / repo, Keychain(), repo)
        assert str(info.value.cause) == refused(reg, "wrong-host", repo)


def test_credential_helper_end_to_end(htpasswd_registry: LocalRegistry, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      helper: tuple[Path, Path]) -> None:
    reg = htpasswd_registry
    db, log = helper
    db.write_text(json.dumps({reg.host: {"Username": USER, "Secret": PASSWORD}}))
    config = tmp_path / "config.json"
    for kind in ({"credHelpers": {reg.host: "test"}}, {"credsStore": "test"}):
        config.write_text(json.dumps(kind))
        assert export(reg, tmp_path / "out", Keychain(authfile=config)) == IMAGE.digest
    assert log.read_text().splitlines() == [f"get {reg.host}", f"get {reg.host}"]


# -- command line ----------------------------------------------------------------------
def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_cli_explicit_flags_beat_authfile(htpasswd_registry: LocalRegistry,
                                          tmp_path: Path) -> None:
    reg = htpasswd_registry
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {reg.host: entry("wrong-file", "x")}}))
    ref = f"{reg.host}/team/app:v1"
    common = ["export", ref, "--src-authfile", str(authfile), "--retries", "0", "-q"]
    good = run(*common, "-o", str(tmp_path / "a"), "--src-creds", f"{USER}:{PASSWORD}")
    assert good.exit_code == 0, good.output
    good = run(*common, "-o", str(tmp_path / "b"), "--src-username", USER,
               "--src-password", PASSWORD)
    assert good.exit_code == 0, good.output
    bad = run(*common, "-o", str(tmp_path / "c"))
    assert bad.exit_code == 1
    assert bad.stderr == f"error: {ref}: {refused(reg, 'wrong-file')}\n"
    both = run(*common, "-o", str(tmp_path / "d"), "--src-creds", "a:b", "--src-username", "a",
               "--src-password", "b")
    assert both.exit_code == 2
    assert ("--src-creds and --src-username/--src-password are mutually exclusive"
            in both.stderr)


def test_login_writes_0600_and_logout_removes(htpasswd_registry: LocalRegistry, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    reg = htpasswd_registry
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    path = tmp_path / "run" / "containers" / "auth.json"
    assert default_authfile() == path
    bad = run("login", reg.host, "-u", USER, "--password-stdin", input="wrong\n")
    assert bad.exit_code == 1
    assert bad.stderr == (f"error: login to {reg.host}: {reg.host} answered HTTP 401 "
                          f"(authentication failed: credentials for {USER!r} refused)\n")
    assert not path.exists()
    ok = run("login", reg.host, "-u", USER, "--password-stdin", input=PASSWORD + "\n")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout == f"Login Succeeded! (credentials stored in {path})\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"auths": {reg.host: entry(USER, PASSWORD)}}
    assert PASSWORD not in ok.output
    # the stored entry is used by export, then logout removes it
    assert export(reg, tmp_path / "out", Keychain()) == IMAGE.digest
    path.write_text(json.dumps({"auths": {**json.loads(path.read_text())["auths"],
                                          "keep.example": entry("k", "k")}}))
    out = run("logout", reg.host)
    assert out.exit_code == 0
    assert out.stdout == f"Removed login credentials for {reg.host}\n"
    assert json.loads(path.read_text()) == {"auths": {"keep.example": entry("k", "k")}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = run("logout", reg.host)
    assert again.exit_code == 1
    assert again.stderr == f"error: not logged in to {reg.host} (in {path})\n"
    assert run("logout", "--all").exit_code == 0
    assert json.loads(path.read_text()) == {"auths": {}}


def test_login_repository_scope_and_authfile_option(htpasswd_registry: LocalRegistry,
                                                    tmp_path: Path) -> None:
    reg = htpasswd_registry
    path = tmp_path / "new" / "dir" / "auth.json"
    path_existing = {"auths": {reg.host: entry("wrong-host", "x")}, "credsStore": ""}
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(path_existing))
    ok = run("login", f"{reg.host}/team", "-u", USER, "-p", PASSWORD, "--authfile", str(path))
    assert ok.exit_code == 0, ok.output
    assert json.loads(path.read_text()) == {
        "auths": {reg.host: entry("wrong-host", "x"), f"{reg.host}/team": entry(USER, PASSWORD)},
        "credsStore": "",
    }
    assert export(reg, tmp_path / "out", Keychain(authfile=path)) == IMAGE.digest
    assert [p.name for p in path.parent.iterdir()] == ["auth.json"]  # no temp file left

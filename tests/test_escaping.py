"""Nothing from a bundle or a registry reaches the terminal raw: image names,
annotations and registry error bodies with escape sequences are printed escaped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bundler import export_bundle
from bundler.cli.main import main
from bundler.cli.reporters import make_reporter
from bundler.events import Event, Tally
from bundler.oci.content import CONTAINERD_NAME, REF_NAME
from bundler.sandbox import FaultProxy, LocalRegistry, SeededSet
from bundler.termsafe import escape

EVIL = "evil\x1b]0;pwned\x07\r\nOK all good"
EVIL_SHOWN = "evil\\x1b]0;pwned\\x07\\r\\nOK all good"
CLEAR = "x\x1b[2J"
CLEAR_SHOWN = "x\\x1b[2J"
RAW = (b"\x1b", b"\x07", b"\r", b"\x9b")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_clean(result: Result) -> str:
    """No raw control byte in stdout or stderr; the two joined, decoded."""
    for stream in (result.stdout_bytes, result.stderr_bytes):
        for raw in RAW:
            assert raw not in stream
    return result.stdout + result.stderr


def test_escape_shows_control_characters_and_keeps_printable_text() -> None:
    assert escape(EVIL) == EVIL_SHOWN
    assert escape("a\x9b2Jb\x7f\tc") == "a\\x9b2Jb\\x7f\\tc"  # C1 CSI, DEL, TAB
    assert escape("left\u202eright\u2028") == "left\\u202eright\\u2028"  # bidi, separator
    assert escape("naïve 日本語 registry:5000/a@sha256") == "naïve 日本語 registry:5000/a@sha256"
    assert escape(ValueError("x\ny")) == "x\\ny"


def hostile_bundle(seeded_registry: tuple[LocalRegistry, SeededSet], root: Path) -> None:
    """Two images whose recorded names hold escape sequences; one blob of the first
    image missing, so that verify names it in a problem."""
    _, seeded = seeded_registry
    first, second = seeded.get("base/os", "1"), seeded.get("apps/api", "1.0")
    export_bundle([first.reference, second.reference], root)
    index = json.loads((root / "index.json").read_bytes())
    by_digest = {m["digest"]: m for m in index["manifests"]}
    by_digest[first.digest]["annotations"][CONTAINERD_NAME] = EVIL
    by_digest[first.digest]["annotations"][REF_NAME] = EVIL
    del by_digest[second.digest]["annotations"][CONTAINERD_NAME]
    by_digest[second.digest]["annotations"][REF_NAME] = CLEAR
    by_digest[second.digest]["annotations"]["org.example.note"] = "\x1b[2J"
    (root / "index.json").write_text(json.dumps(index))
    only_first = set(first.blob_sizes) - set(second.blob_sizes)
    (root / "blobs/sha256" / sorted(only_first)[0][7:]).unlink()


def test_list_prints_hostile_names_escaped(
        seeded_registry: tuple[LocalRegistry, SeededSet], tmp_path: Path) -> None:
    hostile_bundle(seeded_registry, tmp_path / "bundle")
    result = invoke("list", str(tmp_path / "bundle"))
    assert result.exit_code == 0, result.output
    text = assert_clean(result)
    assert EVIL_SHOWN in text and CLEAR_SHOWN in text
    assert not any(line.startswith("OK") for line in text.splitlines())
    as_json = invoke("list", str(tmp_path / "bundle"), "--json")
    assert_clean(as_json)
    names = {i["reference"] for i in json.loads(as_json.stdout)["images"]}
    assert names == {EVIL, CLEAR}  # JSON keeps the exact text, escaped by JSON


def test_verify_prints_hostile_names_escaped(
        seeded_registry: tuple[LocalRegistry, SeededSet], tmp_path: Path) -> None:
    hostile_bundle(seeded_registry, tmp_path / "bundle")
    result = invoke("verify", str(tmp_path / "bundle"))
    assert result.exit_code == 1
    text = assert_clean(result)
    assert f"problem: {EVIL_SHOWN}: " in text
    assert not any(line.startswith("OK") for line in text.splitlines())


def test_import_prints_a_hostile_name_escaped(
        seeded_registry: tuple[LocalRegistry, SeededSet], registry: LocalRegistry,
        tmp_path: Path) -> None:
    hostile_bundle(seeded_registry, tmp_path / "bundle")
    second = seeded_registry[1].get("apps/api", "1.0")
    mapping = tmp_path / "mapping.txt"
    mapping.write_text(f"{second.digest}={registry.host}/m/api:1\n")
    result = invoke("import", str(tmp_path / "bundle"), "--mapping", str(mapping),
                    "--dest-tls-verify", "false", "--progress", "plain")
    assert result.exit_code == 0, result.output
    assert_clean(result)
    assert f"  {CLEAR_SHOWN} -> {registry.host}/m/api:1" in result.stdout  # the summary
    assert f"image {CLEAR_SHOWN} -> {registry.host}/m/api:1@{second.digest}: done" \
        in result.stderr


def test_a_registry_error_body_is_printed_escaped(
        seeded_registry: tuple[LocalRegistry, SeededSet], fault_proxy, tmp_path: Path) -> None:
    registry, seeded = seeded_registry
    proxy: FaultProxy = fault_proxy(registry.url)
    body = json.dumps({"errors": [{"code": "DENIED\x1b[2J",
                                   "message": "no\x1b]0;pwned\x07\r\nOK: 1 image"}]})
    proxy.status(r"/v2/base/os/manifests/", 403, {"Content-Type": "application/json"},
                 body.encode(), times=None)
    result = invoke("export", f"{proxy.host}/base/os:1", "-o", str(tmp_path / "b"),
                    "--src-tls-verify", "false", "--retries", "0", "--progress", "plain")
    assert result.exit_code == 1
    text = assert_clean(result)
    assert "no\\x1b]0;pwned\\x07\\r\\nOK: 1 image" in text
    assert not any(line.startswith("OK") for line in text.splitlines())


def test_plain_progress_escapes_names_and_details(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = make_reporter("plain", Tally())
    reporter(Event("image", EVIL, "done", detail=CLEAR))
    reporter(Event("blob", "sha256:" + "a" * 64, "failed", detail="x\r\nOK"))
    assert capsys.readouterr().err == (f"image {EVIL_SHOWN} -> {CLEAR_SHOWN}: done\n"
                                       f"blob sha256:{'a' * 64}: failed: x\\r\\nOK\n")

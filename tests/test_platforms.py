"""--platform: strip and single on a real multi-arch index with attestations; the
stripped index and its children read back with skopeo byte-equal to the bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bundler.cli.main import main
from bundler.oci.content import parse_manifest
from bundler.oci.platforms import PlatformChoice, parse_platform, strip_index
from bundler.sandbox import LocalRegistry, make_image, make_index, push, random_layer

UNREACHABLE = "127.0.0.1:1/multi/arch:1"
needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo missing")


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def three_platforms() -> tuple[Any, list[Any]]:
    images = [make_image([random_layer(11, 64)], architecture="amd64"),
              make_image([random_layer(12, 64)], architecture="arm64", variant="v8"),
              make_image([random_layer(13, 64)], architecture="s390x")]
    return make_index(images), images


def test_strip_keeps_the_chosen_platforms_and_their_attestations() -> None:
    index, images = three_platforms()
    parsed = parse_manifest(index.manifest_bytes, index.media_type)
    raw = strip_index(parsed, PlatformChoice((parse_platform("linux/amd64"),
                                              parse_platform("linux/arm64"))))
    doc = json.loads(raw)
    original = json.loads(index.manifest_bytes)
    assert doc["manifests"] == original["manifests"][:4]  # amd64, its attestation, arm64, ...
    assert [m["digest"] for m in doc["manifests"]] == [c.digest for c in index.children[:4]]
    assert doc["annotations"] == {"dev.bundler.platforms.source-digest": index.digest,
                                  "dev.bundler.platforms": "linux/amd64,linux/arm64"}


@pytest.mark.parametrize("text", ["linux", "linux/", "Linux/amd64", "linux/amd64/v8/x", ""])
def test_a_platform_that_does_not_parse_is_a_usage_error(text: str, tmp_path: Path) -> None:
    result = run_cli("export", UNREACHABLE, "--platform", text, "-o", str(tmp_path / "b"))
    assert result.exit_code == 2
    assert result.stderr.endswith(
        f"Error: --platform: {text!r} is not OS/ARCH[/VARIANT] (e.g. linux/amd64, "
        "linux/arm64/v8) or all\n")
    assert not (tmp_path / "b").exists()


def test_single_needs_exactly_one_platform(tmp_path: Path) -> None:
    result = run_cli("export", UNREACHABLE, "--platform", "linux/amd64", "--platform",
                     "linux/arm64", "--platform-mode", "single", "-o", str(tmp_path / "b"))
    assert result.exit_code == 2
    assert result.stderr.endswith("Error: --platform-mode single keeps exactly one "
                                  "platform; 2 given\n")


def entry(bundle: Path) -> dict:
    (only,) = json.loads((bundle / "index.json").read_text())["manifests"]
    return only


def blob(bundle: Path, digest: str) -> bytes:
    return (bundle / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


@needs_skopeo
def test_strip_exports_a_new_index_that_imports_byte_equal(
        registry_factory, tmp_path: Path) -> None:
    src, dest = registry_factory(), registry_factory()
    index, images = three_platforms()
    push(src, "multi/arch", index, tag="1")
    bundle = tmp_path / "b"
    result = run_cli("export", f"{src.host}/multi/arch:1", "--platform", "linux/amd64",
                     "--platform", "linux/arm64", "-o", str(bundle), "-q",
                     "--src-tls-verify", "false")
    assert result.exit_code == 0, result.output
    top = entry(bundle)
    stripped = blob(bundle, top["digest"])
    assert top["digest"] != index.digest
    assert json.loads(stripped)["annotations"]["dev.bundler.platforms.source-digest"] == \
        index.digest
    assert result.stdout.splitlines()[-1] == (
        f"changed digest: {src.host}/multi/arch:1: index stripped to the chosen platforms: "
        f"{top['digest']} (registry: {index.digest})")
    held = sorted(p.name for p in (bundle / "blobs" / "sha256").iterdir())
    assert images[2].digest.split(":")[1] not in held  # s390x left out
    assert images[2].layers[0].digest.split(":")[1] not in held

    listing = run_cli("list", str(bundle), "--json")
    assert json.loads(listing.stdout)["images"][0]["platforms"] == ["linux/amd64",
                                                                    "linux/arm64/v8"]
    verify = run_cli("verify", str(bundle))
    assert verify.exit_code == 0, verify.output

    imported = run_cli("import", str(bundle), "--to", dest.host, "-q",
                       "--dest-tls-verify", "false")
    assert imported.exit_code == 0, imported.output

    def skopeo_raw(ref: str) -> bytes:
        return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                               f"docker://{ref}"], check=True, capture_output=True,
                              timeout=60).stdout

    assert skopeo_raw(f"{dest.host}/multi/arch:1") == stripped
    child = images[1]
    assert skopeo_raw(f"{dest.host}/multi/arch@{child.digest}") == \
        blob(bundle, child.digest) == child.manifest_bytes


def test_single_stores_the_platform_manifest_with_its_digest(
        registry: LocalRegistry, tmp_path: Path) -> None:
    index, images = three_platforms()
    push(registry, "multi/arch", index, tag="1")
    bundle = tmp_path / "b"
    result = run_cli("export", f"{registry.host}/multi/arch:1", "--platform", "linux/s390x",
                     "--platform-mode", "single", "-o", str(bundle), "-q",
                     "--src-tls-verify", "false")
    assert result.exit_code == 0, result.output
    top = entry(bundle)
    assert (top["digest"], top["size"], top["mediaType"]) == (
        images[2].digest, images[2].size, images[2].media_type)
    assert top["annotations"]["org.opencontainers.image.ref.name"] == \
        f"{registry.host}/multi/arch:1"
    assert blob(bundle, images[2].digest) == images[2].manifest_bytes

    missing = run_cli("export", f"{registry.host}/multi/arch:1", "--platform", "windows/amd64",
                      "-o", str(tmp_path / "c"), "-q", "--src-tls-verify", "false")
    assert missing.exit_code == 1
    assert f"index {index.digest} has no manifest for windows/amd64 (it has linux/amd64, " \
           "linux/arm64/v8, linux/s390x)" in missing.stderr


def test_an_image_set_entry_keeps_its_own_platforms(registry: LocalRegistry,
                                                    tmp_path: Path) -> None:
    index, images = three_platforms()
    push(registry, "multi/arch", index, tag="1")
    push(registry, "whole/arch", index, tag="1")
    config = tmp_path / "set.yaml"
    config.write_text(f"""\
{registry.host}:
  tls-verify: false
  images:
    multi/arch:
      all-tags: true
      platforms: [linux/arm64/v8]
      platform-mode: single
    whole/arch: ["1"]
""")
    bundle = tmp_path / "b"
    result = run_cli("export", "-c", str(config), "-o", str(bundle), "-q")
    assert result.exit_code == 0, result.output
    entries = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
               for m in json.loads((bundle / "index.json").read_text())["manifests"]}
    assert entries == {f"{registry.host}/multi/arch:1": images[1].digest,
                       f"{registry.host}/whole/arch:1": index.digest}
    dry = run_cli("export", "-c", str(config), "-o", str(tmp_path / "c"), "--dry-run",
                  "--json")
    assert json.loads(dry.stdout)["selection"]["selected"][0] == {
        "reference": f"{registry.host}/multi/arch:1", "entry": f"{config}:4",
        "selectedBy": "all tags", "listed": True, "platforms": ["linux/arm64/v8"],
        "platformMode": "single"}


def test_bad_platforms_in_a_file_name_their_line(tmp_path: Path) -> None:
    config = tmp_path / "set.yaml"
    config.write_text("127.0.0.1:1:\n  images:\n    app:\n      all-tags: true\n"
                      "      platforms: [linux]\n      platform-mode: dense\n")
    result = run_cli("export", "-c", str(config), "-o", str(tmp_path / "b"))
    assert result.exit_code == 2
    assert result.stderr.endswith(
        f"Error: invalid image set:\n{config}:5: platforms: 'linux' is not "
        "OS/ARCH[/VARIANT] (e.g. linux/amd64, linux/arm64/v8) or all\n"
        f"{config}:6: platform-mode 'dense' is not one of strip, sparse, single\n")


def test_mirror_strips_and_singles_like_export(registry_factory) -> None:
    import httpx

    src, dest = registry_factory(), registry_factory()
    index, images = three_platforms()
    push(src, "multi/arch", index, tag="1")
    result = run_cli("mirror", f"{src.host}/multi/arch:1", "--platform", "linux/s390x",
                     "--to", f"{dest.host}/strip", "-q", "--src-tls-verify", "false",
                     "--dest-tls-verify", "false")
    assert result.exit_code == 0, result.output
    want = strip_index(parse_manifest(index.manifest_bytes, index.media_type),
                       PlatformChoice((parse_platform("linux/s390x"),)))
    accept = {"Accept": index.media_type}
    served = httpx.get(f"{dest.url}/v2/strip/multi/arch/manifests/1", headers=accept)
    assert served.content == want
    assert result.stdout.splitlines()[-1].startswith(
        f"changed digest: {src.host}/multi/arch:1: index stripped to the chosen platforms: ")
    result = run_cli("mirror", f"{src.host}/multi/arch:1", "--platform", "linux/arm64",
                     "--platform-mode", "single", "--to", f"{dest.host}/single", "-q",
                     "--src-tls-verify", "false", "--dest-tls-verify", "false")
    assert result.exit_code == 0, result.output
    served = httpx.get(f"{dest.url}/v2/single/multi/arch/manifests/1",
                       headers={"Accept": images[1].media_type})
    assert served.headers["Docker-Content-Digest"] == images[1].digest
    assert served.content == images[1].manifest_bytes

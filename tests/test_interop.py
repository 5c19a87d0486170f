"""Interoperability of bundles and layouts with skopeo and umoci, both ways.

* a bundle written by ``bundler export`` is pushed by ``skopeo copy --all oci:BUNDLE:<ref>``
  with the same digests (skopeo 1.9 only looks at OCI media types in ``index.json``, so
  the Docker schema2 entry of the seeded set is left out here);
* layouts written by ``skopeo copy ... oci:DIR:tag`` and by ``umoci new`` (ref.name holds
  only a tag) import with ``bundler import DIR --to REGISTRY/REPOSITORY``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from bundler.bundle import export_bundle
from bundler.cli.main import main
from bundler.oci.reference import Reference
from bundler.sandbox import LocalRegistry, SeededSet
from bundler.sandbox.images import Index

Seeded = tuple[LocalRegistry, SeededSet]
ACCEPT = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo missing")
needs_umoci = pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci missing")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(list(argv), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def skopeo_raw(reference: str) -> bytes:
    return run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}").stdout


def run_import(*args: str) -> Result:
    return CliRunner().invoke(main, ["import", *args, "-q"], catch_exceptions=False)


@pytest.fixture(scope="module")
def bundle(seeded_registry: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole seeded set exported once. Read-only."""
    out = tmp_path_factory.mktemp("interop-bundle") / "bundle"
    export_bundle([Reference.parse(r) for r in seeded_registry[1].references], out)
    return out


@needs_skopeo
@pytest.mark.parametrize("repository, tag", [("multi/arch", "1"), ("apps/web", "1.0"),
                                             ("apps/web", "latest")])
def test_skopeo_pushes_a_bundler_bundle(seeded_registry: Seeded, bundle: Path,
                                        registry: LocalRegistry, repository: str,
                                        tag: str) -> None:
    entry = seeded_registry[1].get(repository, tag)
    run("skopeo", "copy", "--all", "--dest-tls-verify=false",
        f"oci:{bundle}:{entry.reference}", f"docker://{registry.host}/sk/{repository}:{tag}")
    raw = skopeo_raw(f"{registry.host}/sk/{repository}:{tag}")
    assert raw == entry.manifest_bytes
    assert sha(raw) == entry.digest
    if isinstance(entry.item, Index):
        for child in entry.item.children:
            assert skopeo_raw(f"{registry.host}/sk/{repository}@{child.digest}") == \
                child.manifest_bytes


@pytest.fixture
def skopeo_layout(seeded_registry: Seeded, tmp_path: Path) -> Path:
    """A layout written by skopeo: multi/arch:1 as ``v1`` and base/os:1 as ``os1``."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo missing")
    seeded = seeded_registry[1]
    layout = tmp_path / "skopeo-layout"
    for ref, name in ((seeded.get("multi/arch", "1").reference, "v1"),
                      (seeded.get("base/os", "1").reference, "os1")):
        run("skopeo", "copy", "--all", "--src-tls-verify=false", f"docker://{ref}",
            f"oci:{layout}:{name}")
    return layout


def test_bundler_imports_a_skopeo_layout(seeded_registry: Seeded, skopeo_layout: Path,
                                         registry: LocalRegistry) -> None:
    seeded = seeded_registry[1]
    names = [m["annotations"]["org.opencontainers.image.ref.name"]
             for m in json.loads((skopeo_layout / "index.json").read_text())["manifests"]]
    assert names == ["v1", "os1"]
    result = run_import(str(skopeo_layout), "--to", f"{registry.host}/from-skopeo/app")
    assert result.exit_code == 0, result.stderr
    multi, base1 = seeded.get("multi/arch", "1"), seeded.get("base/os", "1")
    assert result.stdout.splitlines()[1:] == [
        f"  v1 -> {registry.host}/from-skopeo/app:v1@{multi.digest}",
        f"  os1 -> {registry.host}/from-skopeo/app:os1@{base1.digest}",
        # a layout without a bundler receipt gets one computed (its id: index.json's)
        f"receipt: {registry.host}/from-skopeo/app/bundler-receipts:sha256-"
        + hashlib.sha256((skopeo_layout / "index.json").read_bytes()).hexdigest(),
    ]
    assert skopeo_raw(f"{registry.host}/from-skopeo/app:v1") == multi.manifest_bytes
    assert skopeo_raw(f"{registry.host}/from-skopeo/app:os1") == base1.manifest_bytes
    assert isinstance(multi.item, Index)
    for child in multi.item.children:
        assert sha(skopeo_raw(f"{registry.host}/from-skopeo/app@{child.digest}")) == child.digest


def test_tag_only_layout_with_registry_only_names_the_entry(
    skopeo_layout: Path, registry: LocalRegistry
) -> None:
    mark = registry.mark()
    result = run_import(str(skopeo_layout), "--to", registry.host)
    assert result.exit_code == 2
    assert result.stderr.endswith(
        "\n\nError: bundle entry 'v1' records no repository; give --to with the full "
        "repository (REGISTRY/REPOSITORY) or use --mapping\n"
    )
    assert registry.requests(mark) == []


def test_tag_only_layout_with_mapping(seeded_registry: Seeded, skopeo_layout: Path,
                                      registry: LocalRegistry, tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.txt"
    mapping.write_text(f"os1={registry.host}/base/os:stable\n")
    result = run_import(str(skopeo_layout), "--mapping", str(mapping))
    assert result.exit_code == 0, result.stderr
    base1 = seeded_registry[1].get("base/os", "1")
    assert skopeo_raw(f"{registry.host}/base/os:stable") == base1.manifest_bytes
    with httpx.Client(timeout=10) as http:
        assert http.get(f"{registry.url}/v2/_catalog").json() == {
            "repositories": ["base/os", "bundler-receipts"]}


@needs_umoci
def test_bundler_imports_an_umoci_layout(registry: LocalRegistry, tmp_path: Path) -> None:
    layout = tmp_path / "umoci-layout"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:t")
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "t"}
    digest = entry["digest"]
    manifest_bytes = (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    config = json.loads(manifest_bytes)["config"]
    result = run_import(str(layout), "--to", f"{registry.host}/umoci/img")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        f"  t -> {registry.host}/umoci/img:t@{digest}",
        f"receipt: {registry.host}/umoci/img/bundler-receipts:sha256-"
        + hashlib.sha256((layout / "index.json").read_bytes()).hexdigest()]
    raw = skopeo_raw(f"{registry.host}/umoci/img:t")
    assert (raw, sha(raw)) == (manifest_bytes, digest)
    with httpx.Client(timeout=10) as http:
        blob = http.get(f"{registry.url}/v2/umoci/img/blobs/{config['digest']}")
    assert (blob.status_code, sha(blob.content), len(blob.content)) == (
        200, config["digest"], config["size"])

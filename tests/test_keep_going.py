"""--keep-going: one image whose layer always fails, the others exported or imported.

The seeded registry (or the destination) sits behind a FaultProxy with a status rule
that never wears off (``times=None``) on the one layer only ``legacy/tool:latest`` has.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from bundler import (
    NotFoundError,
    PartialFailureError,
    RegistryError,
    export_bundle,
    list_bundle,
    verify_bundle,
)
from bundler.cli.main import main
from bundler.registry.client import TransportOptions
from bundler.sandbox import LocalRegistry, SeededSet

Seeded = tuple[LocalRegistry, SeededSet]
FAST = TransportOptions(retries=0, retry_delay_s=0.01)
ACCEPT = "application/vnd.oci.image.manifest.v1+json, " \
         "application/vnd.docker.distribution.manifest.v2+json"
IMAGES = [("base/os", "1"), ("legacy/tool", "latest"), ("apps/api", "1.0")]


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def tool_layer(seeded: SeededSet) -> str:
    """Hex of the layer only legacy/tool:latest has."""
    return seeded.get("legacy/tool").item.layers[0].digest.split(":")[1]


def refs(host: str) -> list[str]:
    return [f"{host}/{repo}:{tag}" for repo, tag in IMAGES]


def entries(bundle: Path) -> list[tuple[str, str]]:
    doc = json.loads((bundle / "index.json").read_bytes())
    return [(m["annotations"]["org.opencontainers.image.ref.name"], m["digest"])
            for m in doc["manifests"]]


def dest_digest(dest: LocalRegistry, repository: str, tag: str) -> str | None:
    response = httpx.get(f"{dest.url}/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT})
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return "sha256:" + hashlib.sha256(response.content).hexdigest()


# -- export ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bundle", "bundle.tar"])
def test_export_keep_going_leaves_out_the_failed_image(seeded_registry: Seeded, fault_proxy,
                                                       tmp_path, name):
    registry, seeded = seeded_registry
    proxy = fault_proxy(registry.url)
    proxy.status(tool_layer(seeded), 404, method="GET", times=None)
    output = tmp_path / name
    result = run_cli("export", *refs(proxy.host), "-o", str(output), "-q", "--keep-going",
                     "--retries", "0")
    assert result.exit_code == 1
    failed = f"{proxy.host}/legacy/tool:latest"
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {failed}: ")
    advice = ("run the same command again to retry them" if name == "bundle" else
              f"the archive {output} holds the other 2; export the failed ones to another "
              "bundle")
    assert errors[1] == f"failed: 1 of 3 images; {advice}"
    assert "404" in errors[0] and tool_layer(seeded) in errors[0]
    assert result.stdout.startswith(f"exported 2 images to {output}: ")
    expected = [(f"{proxy.host}/{repo}:{tag}", seeded.get(repo, tag).digest)
                for repo, tag in IMAGES if repo != "legacy/tool"]
    listing = list_bundle(output)
    assert [(i.name, str(i.digest)) for i in listing.images] == expected
    assert verify_bundle(output).ok
    if name == "bundle":
        assert entries(output) == expected
    assert proxy.count("GET", tool_layer(seeded)) == 1  # a 404 is not retried


def test_export_keep_going_raises_partial_failure_with_the_result(seeded_registry: Seeded,
                                                                  fault_proxy, tmp_path):
    registry, seeded = seeded_registry
    proxy = fault_proxy(registry.url)
    proxy.status(tool_layer(seeded), 404, method="GET", times=None)
    with pytest.raises(PartialFailureError) as info:
        export_bundle(refs(proxy.host), tmp_path / "b", options=FAST, keep_going=True)
    error = info.value
    assert str(error) == f"1 image failed: {proxy.host}/legacy/tool:latest"
    assert [f.image for f in error.failures] == [f"{proxy.host}/legacy/tool:latest"]
    assert isinstance(error.failures[0].cause, NotFoundError)
    assert [p.name for p in error.result.images] == [
        f"{proxy.host}/base/os:1", f"{proxy.host}/apps/api:1.0"]
    fetched = set().union(*(seeded.get(repo, tag).blob_sizes for repo, tag in IMAGES))
    fetched.discard("sha256:" + tool_layer(seeded))  # the tool's config arrived all the same
    assert error.result.blobs_downloaded == len(fetched) == 6


def test_export_fails_fast_and_keeps_index_json(seeded_registry: Seeded, fault_proxy, tmp_path):
    registry, seeded = seeded_registry
    proxy = fault_proxy(registry.url)
    bundle = tmp_path / "bundle"
    first = run_cli("export", f"{proxy.host}/base/os:2", "-o", str(bundle), "-q")
    assert first.exit_code == 0, first.stderr
    before = (bundle / "index.json").read_bytes()
    proxy.status(tool_layer(seeded), 404, method="GET", times=None)
    result = run_cli("export", *refs(proxy.host), "-o", str(bundle), "-q")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {proxy.host}/legacy/tool:latest: ")
    assert len(result.stderr.splitlines()) == 1
    assert (bundle / "index.json").read_bytes() == before
    assert entries(bundle) == [(f"{proxy.host}/base/os:2", seeded.get("base/os", "2").digest)]


# -- import ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(seeded_registry: Seeded, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three images as a directory and as a .tar bundle. Read-only."""
    registry, _ = seeded_registry
    work = tmp_path_factory.mktemp("keep-going")
    out = {"dir": work / "bundle", "tar": work / "bundle.tar"}
    for path in out.values():
        export_bundle(refs(registry.host), path, options=FAST)
    return out


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_import_keep_going_tags_the_complete_images(seeded_registry: Seeded, bundles,
                                                    registry_factory, fault_proxy, kind):
    registry, seeded = seeded_registry
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    proxy.status(tool_layer(seeded), 500, method="PUT", times=None)
    result = run_cli("import", str(bundles[kind]), "--to", f"{proxy.host}/m", "-q",
                     "--keep-going", "--retries", "0")
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {registry.host}/legacy/tool:latest: ")
    assert "500" in errors[0]
    assert errors[1] == "failed: 1 of 3 images; run the same command again to retry them"
    lines = result.stdout.splitlines()
    assert lines[0].startswith("imported 2 images (0 already there); ")
    assert lines[1:] == [
        f"  {registry.host}/{repo}:{tag} -> {proxy.host}/m/{repo}:{tag}@"
        f"{seeded.get(repo, tag).digest}"
        for repo, tag in IMAGES if repo != "legacy/tool"
    ]
    for repo, tag in IMAGES:
        expected = None if repo == "legacy/tool" else seeded.get(repo, tag).digest
        assert dest_digest(dest, f"m/{repo}", tag) == expected


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_import_fails_fast_and_tags_nothing(seeded_registry: Seeded, bundles, registry_factory,
                                            fault_proxy, kind):
    registry, seeded = seeded_registry
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    proxy.status(tool_layer(seeded), 500, method="PUT", times=None)
    result = run_cli("import", str(bundles[kind]), "--to", f"{proxy.host}/m", "-q",
                     "--retries", "0")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {registry.host}/legacy/tool:latest: ")
    for repo, tag in IMAGES:
        assert dest_digest(dest, f"m/{repo}", tag) is None
    assert proxy.count("PUT", r"/manifests/1$") + proxy.count("PUT", r"/manifests/1\.0$") == 0


def test_import_keep_going_library_error(seeded_registry: Seeded, bundles, registry_factory,
                                         fault_proxy):
    from bundler import import_bundle

    registry, seeded = seeded_registry
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    proxy.status(tool_layer(seeded), 500, method="PUT", times=None)
    with pytest.raises(PartialFailureError) as info:
        import_bundle(bundles["dir"], to=f"{proxy.host}/m", options=FAST, keep_going=True)
    (failure,) = info.value.failures
    assert failure.image == f"{registry.host}/legacy/tool:latest"
    assert isinstance(failure.cause, RegistryError) and failure.cause.status == 500
    assert [t.name for t in info.value.result.targets] == [
        f"{registry.host}/base/os:1", f"{registry.host}/apps/api:1.0"]


def test_failed_downloads_give_their_connections_back(registry: LocalRegistry,
                                                      tmp_path: Path) -> None:
    """Six images whose manifests understate a layer's size fail mid-stream; with a pool
    of two connections the two healthy images after them still export."""
    from bundler.sandbox import Image, make_image, push, random_layer
    from bundler.sandbox.images import sha256_digest

    refs = []
    for i in range(6):
        image = make_image([random_layer(100 + i, 1 << 20)])
        doc = json.loads(image.manifest_bytes)
        doc["layers"][0]["size"] = 200_000
        data = json.dumps(doc).encode()
        push(registry, f"bad/b{i}", Image(data, image.media_type, sha256_digest(data),
                                          len(data), image.config, image.layers,
                                          image.platform), tag="1")
        refs.append(f"{registry.host}/bad/b{i}:1")
    good = [make_image([random_layer(200 + i, 300_000)]) for i in range(2)]
    for i, image in enumerate(good):
        push(registry, f"good/g{i}", image, tag="1")
        refs.append(f"{registry.host}/good/g{i}:1")
    options = TransportOptions(retries=0, max_connections=2, timeout_s=5)
    with pytest.raises(PartialFailureError) as info:
        export_bundle(refs, tmp_path / "bundle", options=options, jobs=2, keep_going=True)
    assert [f.image for f in info.value.failures] == refs[:6]
    assert {type(f.cause).__name__ for f in info.value.failures} == {"SizeMismatchError"}
    assert [str(p.descriptor.digest) for p in info.value.result.images] == [
        image.digest for image in good]


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_a_blob_refused_in_one_repository_fails_only_the_images_there(
        seeded_registry: Seeded, bundles, registry_factory, fault_proxy, kind):
    """base/os:1 and apps/api:1.0 share a layer; uploads into m/apps/api answer 500. The
    shared layer still reaches m/base/os, so only apps/api fails, and it is the image the
    error names, with or without --keep-going."""
    registry, seeded = seeded_registry
    base, api = seeded.get("base/os", "1"), seeded.get("apps/api", "1.0")
    assert set(base.blob_sizes) & set(api.blob_sizes)  # the shared layer
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    proxy.status(r"/m/apps/api/blobs/uploads/", 500, times=None)
    result = run_cli("import", str(bundles[kind]), "--to", f"{proxy.host}/m", "-q",
                     "--keep-going", "--retries", "0")
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 2, errors
    assert errors[0].startswith(f"error: {registry.host}/apps/api:1.0: ")
    assert "500" in errors[0]
    assert errors[1] == "failed: 1 of 3 images; run the same command again to retry them"
    for repo, tag in IMAGES:
        expected = None if repo == "apps/api" else seeded.get(repo, tag).digest
        assert dest_digest(dest, f"m/{repo}", tag) == expected
    proxy.status(r"/n/apps/api/blobs/uploads/", 500, times=None)
    fast = run_cli("import", str(bundles[kind]), "--to", f"{proxy.host}/n", "-q",
                   "--retries", "0")  # without --keep-going: the first failure ends it
    assert fast.exit_code == 1
    assert fast.stderr.startswith(f"error: {registry.host}/apps/api:1.0: ")


def test_a_refused_mount_falls_back_to_an_upload(seeded_registry: Seeded, bundles,
                                                 registry_factory, fault_proxy):
    registry, seeded = seeded_registry
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    proxy.status(r"/blobs/uploads/\?.*mount=", 500, method="POST", times=None)
    result = run_cli("import", str(bundles["dir"]), "--to", f"{proxy.host}/m", "-q",
                     "--retries", "0")
    assert result.exit_code == 0, result.stderr
    assert proxy.count("POST", r"mount=") >= 1
    assert ", mounted 0, " in result.stdout.splitlines()[0]
    for repo, tag in IMAGES:
        assert dest_digest(dest, f"m/{repo}", tag) == seeded.get(repo, tag).digest

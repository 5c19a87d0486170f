"""Non-distributable (foreign) layers: exported, verified and imported without their blob.

The sandbox pushes a Docker schema 2 image whose last layer is a foreign layer (media
type ``application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`` with ``urls``) and
never gives that blob to the registry, as a registry holding a Windows base image would.
distribution 2.8 refuses any layer URL unless ``validation.manifests.urls.allow`` says
otherwise ("invalid URL on layer", HTTP 500), so the registries here allow https URLs;
an import into a registry that refuses them fails with a message that says why.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from bundler import RegistryError, TransferError, export_bundle, import_bundle, verify_bundle
from bundler.cli.main import main
from bundler.oci.content import DOCKER_MANIFEST, Descriptor, is_non_distributable
from bundler.oci.digest import Digest
from bundler.registry.client import TransportOptions
from bundler.sandbox import Image, LocalRegistry, make_image, make_layer, push
from bundler.sandbox.images import sha256_digest

FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
URL = "https://example.invalid/windows/layer.tar.gz"
FAST = TransportOptions(retries=1, retry_delay_s=0.01)
ALLOW_URLS = {"validation": {"manifests": {"urls": {"allow": ["^https://"]}}}}


def foreign_image() -> Image:
    """A Docker image: one ordinary layer, then a foreign layer with ``urls``."""
    base = make_image([make_layer({"app.txt": b"ordinary"}),
                       make_layer({"os.txt": b"foreign base"})], docker=True)
    doc = json.loads(base.manifest_bytes)
    doc["layers"][1]["mediaType"] = FOREIGN
    doc["layers"][1]["urls"] = [URL]
    data = json.dumps(doc, indent=3).encode()
    return Image(data, DOCKER_MANIFEST, sha256_digest(data), len(data), base.config,
                 base.layers, base.platform)


def manifest_digest(registry: LocalRegistry, name: str) -> str:
    response = httpx.get(f"{registry.url}/v2/{name}", headers={"Accept": DOCKER_MANIFEST})
    response.raise_for_status()
    return "sha256:" + hashlib.sha256(response.content).hexdigest()


def test_the_predicate_reads_media_type_or_urls() -> None:
    digest = Digest.parse("sha256:" + "a" * 64)
    assert is_non_distributable(Descriptor(FOREIGN, digest, 1))
    assert is_non_distributable(Descriptor("application/vnd.oci.image.layer.v1.tar+gzip",
                                           digest, 1, urls=(URL,)))
    assert not is_non_distributable(Descriptor("application/vnd.oci.image.layer.v1.tar+gzip",
                                               digest, 1))


@pytest.fixture
def source(registry_factory) -> LocalRegistry:
    """A registry that accepts foreign layer URLs, holding win/app:1 without its foreign
    blob."""
    registry = registry_factory(extra_config=ALLOW_URLS)
    image = foreign_image()
    push(registry, "win/app", image, tag="1", skip_blobs={image.layers[1].digest})
    return registry


def test_export_verify_import_without_the_foreign_blob(source: LocalRegistry,
                                                       registry_factory, tmp_path: Path) -> None:
    registry, image = source, foreign_image()
    foreign = image.layers[1].digest
    assert httpx.head(f"{registry.url}/v2/win/app/blobs/{foreign}").status_code == 404

    bundle = tmp_path / "bundle"
    exported = export_bundle([f"{registry.host}/win/app:1"], bundle, options=FAST)
    assert [str(d) for d in exported.skipped_foreign] == [foreign]
    assert [str(p.descriptor.digest) for p in exported.images] == [image.digest]
    assert not (bundle / "blobs/sha256" / foreign[7:]).exists()

    report = verify_bundle(bundle)
    assert (report.problems, [str(d) for d in report.skipped]) == ([], [foreign])
    assert (report.images, report.blobs) == (1, 3)  # manifest, config, ordinary layer
    shown = CliRunner().invoke(main, ["verify", str(bundle)])
    assert shown.exit_code == 0
    assert "1 non-distributable layer not held (skipped)" in shown.stdout

    dest = registry_factory(extra_config=ALLOW_URLS)
    imported = import_bundle(bundle, to=f"{dest.host}/m", options=FAST)
    assert [str(d) for d in imported.skipped_foreign] == [foreign]
    assert imported.blobs_uploaded == 2  # config and the ordinary layer
    assert manifest_digest(dest, "m/win/app/manifests/1") == image.digest
    assert httpx.head(f"{dest.url}/v2/m/win/app/blobs/{foreign}").status_code == 404


def test_a_registry_refusing_foreign_urls_is_named_as_the_cause(
        source: LocalRegistry, registry_factory, tmp_path: Path) -> None:
    image = foreign_image()
    bundle = tmp_path / "bundle"
    export_bundle([f"{source.host}/win/app:1"], bundle, options=FAST)
    dest = registry_factory()  # distribution's default: no layer URL allowed
    with pytest.raises(TransferError) as info:
        import_bundle(bundle, to=f"{dest.host}/m", options=TransportOptions(retries=0))
    cause = info.value.cause
    assert isinstance(cause, RegistryError) and cause.status == 500
    assert "MANIFEST_BLOB_UNKNOWN" in cause.codes
    assert str(cause).endswith(
        f"(the manifest references non-distributable layers the bundle does not hold "
        f"({image.layers[1].digest}); this registry refuses them: it must accept foreign "
        f"layer URLs, e.g. distribution's validation.manifests.urls.allow)")


def test_archive_export_verify_and_pipe_import_without_the_foreign_blob(
        source: LocalRegistry, registry_factory, tmp_path: Path) -> None:
    image = foreign_image()
    foreign = image.layers[1].digest
    archive = tmp_path / "bundle.tar.zst"
    exported = export_bundle([f"{source.host}/win/app:1"], archive, options=FAST)
    assert [str(d) for d in exported.skipped_foreign] == [foreign]

    report = verify_bundle(archive)
    assert (report.problems, [str(d) for d in report.skipped]) == ([], [foreign])

    dest = registry_factory(extra_config=ALLOW_URLS)
    runner = CliRunner()
    shown = runner.invoke(main, ["import", "-", "--to", f"{dest.host}/m", "-q"],
                          input=archive.read_bytes())
    assert shown.exit_code == 0, shown.output
    assert manifest_digest(dest, "m/win/app/manifests/1") == image.digest
    assert httpx.head(f"{dest.url}/v2/m/win/app/blobs/{foreign}").status_code == 404

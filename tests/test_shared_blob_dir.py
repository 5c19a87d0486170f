"""A layout written by ``skopeo copy --dest-shared-blob-dir DIR ... oci:LAYOUT:tag``.

skopeo 1.9 writes ``oci-layout`` and ``index.json`` into LAYOUT, leaves ``LAYOUT/blobs``
empty and puts every blob (manifests and configs too) into ``DIR/sha256/<hex>``. Such a
layout imports, verifies and lists with ``--shared-blob-dir DIR``; without it, bundler
names the missing blob and suggests the option.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from bundler import BundleError, import_bundle, list_bundle, verify_bundle
from bundler.cli.main import main
from bundler.sandbox import LocalRegistry, SeededSet
from bundler.sandbox.images import Index

Seeded = tuple[LocalRegistry, SeededSet]
ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo missing")


def run(*argv: str) -> None:
    proc = subprocess.run(list(argv), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()


@pytest.fixture
def shared_layout(seeded_registry: Seeded, tmp_path: Path) -> tuple[Path, Path]:
    """(LAYOUT, SHARED): multi/arch:1 (an index) as ``v1`` and base/os:1 as ``os1``,
    written by skopeo with a shared blob directory."""
    seeded = seeded_registry[1]
    layout, shared = tmp_path / "layout", tmp_path / "shared"
    for ref, name in ((seeded.get("multi/arch", "1").reference, "v1"),
                      (seeded.get("base/os", "1").reference, "os1")):
        run("skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-shared-blob-dir",
            str(shared), f"docker://{ref}", f"oci:{layout}:{name}")
    return layout, shared


def served(registry: LocalRegistry, path: str) -> bytes:
    response = httpx.get(f"{registry.url}/v2/{path}", headers={"Accept": ACCEPT})
    assert response.status_code == 200, path
    return response.content


def test_skopeo_wrote_the_blobs_into_the_shared_directory(shared_layout) -> None:
    layout, shared = shared_layout
    assert list((layout / "blobs").iterdir()) == []
    blobs = sorted(p.name for p in (shared / "sha256").iterdir())
    assert blobs and all(hashlib.sha256((shared / "sha256" / b).read_bytes()).hexdigest() == b
                         for b in blobs)


def test_a_shared_layout_imports_with_every_digest_preserved(
        seeded_registry: Seeded, shared_layout, registry: LocalRegistry) -> None:
    layout, shared = shared_layout
    seeded = seeded_registry[1]
    result = CliRunner().invoke(main, ["import", str(layout), "--shared-blob-dir", str(shared),
                                       "--to", f"{registry.host}/shared/app", "-q"])
    assert result.exit_code == 0, result.output
    multi, base = seeded.get("multi/arch", "1"), seeded.get("base/os", "1")
    assert result.stdout.splitlines()[1:] == [
        f"  v1 -> {registry.host}/shared/app:v1@{multi.digest}",
        f"  os1 -> {registry.host}/shared/app:os1@{base.digest}",
        f"receipt: {registry.host}/shared/app/bundler-receipts:sha256-"
        + hashlib.sha256((layout / "index.json").read_bytes()).hexdigest(),
    ]
    assert served(registry, "shared/app/manifests/v1") == multi.manifest_bytes
    assert served(registry, "shared/app/manifests/os1") == base.manifest_bytes
    assert isinstance(multi.item, Index)
    for child in multi.item.children:
        assert served(registry, f"shared/app/manifests/{child.digest}") == child.manifest_bytes
        for blob in child.blobs:
            assert served(registry, f"shared/app/blobs/{blob.digest}") == blob.data


def test_without_the_option_the_missing_blob_is_named_and_the_option_suggested(
        seeded_registry: Seeded, shared_layout, registry: LocalRegistry) -> None:
    layout, _ = shared_layout
    top = seeded_registry[1].get("multi/arch", "1").digest
    message = (f"{layout}: blob {top} is missing: the layout's blobs directory holds "
               "nothing; a layout written with a shared blob directory (skopeo copy "
               "--dest-shared-blob-dir DIR) keeps its blobs there: give it with "
               "--shared-blob-dir DIR")
    mark = registry.mark()
    with pytest.raises(BundleError) as info:
        import_bundle(layout, to=f"{registry.host}/shared/app")
    assert str(info.value) == message
    shown = CliRunner().invoke(main, ["import", str(layout), "--to",
                                      f"{registry.host}/shared/app", "-q"])
    assert (shown.exit_code, shown.stderr) == (1, f"error: {message}\n")
    assert registry.requests(mark) == []  # refused before any request

    report = verify_bundle(layout)
    assert report.problems == [message]
    shown = CliRunner().invoke(main, ["list", str(layout)])
    assert (shown.exit_code, shown.stderr) == (1, f"error: {message}\n")


def test_verify_and_list_read_the_shared_directory(seeded_registry: Seeded,
                                                   shared_layout) -> None:
    layout, shared = shared_layout
    seeded = seeded_registry[1]
    multi, base = seeded.get("multi/arch", "1"), seeded.get("base/os", "1")
    report = verify_bundle(layout, shared_blob_dir=shared)
    assert (report.problems, report.images) == ([], 2)
    listing = list_bundle(layout, shared_blob_dir=shared)
    assert [(i.name, str(i.digest)) for i in listing.images] == [("v1", multi.digest),
                                                                 ("os1", base.digest)]
    assert listing.blob_count == len(list((shared / "sha256").iterdir()))
    shown = CliRunner().invoke(main, ["verify", str(layout), "--shared-blob-dir", str(shared)])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith(f"{layout}: OK: 2 images, {report.blobs} blobs")


def test_a_damaged_blob_in_the_shared_directory_is_named(seeded_registry: Seeded,
                                                         shared_layout) -> None:
    layout, shared = shared_layout
    base = seeded_registry[1].get("base/os", "1").item
    layer = base.layers[0]
    path = shared / "sha256" / layer.digest[7:]
    path.write_bytes(b"x" * layer.size)
    report = verify_bundle(layout, shared_blob_dir=shared)
    assert len(report.problems) == 1
    assert f"digest mismatch ({path}): expected {layer.digest}" in report.problems[0]


def test_the_option_is_refused_for_an_archive_and_a_missing_directory(
        shared_layout, tmp_path: Path) -> None:
    layout, shared = shared_layout
    archive = tmp_path / "bundle.tar"
    archive.write_bytes(b"")
    runner = CliRunner()
    for command in (["verify"], ["list"], ["import", "--to", "127.0.0.1:1/x"]):
        shown = runner.invoke(main, [*command, str(archive), "--shared-blob-dir", str(shared)])
        assert shown.exit_code == 2, shown.output
        assert shown.stderr.endswith("Error: --shared-blob-dir is for a layout directory; an "
                                     "archive holds its own blobs\n")
    shown = runner.invoke(main, ["verify", str(layout), "--shared-blob-dir",
                                 str(tmp_path / "nowhere")])
    assert shown.exit_code == 2
    assert "does not exist" in shown.stderr
    report = verify_bundle(layout, shared_blob_dir=tmp_path / "nowhere")
    assert report.problems == [f"{tmp_path / 'nowhere'}: no such shared blob directory"]

"""Archive bundles that can be trusted: limits shared by writers and readers, linear
zstd decoding with a ratio cap, errors instead of tracebacks, nothing left by a failed
export."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from bundler import BundleError, import_bundle, list_bundle, verify_bundle
from bundler.content import OCI_INDEX, Descriptor, parse_manifest
from bundler.copy import ImagePlan, walk
from bundler.digest import Digest
from bundler.errors import UnsafeArchiveError
from bundler.limits import HELD_LIMIT, INDEX_LIMIT
from bundler.sandbox import LocalRegistry
from bundler.sandbox.images import Blob, Image, make_image, random_layer
from bundler.stores.archive_export import ArchiveExport

REF_NAME = "org.opencontainers.image.ref.name"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
BUNDLER = str(Path(sys.executable).with_name("bundler"))


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def dest_digest(reg: LocalRegistry, repository: str, identifier: str) -> str | None:
    with reg.client() as http:
        response = http.head(f"{reg.url}/v2/{repository}/manifests/{identifier}",
                             headers={"Accept": ACCEPT})
    return response.headers.get("Docker-Content-Digest") if response.status_code == 200 \
        else None


def many_names(count: int) -> list[str]:
    return [f"registry.example.com:5000/team-{n % 97}/service-{n}:v1.2.{n}"
            for n in range(count)]


def export_many(output: Path, names: list[str]):  # type: ignore[no-untyped-def]
    """One small image under many names, written by the archive writer (no registry)."""
    image = make_image([random_layer(3, 1024)])
    manifest = parse_manifest(image.manifest_bytes, image.media_type)
    entries, plans = [], []
    for name in names:
        descriptor = Descriptor.from_dict({**image.descriptor(), "annotations": {
            REF_NAME: name, "io.containerd.image.name": name}})
        entries.append(descriptor)
        plans.append(walk(descriptor, lambda _d: manifest, name=name))
    with ArchiveExport(output, "tar") as archive:
        archive.start(entries, plans)
        for blob in (image.config, *image.layers):
            archive.put_blob(Digest.parse(blob.digest), blob.size,
                             lambda offset, b=blob: iter([b.data[offset:]]))
    return image


# -- 2. one set of limits --------------------------------------------------------------
def test_an_archive_of_20000_images_is_read_by_verify_list_and_import(
        tmp_path: Path, registry: LocalRegistry) -> None:
    output = tmp_path / "many.tar"
    names = many_names(20000)
    image = export_many(output, names)
    with tarfile.open(output) as tar:
        assert tar.getmember("index.json").size > 8 << 20  # over the old cap
    report = verify_bundle(output)
    assert (report.problems, report.images, report.blobs) == ([], 20000, 3)
    listing = list_bundle(output)
    assert [i.name for i in listing.images] == names
    result = import_bundle(output, mapping=[(names[12345], f"{registry.host}/one/image:1")])
    assert [t.name for t in result.targets] == [names[12345]]
    assert dest_digest(registry, "one/image", "1") == image.digest


def test_export_refuses_an_index_json_readers_would_refuse(tmp_path: Path) -> None:
    image = make_image([random_layer(4, 512)])
    manifest = parse_manifest(image.manifest_bytes, image.media_type)
    top = Descriptor.from_dict(image.descriptor())
    plan = ImagePlan(name="x", descriptor=top, manifests=[(top, manifest)],
                     blobs={b.digest: b for b in manifest.blobs})
    entries = [top.with_annotations({REF_NAME: name, "io.containerd.image.name": name})
               for name in many_names(140000)]
    output = tmp_path / "huge.tar"
    archive = ArchiveExport(output, "tar")
    with pytest.raises(BundleError) as info:
        archive.start(entries, [plan] * len(entries))
    archive.abort()
    message = str(info.value)
    assert message.startswith(f"{output}: index.json would have ")
    assert "more than the limit of 67108864 bytes (64 MiB) that readers put on it" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["big-index.tar"])
def test_readers_name_the_real_limit_on_index_json(name: str, tmp_path: Path,
                                                   registry: LocalRegistry) -> None:
    path = tmp_path / name
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    index += b" " * (INDEX_LIMIT + 1 - len(index))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "index.json", index)
    expected = (f"{path}: index.json has {INDEX_LIMIT + 1} bytes, more than the limit of "
                "67108864 bytes (64 MiB) on index.json")
    assert verify_bundle(path).problems == [expected]
    with pytest.raises(BundleError) as listed:
        list_bundle(path)
    assert str(listed.value) == expected
    with pytest.raises(BundleError) as imported:
        import_bundle(path, to=f"{registry.host}/x")
    assert str(imported.value) == expected
    assert "bundle order" not in expected and HELD_LIMIT > INDEX_LIMIT


# -- 6. zstd: linear decoding, a cap on the ratio ---------------------------------------
def zero_layer_archive(path: Path, size: int) -> Image:
    """A one-image .tar.zst whose layer is ``size`` zero bytes (about 10000:1 in zstd)."""
    layer = Blob(OCI_LAYER_TAR, bytes(size), "sha256:" + hashlib.sha256(bytes(size)).hexdigest(),
                 size)
    image = make_image([layer])
    plain = path.with_suffix("")
    with tarfile.open(plain, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                           "manifests": [{**image.descriptor(), "annotations": {
                                               REF_NAME: "example.com/zeros/layer:1"}}]}
                                          ).encode())
        add(tar, "blobs/sha256/" + image.digest.removeprefix("sha256:"), image.manifest_bytes)
        for blob in (image.config, layer):
            add(tar, "blobs/sha256/" + blob.digest.removeprefix("sha256:"), blob.data)
    with open(plain, "rb") as src, open(path, "wb") as dst:
        zstandard.ZstdCompressor(level=3).copy_stream(src, dst)
    plain.unlink()
    return image


@pytest.fixture(scope="module")
def zeros_zst(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Image]:
    path = tmp_path_factory.mktemp("zeros") / "zeros.tar.zst"
    return path, zero_layer_archive(path, 96 << 20)


def test_decoding_a_zero_layer_keeps_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "zeros.tar.zst"
    zero_layer_archive(path, 48 << 20)  # within the allowance: no flag needed
    assert path.stat().st_size < 16 << 10
    tracemalloc.start()
    try:
        report = verify_bundle(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (report.problems, report.images, report.blobs) == ([], 1, 3)
    assert report.bytes >= 48 << 20
    assert peak < 16 << 20, f"verify held {peak} bytes at its peak"


def bomb_message(path: Path, layer: str) -> str:
    return (f"{path}: 'blobs/sha256/{layer}': more than 1000 bytes decompressed per "
            "compressed byte")


def test_verify_refuses_a_decompression_bomb_unless_told(zeros_zst: tuple[Path, Image]) -> None:
    path, image = zeros_zst
    layer = image.layers[0].digest.removeprefix("sha256:")
    report = verify_bundle(path)
    assert len(report.problems) == 1
    assert report.problems[0].startswith(bomb_message(path, layer))
    assert report.problems[0].endswith("refused as a decompression bomb. If the bundle is "
                                       "trusted (a layer of zeros compresses that well), "
                                       "give --max-zstd-ratio with a higher limit")
    cli = subprocess.run([BUNDLER, "verify", str(path)], capture_output=True, text=True)
    assert cli.returncode == 1
    assert "Traceback" not in cli.stderr
    assert f"problem: {bomb_message(path, layer)}" in cli.stderr
    cli = subprocess.run([BUNDLER, "verify", "--max-zstd-ratio", "20000", str(path)],
                         capture_output=True, text=True)
    assert (cli.returncode, cli.stderr) == (0, "")
    usage = subprocess.run([BUNDLER, "verify", "--max-zstd-ratio", "0", str(path)],
                           capture_output=True, text=True)
    assert usage.returncode == 2
    assert "Invalid value for '--max-zstd-ratio'" in usage.stderr


def test_import_refuses_a_decompression_bomb_and_takes_it_with_the_flag(
        zeros_zst: tuple[Path, Image], registry: LocalRegistry) -> None:
    path, image = zeros_zst
    layer = image.layers[0].digest.removeprefix("sha256:")
    with pytest.raises(UnsafeArchiveError) as info:
        import_bundle(path, to=f"{registry.host}/z")
    assert str(info.value).startswith(bomb_message(path, layer))
    assert dest_digest(registry, "z/zeros/layer", "1") is None
    import_bundle(path, to=f"{registry.host}/z", max_zstd_ratio=100000)
    assert dest_digest(registry, "z/zeros/layer", "1") == image.digest

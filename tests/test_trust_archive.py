"""Archive bundles that can be trusted: limits shared by writers and readers, linear
zstd decoding with a ratio cap, errors instead of tracebacks, nothing left by a failed
export."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from bundler import BundleError, import_bundle, list_bundle, verify_bundle
from bundler.content import OCI_INDEX, Descriptor, parse_manifest
from bundler.copy import ImagePlan, walk
from bundler.digest import Digest
from bundler.limits import HELD_LIMIT, INDEX_LIMIT
from bundler.sandbox import LocalRegistry
from bundler.sandbox.images import make_image, random_layer
from bundler.stores.archive_export import ArchiveExport

REF_NAME = "org.opencontainers.image.ref.name"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


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
    with registry.client() as http:
        response = http.head(f"{registry.url}/v2/one/image/manifests/1",
                             headers={"Accept": ACCEPT})
    assert response.headers["Docker-Content-Digest"] == image.digest


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

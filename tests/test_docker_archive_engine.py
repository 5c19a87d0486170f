"""A docker archive is written by the one transfer engine: each blob is fetched once from
the registry and written as one member, in the archive's order; the tar of a zstd layer
is decompressed from the member just written, not fetched again. On a real registry.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import zstandard

from bundler import export_docker_archive
from bundler.oci.reference import Reference
from bundler.sandbox import LocalRegistry, push
from bundler.sandbox.images import Blob, Image, make_image, make_layer
from bundler.sandbox.images import _tar_bytes as layer_bytes


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def zstd_image() -> tuple[Image, bytes]:
    """An image whose second layer is zstd; and that layer's tar."""
    raw = layer_bytes({"etc/zstd": b"from a zstd layer\n"})
    zstd = Blob.of("application/vnd.oci.image.layer.v1.tar+zstd",
                   zstandard.ZstdCompressor().compress(raw), diff_id=sha(raw))
    typed = make_image([make_layer({"etc/gzip": b"gzip\n"}), zstd])
    layers = [typed.layers[0], zstd]
    document = json.loads(typed.manifest_bytes)
    document["layers"] = [layer.descriptor() for layer in layers]
    manifest = json.dumps(document).encode()
    return Image(manifest, typed.media_type, sha(manifest), len(manifest), typed.config,
                 layers, typed.platform), raw


def test_each_blob_is_fetched_once_and_written_in_archive_order(
        registry: LocalRegistry, tmp_path: Path) -> None:
    image, raw = zstd_image()
    push(registry, "team/zstd", image, tag="1")
    out = tmp_path / "zstd.tar"
    since = registry.mark()
    result = export_docker_archive([Reference.parse(f"{registry.host}/team/zstd:1")], out)
    gets = [uri for method, uri in registry.requests(since)
            if method == "GET" and "/blobs/" in uri]
    layers = [layer.digest for layer in image.layers]
    # the config is read once for the diff_ids manifest.json names, once as a member
    assert sorted(gets) == sorted([f"/v2/team/zstd/blobs/{d}"
                                   for d in [image.config.digest] * 2 + layers])
    assert (result.blobs, result.bytes) == (
        4, image.config.size + sum(layer.size for layer in image.layers) + len(raw))
    with tarfile.open(out) as tar:
        names = tar.getnames()
        members = {name: tar.extractfile(name).read() for name in names}  # type: ignore[union-attr]
    blob = [f"blobs/sha256/{d.split(':')[1]}" for d in
            [image.digest, image.config.digest, *layers, sha(raw)]]
    assert names == ["oci-layout", "index.json", "manifest.json", *blob]
    assert members[blob[0]] == image.manifest_bytes
    assert members[blob[-1]] == raw  # the zstd layer's tar
    assert json.loads(members["manifest.json"]) == [{
        "Config": blob[1], "RepoTags": [f"{registry.host}/team/zstd:1"],
        "Layers": [blob[2], blob[4]]}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry", "zstd.tar"]

"""Deterministic synthetic images, indexes and attestation manifests, and pushing them.

Everything is built from seeded ``random.Random`` and fixed timestamps, so the same call
gives the same bytes and digests on every run. Layers are gzip tars with mtime 0,
uid/gid 0 and sorted names. Pushing uses plain httpx requests (distribution-spec
"Pushing blobs" / "Pushing manifests"), independent of the rest of ``bundler``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "Blob",
    "Image",
    "Index",
    "make_artifact",
    "make_attestation",
    "make_image",
    "make_index",
    "make_layer",
    "random_layer",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"
CREATED = "2024-01-01T00:00:00Z"


def sha256_digest(data: bytes) -> str:
    """Return ``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Serialise ``obj`` compactly with sorted keys (stable bytes for digests)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Blob:
    """A blob with its bytes.

    Attributes:
        media_type: descriptor media type.
        data: the exact bytes.
        digest: ``sha256:<hex>`` of ``data``.
        size: ``len(data)``.
        diff_id: sha256 of the uncompressed tar for layers, else None.
        annotations: descriptor annotations, or None.
    """

    media_type: str
    data: bytes
    digest: str
    size: int
    diff_id: str | None = None
    annotations: dict[str, str] | None = None

    @classmethod
    def of(cls, media_type: str, data: bytes, **kwargs: Any) -> Blob:
        """Build a Blob computing digest and size from ``data``."""
        return cls(media_type, data, sha256_digest(data), len(data), **kwargs)

    def with_media_type(self, media_type: str) -> Blob:
        """Return the same bytes under another media type."""
        return Blob(media_type, self.data, self.digest, self.size, self.diff_id, self.annotations)

    def descriptor(self) -> dict[str, Any]:
        """Return the OCI descriptor (mediaType, digest, size[, annotations])."""
        desc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            desc["annotations"] = dict(self.annotations)
        return desc


@dataclass
class Image:
    """An image manifest with its config and layers.

    Attributes:
        manifest_bytes: the exact bytes pushed.
        media_type: the manifest media type.
        digest: sha256 of ``manifest_bytes``.
        size: ``len(manifest_bytes)``.
        config: the config blob.
        layers: layer blobs in order.
        platform: index platform dict (architecture, os[, variant]).
        index_annotations: annotations for this manifest's descriptor in an index.
    """

    manifest_bytes: bytes
    media_type: str
    digest: str
    size: int
    config: Blob
    layers: list[Blob]
    platform: dict[str, str]
    index_annotations: dict[str, str] | None = None

    @property
    def blobs(self) -> list[Blob]:
        """Config then layers."""
        return [self.config, *self.layers]

    def descriptor(self) -> dict[str, Any]:
        """Return the descriptor of this manifest as listed in an index."""
        desc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "platform": dict(self.platform),
        }
        if self.index_annotations:
            desc["annotations"] = dict(self.index_annotations)
        return desc


@dataclass
class Index:
    """An OCI image index or Docker manifest list.

    Attributes:
        manifest_bytes: the exact bytes pushed.
        media_type: index media type.
        digest: sha256 of ``manifest_bytes``.
        size: ``len(manifest_bytes)``.
        children: the listed images in order (attestation manifests included).
    """

    manifest_bytes: bytes
    media_type: str
    digest: str
    size: int
    children: list[Image] = field(default_factory=list)

    @property
    def blobs(self) -> list[Blob]:
        """All blobs of all children (with repeats)."""
        return [b for child in self.children for b in child.blobs]


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    return buf.getvalue()


def make_layer(files: dict[str, bytes], *, docker: bool = False) -> Blob:
    """Return a reproducible gzip tar layer holding ``files``.

    Args:
        files: path inside the layer -> content.
        docker: use the Docker schema2 layer media type instead of the OCI one.

    Returns:
        The layer blob with ``diff_id`` set.
    """
    raw = _tar_bytes(files)
    data = gzip.compress(raw, compresslevel=6, mtime=0)
    media_type = DOCKER_LAYER if docker else OCI_LAYER
    return Blob.of(media_type, data, diff_id=sha256_digest(raw))


def random_layer(seed: int, size: int, *, docker: bool = False) -> Blob:
    """Return a layer with one file ``data/<seed>.bin`` of ``size`` seeded random bytes.

    Args:
        seed: random seed (same seed -> same bytes).
        size: file size in bytes (the compressed layer is slightly larger).
        docker: use the Docker layer media type.
    """
    return make_layer({f"data/{seed}.bin": random.Random(seed).randbytes(size)}, docker=docker)


def _config_json(layers: list[Blob], platform: dict[str, str], created: str) -> bytes:
    config: dict[str, Any] = {
        "architecture": platform["architecture"],
        "os": platform["os"],
        "created": created,
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": created, "created_by": f"sandbox layer {i}"} for i in range(len(layers))
        ],
    }
    if "variant" in platform:
        config["variant"] = platform["variant"]
    return canonical_json(config)


def make_image(
    layers: list[Blob],
    *,
    os: str = "linux",
    architecture: str = "amd64",
    variant: str | None = None,
    docker: bool = False,
    annotations: dict[str, str] | None = None,
    created: str = CREATED,
) -> Image:
    """Build an image manifest (OCI, or Docker schema2 when ``docker``) over ``layers``.

    Args:
        layers: layer blobs; re-typed to Docker/OCI layer media types as needed.
        os: config/platform os.
        architecture: config/platform architecture.
        variant: platform variant, e.g. "v8".
        docker: Docker schema2 media types (no annotations allowed then).
        annotations: manifest annotations (OCI only).
        created: config ``created`` timestamp.

    Returns:
        The image.
    """
    platform = {"architecture": architecture, "os": os}
    if variant:
        platform["variant"] = variant
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    layers = [b if b.media_type == layer_type else b.with_media_type(layer_type) for b in layers]
    config = Blob.of(
        DOCKER_CONFIG if docker else OCI_CONFIG, _config_json(layers, platform, created)
    )
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    if annotations and not docker:
        manifest["annotations"] = dict(annotations)
    data = json.dumps(manifest, indent=3).encode()
    return Image(data, media_type, sha256_digest(data), len(data), config, layers, platform)


def make_attestation(image: Image) -> Image:
    """Build a BuildKit-style attestation manifest for ``image``.

    Its one layer is an in-toto statement naming the image digest; in an index it is
    listed with platform unknown/unknown and ``vnd.docker.reference.*`` annotations.
    """
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{"name": "sandbox", "digest": {"sha256": image.digest.split(":", 1)[1]}}],
        "predicate": {"spdxVersion": "SPDX-2.3", "name": "sandbox-sbom", "packages": []},
    }
    raw = canonical_json(statement)
    layer = Blob.of(
        IN_TOTO,
        raw,
        diff_id=sha256_digest(raw),
        annotations={"in-toto.io/predicate-type": "https://spdx.dev/Document"},
    )
    platform = {"architecture": "unknown", "os": "unknown"}
    config = Blob.of(OCI_CONFIG, _config_json([layer], platform, CREATED))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
        "annotations": {
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": image.digest,
        },
    }
    data = json.dumps(manifest, indent=2).encode()
    return Image(
        data,
        OCI_MANIFEST,
        sha256_digest(data),
        len(data),
        config,
        [layer],
        platform,
        index_annotations={
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": image.digest,
        },
    )


def make_index(
    images: list[Image],
    *,
    attestations: bool = True,
    docker: bool = False,
    annotations: dict[str, str] | None = None,
) -> Index:
    """Build an OCI index (or Docker manifest list) listing ``images``.

    Args:
        images: platform images.
        attestations: follow each image with its attestation manifest (OCI only).
        docker: Docker manifest list media type, never with attestations.
        annotations: index annotations (OCI only).

    Returns:
        The index; ``children`` includes attestation manifests.
    """
    children: list[Image] = []
    for image in images:
        children.append(image)
        if attestations and not docker:
            children.append(make_attestation(image))
    media_type = DOCKER_MANIFEST_LIST if docker else OCI_INDEX
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [child.descriptor() for child in children],
    }
    if annotations and not docker:
        body["annotations"] = dict(annotations)
    data = json.dumps(body, indent=2).encode()
    return Index(data, media_type, sha256_digest(data), len(data), children)


def make_artifact(
    subject: Image | Index,
    payload: bytes,
    artifact_type: str = "application/vnd.dev.bundler.signature.v1",
) -> Image:
    """Build an artifact manifest (``artifactType`` + ``subject``), e.g. a signature.

    Args:
        subject: the manifest the artifact refers to.
        payload: the single layer's bytes.
        artifact_type: the ``artifactType`` (layer type is ``<artifact_type>+json``).

    Returns:
        An Image whose config is the OCI empty descriptor ``{}``.
    """
    config = Blob.of(OCI_EMPTY, b"{}")
    layer = Blob.of(artifact_type + "+json", payload)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": subject.size,
        },
        "annotations": {"org.opencontainers.image.created": CREATED},
    }
    data = json.dumps(manifest, indent=2).encode()
    return Image(
        data,
        OCI_MANIFEST,
        sha256_digest(data),
        len(data),
        config,
        [layer],
        {"architecture": "unknown", "os": "unknown"},
    )


_LAZY = {
    "push": "push",
    "push_big_random_layer_image": "push",
    "SeededEntry": "seed",
    "SeededSet": "seed",
    "seed_standard_set": "seed",
}


def __getattr__(name: str) -> Any:
    """Re-export pushing/seeding (in push.py and seed.py, kept small) without an import cycle."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"bundler.sandbox.{_LAZY[name]}"), name)
    raise AttributeError(name)

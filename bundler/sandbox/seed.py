"""The standard seeded image set used by the demo, the end-to-end tests and the benchmarks.

Repositories (``R`` = ``127.0.0.1:PORT``)::

    R/base/os:1            OCI image, layers [common, os1]
    R/base/os:2            OCI image, layers [common, os2]          (shares "common")
    R/apps/web:1.0         OCI image, layers [common, os1, web]     (shares base layers)
    R/apps/web:latest      same manifest as apps/web:1.0
    R/apps/api:1.0         OCI image, layers [common, os1, api]
    R/legacy/tool:latest   Docker schema2 image (docker media types), one layer
    R/multi/arch:1         OCI index: linux/amd64 + linux/arm64/v8 images, each followed
                           by its BuildKit attestation manifest (4 manifests)
    R/apps/pinned@sha256:… OCI image pushed by digest only (no tag)
    R/apps/web:sha256-<hex of apps/web:1.0>.sig
                           artifact manifest (artifactType + subject -> apps/web:1.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from bundler.sandbox.images import (
    Image,
    Index,
    make_artifact,
    make_image,
    make_index,
    random_layer,
)
from bundler.sandbox.push import _HasURL, push

__all__ = ["SeededEntry", "SeededSet", "seed_standard_set"]


@dataclass(frozen=True)
class SeededEntry:
    """One pushed reference of the seeded set.

    Attributes:
        reference: ``R/repo:tag`` or ``R/repo@sha256:…`` when pushed without a tag.
        repository: repository name without the registry host.
        tag: the tag, or None (digest-only push).
        digest: manifest digest.
        media_type: manifest media type.
        manifest_bytes: the exact manifest bytes served by the registry.
        item: the Image or Index object (children, config, layers).
    """

    reference: str
    repository: str
    tag: str | None
    digest: str
    media_type: str
    manifest_bytes: bytes
    item: Image | Index = field(repr=False, compare=False)

    @property
    def blob_sizes(self) -> dict[str, int]:
        """Digest -> size of every config/layer blob this entry needs (children included)."""
        return {blob.digest: blob.size for blob in self.item.blobs}

    @property
    def manifests(self) -> dict[str, bytes]:
        """Digest -> bytes of this entry's manifest and its child manifests."""
        out = {self.digest: self.manifest_bytes}
        if isinstance(self.item, Index):
            out.update({c.digest: c.manifest_bytes for c in self.item.children})
        return out


@dataclass
class SeededSet:
    """What :func:`seed_standard_set` pushed.

    Attributes:
        host: ``127.0.0.1:PORT`` of the registry.
        entries: one per pushed reference.
    """

    host: str
    entries: list[SeededEntry] = field(default_factory=list)

    def get(self, repository: str, tag: str | None = None) -> SeededEntry:
        """Return the entry for ``repository`` and ``tag`` (first match if tag is None).

        Raises:
            KeyError: no such entry.
        """
        for entry in self.entries:
            if entry.repository == repository and (tag is None or entry.tag == tag):
                return entry
        raise KeyError(f"{repository}:{tag}")

    @property
    def references(self) -> list[str]:
        """All references, in push order."""
        return [entry.reference for entry in self.entries]

    @property
    def repositories(self) -> list[str]:
        """Distinct repositories, sorted."""
        return sorted({entry.repository for entry in self.entries})

    @property
    def blobs(self) -> dict[str, int]:
        """Digest -> size of every distinct config/layer blob (manifests excluded)."""
        out: dict[str, int] = {}
        for entry in self.entries:
            out.update(entry.blob_sizes)
        return out

    @property
    def unique_blob_count(self) -> int:
        """Number of distinct config/layer blobs."""
        return len(self.blobs)

    @property
    def unique_bytes(self) -> int:
        """Total size of the distinct config/layer blobs."""
        return sum(self.blobs.values())

    @property
    def total_bytes_without_dedup(self) -> int:
        """Sum over distinct manifests of their config+layer sizes (no sharing across images).

        Entries with the same digest (two tags of one manifest) count once; a blob used
        by two images counts twice.
        """
        seen: set[str] = set()
        total = 0
        for entry in self.entries:
            images = entry.item.children if isinstance(entry.item, Index) else [entry.item]
            for image in images:
                if image.digest not in seen:
                    seen.add(image.digest)
                    total += sum(blob.size for blob in image.blobs)
        return total


def seed_standard_set(
    registry: _HasURL | str,
    *,
    scale: int = 1,
    client: httpx.Client | None = None,
    host: str | None = None,
) -> SeededSet:
    """Push the standard image set (see module docstring) and describe it.

    Args:
        registry: a LocalRegistry (or anything with ``.url``/``.client()``) or base URL.
        scale: multiplies every layer's payload size (scale 1: 2 KiB .. 192 KiB).
        client: optional configured httpx client.
        host: registry host for references; defaults to ``registry.host`` or the URL's.

    Returns:
        The SeededSet.
    """
    if host is None:
        host = (
            getattr(registry, "host", None)
            or str(registry if isinstance(registry, str) else registry.url).split("://", 1)[-1]
        )
    kib = 1024 * scale
    common = random_layer(1, 64 * kib)
    os1, os2 = random_layer(2, 32 * kib), random_layer(3, 48 * kib)
    web, api = random_layer(4, 96 * kib), random_layer(5, 80 * kib)
    tool = random_layer(6, 40 * kib, docker=True)
    amd, arm = random_layer(7, 128 * kib), random_layer(8, 192 * kib)
    pinned = random_layer(9, 2 * kib)

    base1 = make_image([common, os1], annotations={"org.opencontainers.image.version": "1"})
    base2 = make_image([common, os2], annotations={"org.opencontainers.image.version": "2"})
    web_image = make_image([common, os1, web])
    api_image = make_image([common, os1, api])
    tool_image = make_image([tool], docker=True)
    multi = make_index(
        [make_image([common, amd]), make_image([arm], architecture="arm64", variant="v8")]
    )
    pinned_image = make_image([pinned], annotations={"dev.bundler.sandbox": "pinned"})
    signature = make_artifact(
        web_image,
        b'{"critical":{"image":{"docker-manifest-digest":"' + web_image.digest.encode() + b'"}}}',
    )
    plan: list[tuple[str, str | None, Image | Index]] = [
        ("base/os", "1", base1),
        ("base/os", "2", base2),
        ("apps/web", "1.0", web_image),
        ("apps/web", "latest", web_image),
        ("apps/api", "1.0", api_image),
        ("legacy/tool", "latest", tool_image),
        ("multi/arch", "1", multi),
        ("apps/pinned", None, pinned_image),
        ("apps/web", web_image.digest.replace(":", "-") + ".sig", signature),
    ]
    seeded = SeededSet(host)
    make_client = getattr(registry, "client", None)
    http = client or (make_client() if callable(make_client) else httpx.Client(timeout=30.0))
    try:
        for repository, tag, item in plan:
            digest = push(registry, repository, item, tag=tag, client=http)
            ref = f"{host}/{repository}:{tag}" if tag else f"{host}/{repository}@{digest}"
            seeded.entries.append(
                SeededEntry(
                    ref, repository, tag, digest, item.media_type, item.manifest_bytes, item
                )
            )
    finally:
        if client is None:
            http.close()
    return seeded

"""What ``inspect`` and ``list-tags`` show of a registry's image or repository.

:func:`inspect_image` fetches one manifest (and, for an image, its config) and returns an
:class:`ImageInfo`: digest, media type, the platforms of an index, created,
architecture/os, layers with sizes, labels, and the exact bytes of the manifest and the
config. :func:`list_repository_tags` lists a repository's tags.

Spec: distribution-spec "Pulling manifests", "Pulling blobs", "Listing Tags";
image-spec config.md (``created``, ``architecture``, ``os``, ``config.Labels``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import DigestMismatchError, ManifestError
from ..oci.content import Index, parse_manifest
from ..oci.digest import Digest
from ..oci.limits import MANIFEST_LIMIT
from ..oci.reference import Reference
from ..registry.client import TransportOptions
from .parallel import ClientPool

__all__ = ["ImageInfo", "inspect_image", "list_repository_tags"]

#: Largest config blob read by ``inspect``, in bytes.
CONFIG_LIMIT = MANIFEST_LIMIT


@dataclass
class ImageInfo:
    """One image or index as ``inspect`` shows it.

    Attributes:
        name: ``registry/repository`` as asked. tag: the tag asked, or None.
        digest: the manifest's digest. media_type: its media type.
        raw: the manifest's exact bytes. config_raw: the config's bytes (images only).
        platforms: an index's children: ``{platform, digest, mediaType, size}`` each.
        created, architecture, os, variant: from the config ("" when absent).
        layers: ``{digest, mediaType, size}`` each. labels: ``config.Labels``.
    """

    name: str
    tag: str | None
    digest: Digest
    media_type: str
    raw: bytes
    config_raw: bytes | None = None
    platforms: list[dict[str, Any]] = field(default_factory=list)
    created: str = ""
    architecture: str = ""
    os: str = ""
    variant: str = ""
    layers: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON (skopeo inspect's spirit, camelCase keys)."""
        doc: dict[str, Any] = {"name": self.name, "tag": self.tag, "digest": str(self.digest),
                               "mediaType": self.media_type}
        if self.platforms:
            doc["platforms"] = self.platforms
        if self.config_raw is not None:
            doc.update(created=self.created, architecture=self.architecture, os=self.os,
                       variant=self.variant, layers=self.layers, labels=self.labels)
        return doc


def inspect_image(reference: Reference, *, options: TransportOptions | None = None,
                  config: bool = True) -> ImageInfo:
    """Fetch a manifest (and its config) and describe it.

    Args:
        reference: the image (tag or digest).
        options: transport options of the registry.
        config: also fetch the config blob of an image manifest.

    Returns:
        An :class:`ImageInfo`.

    Raises:
        RegistryError: the registry refused (NotFoundError for an unknown image).
        ManifestError: the manifest or config does not parse, or is too large.
        DigestMismatchError: the config's bytes differ from its digest.
    """
    with ClientPool(options) as pool:
        client = pool.get(reference.registry)
        raw, media_type, digest = client.get_manifest(reference.repository,
                                                      reference.identifier)
        parsed = parse_manifest(raw, media_type or None, digest=digest)
        info = ImageInfo(reference.name, reference.tag, digest, parsed.media_type, raw)
        if isinstance(parsed, Index):
            info.platforms = [{"platform": str(d.platform) if d.platform else "",
                               "digest": str(d.digest), "mediaType": d.media_type,
                               "size": d.size} for d in parsed.manifests]
            return info
        info.layers = [{"digest": str(d.digest), "mediaType": d.media_type, "size": d.size}
                       for d in parsed.layers]
        if not config or parsed.config is None:
            return info
        descriptor = parsed.config
        what = f"config {descriptor.digest} of {reference}"
        if descriptor.size > CONFIG_LIMIT:
            raise ManifestError(f"{what}: larger than {CONFIG_LIMIT} bytes")
        data = bytearray()
        for chunk in client.iter_blob(reference.repository, descriptor.digest):
            data += chunk
            if len(data) > descriptor.size:
                break
        blob = bytes(data)
        got = Digest.of(blob, descriptor.digest.algorithm)
        if got != descriptor.digest:
            raise DigestMismatchError(expected=str(descriptor.digest), actual=str(got),
                                      where=what)
        info.config_raw = blob
        _read_config(info, blob, what)
        return info


def _read_config(info: ImageInfo, blob: bytes, what: str) -> None:
    """Fill ``created``, ``architecture``, ``os``, ``variant`` and ``labels``."""
    try:
        doc = json.loads(blob)
    except (ValueError, RecursionError):
        return  # an artifact's config need not be JSON: shown without those fields
    if not isinstance(doc, dict):
        return
    for key in ("created", "architecture", "os", "variant"):
        value = doc.get(key)
        if isinstance(value, str):
            setattr(info, key, value)
    labels = (doc.get("config") or {}).get("Labels") if isinstance(doc.get("config"), dict) \
        else None
    if isinstance(labels, dict):
        info.labels = {str(k): str(v) for k, v in labels.items()}


def list_repository_tags(repository: Reference, *,
                         options: TransportOptions | None = None) -> list[str]:
    """The tags of ``repository`` (its tag or digest, if any, is ignored).

    Raises:
        RegistryError: the registry refused (NotFoundError for an unknown repository).

    Spec: distribution-spec "Listing Tags".
    """
    with ClientPool(options) as pool:
        return pool.get(repository.registry).list_tags(repository.repository)

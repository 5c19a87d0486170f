"""What ``inspect`` and ``list-tags`` show of an image or a repository.

:func:`inspect_image` fetches one manifest from a registry (and, for an image, its
config) and returns an :class:`ImageInfo`: digest, media type, the platforms of an
index, created, architecture/os, layers with sizes, labels, and the exact bytes of the
manifest and the config. :func:`inspect_location` does the same for any location:
``docker://``, ``oci:DIR[:NAME]`` (a layout), ``oci-archive:FILE[:NAME]`` (a bundle
archive, read up to its manifests, then to the config). :func:`list_repository_tags`
lists a repository's tags.

Spec: distribution-spec "Pulling manifests", "Pulling blobs", "Listing Tags";
image-spec config.md (``created``, ``architecture``, ``os``, ``config.Labels``),
``image-layout.md``; containers-transports(5).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import BundleError, DigestMismatchError, LocationError, ManifestError
from ..oci.content import Descriptor, Index, Manifest, parse_manifest
from ..oci.digest import Digest
from ..oci.limits import MANIFEST_LIMIT
from ..oci.reference import Reference, parse_location
from ..registry.client import TransportOptions
from ..stores.archive import ArchiveReader
from ..stores.layout import LayoutStore
from .archive_check import read_head
from .copy_locations import select_entry
from .parallel import ClientPool

__all__ = ["ImageInfo", "inspect_image", "inspect_location", "list_repository_tags"]

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
    """Fetch a manifest (and its config) from a registry and describe it.

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

        def read(descriptor: Descriptor) -> Iterator[bytes]:
            return client.iter_blob(reference.repository, descriptor.digest)

        return _describe(reference.name, reference.tag, parsed, read if config else None,
                         str(reference))


def inspect_location(text: str, *, options: TransportOptions | None = None,
                     config: bool = True) -> ImageInfo:
    """Describe the image a location names: ``docker://REF`` (or a bare reference),
    ``oci:DIR[:NAME]``, ``oci-archive:FILE[:NAME]``.

    Raises:
        LocationError, InvalidReferenceError: a location that does not parse, a
        ``docker-archive:``, a layout that holds several images and no ``:NAME`` given.
        BundleError: the layout or archive cannot be read. What :func:`inspect_image`
        raises.
    """
    location = parse_location(text)
    if location.transport == "docker":
        assert location.reference is not None
        return inspect_image(location.reference, options=options, config=config)
    if location.transport == "oci":
        store = LayoutStore(location.path)
        entry = select_entry(location, store.read_index(), text)
        item = store.get_manifest(entry)

        def read(descriptor: Descriptor) -> Iterator[bytes]:
            with store.open_blob(descriptor) as reader:
                yield from reader

        return _describe(str(location), None, item, read if config else None, text)
    if location.transport == "oci-archive":
        head = read_head(location.path)
        entry = select_entry(location, head.read_index(), text)
        item = head.get_manifest(entry)

        def read_member(descriptor: Descriptor) -> Iterator[bytes]:
            with ArchiveReader(location.path) as reader:
                for member in reader:
                    if member.digest == descriptor.digest:
                        yield member.file.read(CONFIG_LIMIT + 1)
                        return
            raise BundleError(f"{text}: config {descriptor.digest} is not in the archive")

        return _describe(str(location), None, item, read_member if config else None, text)
    raise LocationError(text, f"{location.transport}: cannot be inspected yet; expected "
                              "docker://REFERENCE, oci:DIR[:NAME] or oci-archive:FILE[:NAME]")


def _describe(name: str, tag: str | None, parsed: Manifest | Index,
              read: Callable[[Descriptor], Iterator[bytes]] | None, what: str) -> ImageInfo:
    """The :class:`ImageInfo` of a parsed manifest; ``read`` streams its config (None:
    the config is not read).

    Raises:
        ManifestError: the config is too large. DigestMismatchError: wrong config bytes.
    """
    info = ImageInfo(name, tag, parsed.digest, parsed.media_type, parsed.raw)
    if isinstance(parsed, Index):
        info.platforms = [{"platform": str(d.platform) if d.platform else "",
                           "digest": str(d.digest), "mediaType": d.media_type,
                           "size": d.size} for d in parsed.manifests]
        return info
    info.layers = [{"digest": str(d.digest), "mediaType": d.media_type, "size": d.size}
                   for d in parsed.layers]
    if read is None or parsed.config is None:
        return info
    descriptor = parsed.config
    where = f"config {descriptor.digest} of {what}"
    if descriptor.size > CONFIG_LIMIT:
        raise ManifestError(f"{where}: larger than {CONFIG_LIMIT} bytes")
    data = bytearray()
    chunks = read(descriptor)
    try:
        for chunk in chunks:
            data += chunk
            if len(data) > descriptor.size:
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    blob = bytes(data)
    got = Digest.of(blob, descriptor.digest.algorithm)
    if got != descriptor.digest:
        raise DigestMismatchError(expected=str(descriptor.digest), actual=str(got),
                                  where=where)
    info.config_raw = blob
    _read_config(info, blob, where)
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

"""The OCI content model: media types, descriptors, manifests and indexes.

Manifests are kept as the exact bytes received; their digest is computed over those
bytes and they are never re-serialised. Parsing only reads what the walk needs
(children and blobs); unknown fields stay in the raw bytes.

Spec: image-spec ``descriptor.md``, ``manifest.md``, ``image-index.md``; Docker image
manifest v2 schema 2 and manifest list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import BundleError, InvalidReferenceError, ManifestError
from .digest import Digest

__all__ = [
    "parse_layout_index",
    "entry_name",
    "ACCEPT_MANIFESTS",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "OCI_INDEX",
    "OCI_LAYOUT_VERSION",
    "OCI_MANIFEST",
    "EMPTY_JSON",
    "EMPTY_JSON_DIGEST",
    "SCHEMA1_MEDIA_TYPES",
    "Descriptor",
    "Index",
    "Manifest",
    "Platform",
    "is_non_distributable",
    "is_schema1",
    "parse_manifest",
    "schema1_refusal",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1_MEDIA_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
#: The empty descriptor's content (image-spec manifest.md "Guidance for an Empty
#: Descriptor"): the two bytes ``{}``, known from the digest alone.
EMPTY_JSON = b"{}"
EMPTY_JSON_DIGEST = Digest.of(EMPTY_JSON)
#: Layer media types that registries may not serve (image-spec "non-distributable").
FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)
MANIFEST_MEDIA_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
#: The Accept header for manifest requests (distribution-spec "Pulling manifests").
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])
OCI_LAYOUT_VERSION = "1.0.0"
#: image-spec annotations.md: the name of an image in a layout's ``index.json``.
REF_NAME = "org.opencontainers.image.ref.name"
#: containerd's full image name annotation (also written by ``docker save``).
CONTAINERD_NAME = "io.containerd.image.name"


@dataclass(frozen=True)
class Platform:
    """image-spec image-index.md ``platform``: where an index child runs."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Platform:
        return cls(
            os=str(data.get("os", "")),
            architecture=str(data.get("architecture", "")),
            variant=data.get("variant") or None,
            os_version=data.get("os.version") or None,
        )

    def __str__(self) -> str:
        out = f"{self.os}/{self.architecture}"
        return f"{out}/{self.variant}" if self.variant else out


def _annotations(value: Any, where: str) -> dict[str, str]:
    """An ``annotations`` value checked as image-spec annotations.md requires: a map of
    strings to strings (absent or null: empty).

    Raises:
        ManifestError: anything else.
    """
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ManifestError(f"{where}: annotations must map strings to strings")
    return dict(value)


#: The ``raw`` of a descriptor that :meth:`Descriptor.to_dict` rebuilds key for key from
#: its fields: the JSON object read is not kept (a manifest's config and layers, tens of
#: thousands of them in a large run, each about 300 bytes as a dict).
_NOT_KEPT: Mapping[str, Any] = MappingProxyType({})
_PLAIN_KEYS = ("mediaType", "digest", "size", "annotations")


def _rebuilt_alike(data: dict[str, Any], media_type: str, digest: Digest, size: int,
                   annotations: dict[str, str]) -> bool:
    """Whether building the descriptor's JSON object from its fields gives ``data``
    again, keys in the same order (so it need not be kept)."""
    if len(data) > len(_PLAIN_KEYS) or any(k not in _PLAIN_KEYS for k in data):
        return False
    built: dict[str, Any] = {"mediaType": media_type, "digest": str(digest), "size": size}
    if annotations:
        built["annotations"] = annotations
    return list(data.items()) == list(built.items())


@dataclass(frozen=True)
class Descriptor:
    """image-spec descriptor.md: what a piece of content is, and its digest and size.

    Attributes:
        media_type: the ``mediaType`` of the content.
        digest: its digest.
        size: its size in bytes.
        annotations: the ``annotations`` map (empty if none).
        platform: the ``platform`` of an index child, or None.
        artifact_type: ``artifactType``, or None.
        urls: ``urls`` of non-distributable content.
        raw: the descriptor's JSON object as read (for writing it back unchanged);
            empty when :meth:`to_dict` builds the same object from the fields.
    """

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str | None = None
    urls: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "descriptor") -> Descriptor:
        """Read a descriptor JSON object.

        Raises:
            ManifestError: missing or ill-typed ``mediaType``, ``digest`` or ``size``;
            ``annotations`` not a map of strings to strings.
        """
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: a descriptor must be a JSON object")
        size = data.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}: descriptor size must be a non-negative integer")
        try:
            digest = Digest.parse(data.get("digest"))
        except InvalidReferenceError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        platform = data.get("platform")
        media_type = str(data.get("mediaType") or "")
        annotations = _annotations(data.get("annotations"), where)
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations=annotations,
            platform=Platform.from_dict(platform) if isinstance(platform, dict) else None,
            artifact_type=data.get("artifactType"),
            urls=tuple(data.get("urls") or ()),
            raw=_NOT_KEPT if _rebuilt_alike(data, media_type, digest, size, annotations)
            else data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the raw one if read, else built from the fields."""
        if self.raw:
            out = dict(self.raw)
            out["annotations"] = dict(self.annotations)
            if not out["annotations"]:
                del out["annotations"]
            return out
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def with_annotations(self, annotations: Mapping[str, str]) -> Descriptor:
        """A copy with ``annotations`` as its whole annotation map."""
        return Descriptor(
            self.media_type,
            self.digest,
            self.size,
            dict(annotations),
            self.platform,
            self.artifact_type,
            self.urls,
            self.raw,
        )

    @property
    def is_manifest(self) -> bool:
        """True if the descriptor points at a manifest or index (not a plain blob)."""
        return self.media_type in MANIFEST_MEDIA_TYPES or self.media_type in INDEX_MEDIA_TYPES


def is_non_distributable(descriptor: Descriptor) -> bool:
    """True for content a registry need not hold: a foreign (non-distributable) layer.

    Such a layer has a foreign media type (:data:`FOREIGN_LAYER_TYPES`) or lists
    ``urls`` to fetch it from. When its blob is absent from a bundle it was not
    distributed: an import does not push it (registries accept a manifest that
    references it) and a verification reports it as skipped, not missing.

    Args:
        descriptor: a layer (or any) descriptor.

    Returns:
        Whether the descriptor names non-distributable content.

    Spec: image-spec ``descriptor.md`` (``urls``), ``layer.md`` "Non-Distributable
    Layers"; Docker image manifest v2 schema 2 (foreign layers).
    """
    return descriptor.media_type in FOREIGN_LAYER_TYPES or bool(descriptor.urls)


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI or Docker schema 2), OCI artifacts included.

    Attributes:
        raw: the exact bytes; ``digest`` is computed over them.
        media_type: OCI or Docker manifest media type.
        config: the config descriptor (None only for degenerate artifacts).
        layers: layer descriptors in order.
        subject: the ``subject`` descriptor (OCI 1.1 referrers), or None.
        artifact_type: ``artifactType`` or None.
    """

    raw: bytes
    media_type: str
    digest: Digest
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Config then layers: the blobs this manifest needs."""
        return ((self.config,) if self.config else ()) + self.layers

    @property
    def manifests(self) -> tuple[Descriptor, ...]:
        """Child manifests: none for an image manifest."""
        return ()

    @property
    def size(self) -> int:
        return len(self.raw)


@dataclass(frozen=True)
class Index:
    """An OCI image index or a Docker manifest list.

    Attributes:
        raw: the exact bytes; ``digest`` is computed over them.
        manifests: the child descriptors in order (platform images, attestations, ...).
    """

    raw: bytes
    media_type: str
    digest: Digest
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Blobs directly needed: none for an index."""
        return ()

    @property
    def size(self) -> int:
        return len(self.raw)


def _sniff_media_type(doc: dict[str, Any], declared: str | None) -> str:
    media_type = doc.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    if declared in MANIFEST_MEDIA_TYPES or declared in INDEX_MEDIA_TYPES:
        return declared
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in doc else DOCKER_SCHEMA1
    if "manifests" in doc:
        return OCI_INDEX
    return OCI_MANIFEST  # image-spec: mediaType is optional in an OCI manifest


def is_schema1(raw: bytes, media_type: str | None = None) -> bool:
    """Whether a manifest is Docker image manifest v2 schema 1 (signed or not): by its
    media type, else by ``"schemaVersion": 1`` in the bytes (served as plain JSON).

    Spec: Docker image manifest v2 schema 1 (deprecated).
    """
    if media_type in SCHEMA1_MEDIA_TYPES:
        return True
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("schemaVersion") == 1


def schema1_refusal(where: str) -> ManifestError:
    """The error for a schema 1 manifest at ``where`` (a reference or digest)."""
    return ManifestError(
        f"{where}: schema1 is not supported (Docker image manifest v2 schema 1 is "
        "deprecated); rebuild or re-push the image with schema 2 or OCI"
    )


def parse_manifest(
    raw: bytes, media_type: str | None = None, *, digest: Digest | None = None
) -> Manifest | Index:
    """Parse manifest or index bytes without changing them.

    Args:
        raw: the exact bytes.
        media_type: the Content-Type or descriptor mediaType, if known.
        digest: the digest if already known (it is not recomputed).

    Returns:
        Manifest for OCI/Docker image manifests and artifacts, Index for OCI indexes and
        Docker manifest lists.

    Raises:
        ManifestError: not JSON, schema 1, an unknown manifest media type, bad descriptors.
    """
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from exc
    except RecursionError:  # arrays or objects nested thousands deep
        raise ManifestError("manifest is JSON nested too deeply to be read") from None
    if not isinstance(doc, dict):
        raise ManifestError("manifest is not a JSON object")
    kind = _sniff_media_type(doc, media_type)
    digest = digest or Digest.of(raw)
    where = f"manifest {digest}"
    if kind in SCHEMA1_MEDIA_TYPES:
        raise schema1_refusal(where)
    if doc.get("schemaVersion") != 2:
        raise ManifestError(
            f"{where}: not an image manifest or index "
            f"(schemaVersion {doc.get('schemaVersion')!r}, expected 2)"
        )
    subject = doc.get("subject")
    subject_desc = Descriptor.from_dict(subject, where=where) if subject else None
    annotations = _annotations(doc.get("annotations"), where)
    if kind in INDEX_MEDIA_TYPES or (kind not in MANIFEST_MEDIA_TYPES and "manifests" in doc):
        children = doc.get("manifests") or []
        if not isinstance(children, list):
            raise ManifestError(f"{where}: 'manifests' must be a list")
        return Index(
            raw=raw,
            media_type=kind,
            digest=digest,
            manifests=tuple(Descriptor.from_dict(c, where=where) for c in children),
            subject=subject_desc,
            artifact_type=doc.get("artifactType"),
            annotations=annotations,
        )
    if kind not in MANIFEST_MEDIA_TYPES and "layers" not in doc and "blobs" not in doc:
        raise ManifestError(f"{where}: unsupported manifest media type {kind!r}")
    config = doc.get("config")
    layers = doc.get("layers") if "layers" in doc else doc.get("blobs")
    if layers is not None and not isinstance(layers, list):
        raise ManifestError(f"{where}: 'layers' must be a list")
    return Manifest(
        raw=raw,
        media_type=kind,
        digest=digest,
        config=Descriptor.from_dict(config, where=where) if config else None,
        layers=tuple(Descriptor.from_dict(layer, where=where) for layer in layers or ()),
        subject=subject_desc,
        artifact_type=doc.get("artifactType"),
        annotations=annotations,
    )


def entry_name(descriptor: Descriptor) -> str:
    """The name a layout entry records: containerd's full name, else ref.name, else ""."""
    return descriptor.annotations.get(CONTAINERD_NAME) or descriptor.annotations.get(REF_NAME, "")


def parse_layout_index(data: bytes, where: str) -> list[Descriptor]:
    """The image descriptors of a layout's ``index.json``, in order.

    Args:
        data: the bytes of ``index.json``.
        where: the bundle, for messages.

    Raises:
        BundleError: the bytes are no image index.

    Spec: image-spec ``image-layout.md`` (``index.json``), ``image-index.md``.
    """
    try:
        index = parse_manifest(data, OCI_INDEX)
    except ManifestError as exc:
        raise BundleError(f"{where}: index.json: {exc}") from exc
    if not isinstance(index, Index):
        raise BundleError(f"{where}: index.json is not an image index")
    return list(index.manifests)

"""bundler: move container images across an air gap.

Export images from registries into one deduplicated OCI image layout bundle, import the
bundle into a disconnected registry with every digest preserved, copy one image between
registries, layouts and archives, and verify or list a bundle offline. Daemonless: no Docker engine, no root.

The public API is re-exported here; the exception tree is drawn in :mod:`bundler.errors`.
"""

from __future__ import annotations

from .bundle import (
    BundleImage,
    BundleListing,
    CopyResult,
    ExportPlan,
    ExportResult,
    ImportPlan,
    ImportResult,
    copy_image,
    export_bundle,
    export_docker_archive,
    import_bundle,
    list_bundle,
    mirror_images,
    open_bundle,
    plan_copy,
    plan_export,
    plan_import,
    read_images_file,
    verify_bundle,
)
from .engine.archive_check import VerifyReport
from .errors import (
    AccessDeniedError,
    AuthenticationError,
    BundleError,
    BundleLockedError,
    BundlerError,
    DigestMismatchError,
    ForeignLayerError,
    IntegrityError,
    InvalidReferenceError,
    LocationError,
    ManifestError,
    MappingError,
    NotFoundError,
    PartialFailureError,
    RateLimitError,
    RegistryError,
    SizeMismatchError,
    TransferError,
    TransportError,
    UnsafeArchiveError,
    UnsafeBundleError,
)
from .events import Event, NullReporter, Reporter, Tally
from .oci.content import Descriptor, Index, Manifest, Platform, parse_manifest
from .oci.digest import Digest, VerifyingReader
from .oci.reference import Location, Reference, parse_location
from .registry.client import RegistryClient, TransportOptions

#: ``bundler.mirror(references, to=..., mapping=...)``: registry to registry, see
#: :func:`bundler.engine.mirroring.mirror_images`.
mirror = mirror_images

__all__ = [
    "AccessDeniedError",
    "AuthenticationError",
    "BundleError",
    "BundleImage",
    "BundleListing",
    "BundleLockedError",
    "BundlerError",
    "CopyResult",
    "Descriptor",
    "Digest",
    "DigestMismatchError",
    "ForeignLayerError",
    "Event",
    "ExportPlan",
    "ExportResult",
    "ImportPlan",
    "ImportResult",
    "Index",
    "IntegrityError",
    "InvalidReferenceError",
    "Location",
    "LocationError",
    "Manifest",
    "ManifestError",
    "MappingError",
    "NotFoundError",
    "NullReporter",
    "PartialFailureError",
    "Platform",
    "RateLimitError",
    "Reference",
    "RegistryClient",
    "RegistryError",
    "Reporter",
    "SizeMismatchError",
    "Tally",
    "TransferError",
    "TransportError",
    "TransportOptions",
    "UnsafeArchiveError",
    "UnsafeBundleError",
    "VerifyReport",
    "VerifyingReader",
    "copy_image",
    "export_bundle",
    "export_docker_archive",
    "import_bundle",
    "list_bundle",
    "mirror",
    "mirror_images",
    "open_bundle",
    "parse_location",
    "plan_copy",
    "plan_export",
    "plan_import",
    "parse_manifest",
    "read_images_file",
    "verify_bundle",
]

"""The registry receipt: what a finished import leaves in the destination registry, so
that a later differential import can tell that its base was imported, and when.

After every image of a bundle is pushed (every tag), import pushes the bundle's receipt
(:mod:`bundler.engine.receipts`) as an OCI artifact: repository
``<PREFIX>/bundler-receipts`` (PREFIX: the ``--to`` registry and prefix; with
``--mapping``, the registry of the first mapped destination; ``--receipt-repository``
overrides), tag ``sha256-<hex of the bundle id>``. Its image manifest has
``artifactType`` :data:`~bundler.engine.receipts.RECEIPT_MEDIA_TYPE`, the empty
descriptor as config, one layer holding the receipt's exact bytes, and the annotation
``org.opencontainers.image.created`` = the import time (RFC 3339 UTC). It holds what
the receipt holds: references, digests and sizes, never a credential.

A differential import reads the manifest of its base's tag there: found, its annotation
says when the base was imported, and (with ``--to``) the receipt's images say which
repositories the base went to, to mount omitted blobs from; absent, the import says so
and goes by the blobs (which are the truth).

Spec: image-spec ``manifest.md`` ("artifactType", "Guidance for an Empty Descriptor"),
``annotations.md``; distribution-spec "Pushing blobs", "Pushing manifests".
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import BundlerError, MappingError, NotFoundError
from ..oci.content import (
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    OCI_EMPTY,
    OCI_MANIFEST,
    REF_NAME,
    Descriptor,
    Index,
    Manifest,
    parse_manifest,
)
from ..oci.digest import Digest, VerifyingReader
from ..oci.limits import RECEIPT_LIMIT
from ..oci.receipt import Receipt
from ..oci.reference import Reference
from ..registry.client import RegistryClient, TransportOptions
from .naming import Target, resolve_targets, split_to
from .parallel import ClientPool

__all__ = ["CREATED_ANNOTATION", "RECEIPTS_REPOSITORY", "ReceiptLocation", "base_repositories",
           "found_receipt",
           "now_rfc3339", "ReceiptArtifact", "push_receipt", "receipt_location", "receipt_manifest",
           "receipt_tag"]

#: The repository under the destination prefix that holds the registry receipts.
RECEIPTS_REPOSITORY = "bundler-receipts"
#: The annotation of a receipt artifact that says when the import finished.
CREATED_ANNOTATION = "org.opencontainers.image.created"
#: The receipt's media type (also its artifact type); the same value as
#: :data:`bundler.engine.receipts.RECEIPT_MEDIA_TYPE`.
RECEIPT_TYPE = "application/vnd.dev.bundler.receipt.v1+json"


@dataclass(frozen=True)
class ReceiptLocation:
    """Where registry receipts go: ``registry/repository``."""

    registry: str
    repository: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}"


def receipt_tag(bundle_id: str) -> str:
    """The tag of a bundle's registry receipt: ``sha256-<hex>`` (a bundle id is
    ``sha256:<hex>``)."""
    digest = Digest.parse(bundle_id)
    return f"{digest.algorithm}-{digest.hex}"


def receipt_location(*, to: str | None, mapping: list[tuple[str, str]] | None,
                     override: str | None = None) -> ReceiptLocation:
    """Where an import's registry receipt goes.

    Args:
        to: ``REGISTRY[/PREFIX]``: ``REGISTRY/PREFIX/bundler-receipts``.
        mapping: (source, destination) pairs: the registry of the first destination
            ``/bundler-receipts``.
        override: ``--receipt-repository REGISTRY/REPOSITORY``, used as given.

    Raises:
        MappingError: ``override`` is no ``REGISTRY/REPOSITORY`` (no host, a tag or a
        digest), or neither ``to`` nor ``mapping`` is given.
    """
    if override is not None:
        first, slash, _ = override.partition("/")
        if not slash or not any(c in first for c in ".:[") and first != "localhost":
            raise MappingError(f"--receipt-repository {override!r}: expected "
                               "REGISTRY/REPOSITORY, e.g. registry.internal:5000/"
                               f"{RECEIPTS_REPOSITORY}")
        try:
            ref = Reference.parse(override, default_tag=None)
        except BundlerError as exc:
            raise MappingError(f"--receipt-repository {override!r}: {exc}") from exc
        if ref.tag is not None or ref.digest is not None:
            raise MappingError(f"--receipt-repository {override!r}: expected "
                               "REGISTRY/REPOSITORY without a tag or digest (the tag is "
                               "the bundle id)")
        return ReceiptLocation(ref.registry, ref.repository)
    if to is not None:
        registry, prefix = split_to(to)
        return ReceiptLocation(registry, f"{prefix}/{RECEIPTS_REPOSITORY}" if prefix
                               else RECEIPTS_REPOSITORY)
    if mapping:
        return ReceiptLocation(Reference.parse(mapping[0][1], default_tag=None).registry,
                               RECEIPTS_REPOSITORY)
    raise MappingError("give exactly one of --to REGISTRY[/PREFIX] or --mapping FILE")


def now_rfc3339() -> str:
    """The current time, RFC 3339 UTC to the second (``2026-12-08T02:30:00Z``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def receipt_manifest(receipt: bytes, created: str) -> bytes:
    """The image manifest of a registry receipt (canonical JSON bytes).

    Args:
        receipt: the receipt's exact bytes (its one layer).
        created: RFC 3339 time of the import (the ``created`` annotation).
    """
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": RECEIPT_TYPE,
        "config": {"mediaType": OCI_EMPTY, "digest": str(EMPTY_JSON_DIGEST),
                   "size": len(EMPTY_JSON)},
        "layers": [{"mediaType": RECEIPT_TYPE, "digest": str(Digest.of(receipt)),
                    "size": len(receipt)}],
        "annotations": {CREATED_ANNOTATION: created},
    }, sort_keys=True, separators=(",", ":")).encode()


class ReceiptArtifact:
    """A registry receipt as a one-image :class:`~bundler.stores.Store` (in memory: the
    receipt is metadata, at most :data:`~bundler.oci.limits.RECEIPT_LIMIT` bytes), so
    that the push engine pushes it like any image: blobs, then the manifest by tag.

    Args:
        receipt: the receipt's exact bytes. created: the import time (RFC 3339 UTC).
    """

    def __init__(self, receipt: bytes, created: str) -> None:
        self.blobs = {EMPTY_JSON_DIGEST: EMPTY_JSON, Digest.of(receipt): receipt}
        self.raw = receipt_manifest(receipt, created)
        self.descriptor = Descriptor(OCI_MANIFEST, Digest.of(self.raw), len(self.raw),
                                     artifact_type=RECEIPT_TYPE)

    def read_index(self) -> list[Descriptor]:
        return [self.descriptor]

    def get_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        return parse_manifest(self.raw, OCI_MANIFEST, digest=self.descriptor.digest)

    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        data = self.blobs.get(digest)
        return data is not None and (size is None or size == len(data))

    def check_blob(self, descriptor: Descriptor) -> bool:
        return self.has_blob(descriptor.digest, descriptor.size)

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        yield VerifyingReader([self.blobs[descriptor.digest]], descriptor.digest,
                              descriptor.size, where=f"receipt blob {descriptor.digest}")


def push_receipt(location: ReceiptLocation, receipt: bytes, bundle_id: str, *,
                 options: TransportOptions | None,
                 push: Callable[[ReceiptArtifact, list[Target]], object],
                 created: str | None = None) -> tuple[str, bool]:
    """Push a bundle's receipt as an artifact with the push engine (blobs, then the
    manifest by tag), unless the registry holds that bundle's receipt already (an import
    run again keeps the time of the first).

    Args:
        location: the receipt repository (see :func:`receipt_location`).
        receipt: the receipt's exact bytes.
        bundle_id: the bundle id (``sha256:<hex>``), which names the tag.
        options: transport options of the destination registry.
        push: the push engine's driver (:func:`~bundler.engine.importing.push_images`
            with the options bound): pushes the artifact's one target.
        created: the import time (RFC 3339 UTC); None: now.

    Returns:
        ``registry/repository:tag`` of the artifact, and whether it was pushed now (False:
        it was there).

    Raises:
        TransferError: the registry refused a blob or the manifest. RegistryError: the
        tag could not be asked about.

    Spec: distribution-spec "Pushing blobs", "Pushing manifests".
    """
    tag = receipt_tag(bundle_id)
    where = Reference(location.registry, location.repository, tag)
    with ClientPool(options) as clients:
        if clients.get(location.registry).resolve(location.repository, tag) is not None:
            return str(where), False
    artifact = ReceiptArtifact(receipt, created or now_rfc3339())
    push(artifact, [Target(str(where), artifact.descriptor, where)])
    return str(where), True


def found_receipt(client: RegistryClient, repository: str, bundle_id: str) -> str | None:
    """When the bundle ``bundle_id`` was imported, by its registry receipt.

    Args:
        client: the receipt registry's client.
        repository: the receipt repository.
        bundle_id: the bundle id asked about.

    Returns:
        The ``created`` annotation of the receipt artifact (RFC 3339), "" for a receipt
        without one; None when there is no receipt of that bundle (404), or what is
        there is no receipt artifact.

    Raises:
        RegistryError: the registry answered another error (401, 403, 5xx...).

    Spec: distribution-spec "Pulling manifests".
    """
    try:
        raw, _, _ = client.get_manifest(repository, receipt_tag(bundle_id))
    except NotFoundError:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("artifactType") != RECEIPT_TYPE:
        return None
    annotations = doc.get("annotations")
    created = annotations.get(CREATED_ANNOTATION) if isinstance(annotations, dict) else None
    return created if isinstance(created, str) else ""


def base_repositories(client: RegistryClient, repository: str, bundle_id: str,
                      to: str) -> dict[str, list[str]]:
    """Where the base's images went, by its registry receipt: per registry, the
    repositories its images have under ``to`` (named as import names them), which hold
    its blobs; a differential import mounts an omitted blob from one of them into a
    repository the base did not have (a new repository sharing the base's layers).

    Args:
        client: the receipt registry's client.
        repository: the receipt repository.
        bundle_id: the base's bundle id.
        to: this import's ``REGISTRY[/PREFIX]``.

    Returns:
        registry -> repositories, in the receipt's order; empty when there is no receipt
        of that bundle, it is larger than :data:`~bundler.oci.limits.RECEIPT_LIMIT` or
        it does not read (the blobs themselves decide, as without a receipt).

    Spec: distribution-spec "Pulling manifests", "Pulling blobs".
    """
    try:
        raw, _, _ = client.get_manifest(repository, receipt_tag(bundle_id))
        doc = json.loads(raw)
        layer = doc["layers"][0]
        digest, size = Digest.parse(layer["digest"]), layer["size"]
        if doc.get("artifactType") != RECEIPT_TYPE or not isinstance(size, int) \
                or not 0 <= size <= RECEIPT_LIMIT:
            return {}
        data = b"".join(VerifyingReader(client.iter_blob(repository, digest), digest, size,
                                        where=f"{client.registry}/{repository}@{digest}"))
        receipt = Receipt.from_bytes(data, f"{client.registry}/{repository}:"
                                           f"{receipt_tag(bundle_id)}")
        entries = [Descriptor(image.media_type, Digest.parse(image.digest), image.size,
                              annotations={REF_NAME: image.reference})
                   for image in receipt.images if image.reference]
        targets = resolve_targets(entries, to=to)
    except (BundlerError, ValueError, LookupError, TypeError):
        return {}
    found: dict[str, list[str]] = {}
    for target in targets:
        repositories = found.setdefault(target.destination.registry, [])
        if target.destination.repository not in repositories:
            repositories.append(target.destination.repository)
    return found

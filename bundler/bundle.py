"""The library facade: export, import, copy, mirror, list and verify bundles.

A bundle is an OCI image layout (image-spec ``image-layout.md``) whose ``index.json``
names each image by its full source reference; see ``docs/bundle-format.md``.
"""

from __future__ import annotations

import os
import threading
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from .engine.archive_check import ArchiveHead, VerifyReport, read_head, verify_archive
from .engine.archive_files import verify_file
from .engine.bundle_import import import_any, no_shared_blobs, open_bundle
from .engine.chain_import import ImportChain
from .engine.copying import CopyResult, check_locations, copy_image, plan_copy
from .engine.differential_check import (
    check_base,
    inside_receipt,
    listed_receipt,
    omitted_digests,
    receipt_check,
)
from .engine.docker_export import export_docker_archive
from .engine.exporting import ExportResult, export_bundle, read_images_file
from .engine.imageset import ImageSet, ImageSetError, read_image_set
from .engine.importing import ImportResult
from .engine.inspecting import (
    ImageInfo,
    inspect_image,
    inspect_location,
    list_repository_tags,
)
from .engine.layout_check import verify_layout
from .engine.mirroring import mirror_images
from .engine.naming import parse_mapping
from .engine.planning import ExportPlan, ImportPlan, plan_export, plan_import
from .engine.platform_export import DigestChange, PlatformSources, export_platforms
from .engine.receipts import Receipt, ReceiptError, read_receipt
from .engine.referrer_bundle import missing_subjects, referrer_owners
from .engine.referrers import SCHEME, subject_of
from .engine.selection import (
    Resolution,
    Selected,
    cli_image_set,
    plan_without_vanished,
    resolve_image_set,
    tolerate_vanished,
    transport_for,
)
from .engine.tagfilter import FilterError, TagFilter
from .errors import BundleError, BundlerError
from .events import Reporter
from .oci.content import Descriptor, entry_name, is_non_distributable
from .oci.digest import Digest
from .oci.graph import walk
from .oci.platforms import PlatformChoice
from .registry.client import TransportOptions
from .stores.archive import is_archive
from .stores.archive_files import ArchiveStore, open_archive, reads_by_offsets
from .stores.layout import LayoutStore

__all__ = [
    "BundleImage",
    "BundleListing",
    "CopyResult",
    "DigestChange",
    "ExportPlan",
    "ExportResult",
    "FilterError",
    "ImageInfo",
    "ImageSet",
    "ImageSetError",
    "ImportPlan",
    "ImportResult",
    "PlatformChoice",
    "PlatformSources",
    "Receipt",
    "ReceiptError",
    "Resolution",
    "Selected",
    "TagFilter",
    "VerifyReport",
    "check_locations",
    "cli_image_set",
    "copy_image",
    "export_bundle",
    "export_docker_archive",
    "export_platforms",
    "import_bundle",
    "inspect_image",
    "inspect_location",
    "list_repository_tags",
    "list_bundle",
    "mirror_images",
    "open_bundle",
    "plan_copy",
    "plan_export",
    "plan_import",
    "read_image_set",
    "read_images_file",
    "read_receipt",
    "resolve_image_set",
    "plan_without_vanished",
    "tolerate_vanished",
    "transport_for",
    "verify_bundle",
]


def import_bundle(
    bundle: str | os.PathLike[str],
    *,
    to: str | None = None,
    mapping: str | os.PathLike[str] | list[tuple[str, str]] | None = None,
    options: TransportOptions | None = None,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    keep_going: bool = False,
    shared_blob_dir: str | os.PathLike[str] | None = None,
    max_zstd_ratio: int | None = None,
    base: str | os.PathLike[str] | None = None,
    receipt_repository: str | None = None,
    receipt: bool = True,
) -> ImportResult:
    """Push every image of a bundle (or those a mapping names) into registries.

    Args:
        bundle: the bundle directory.
        to: ``REGISTRY[/PREFIX]``: destination = PREFIX + source repository, tag kept.
        mapping: a mapping file path, or (source, destination) pairs.
        options: transport options of the destination registries.
        jobs: concurrent blob transfers.
        reporter: receives progress events.
        stop: set to cancel.
        keep_going: import every image that can be; fail at the end for the others.
        shared_blob_dir: read a directory bundle's blobs from this shared blob
            directory (see :func:`open_bundle`); not for archives.
        max_zstd_ratio: a ``.tar.zst`` member may decompress to this many bytes per
            compressed byte (None: :data:`bundler.limits.ZSTD_RATIO_LIMIT`).
        base: a differential bundle's base bundle (a directory or a ``.tar``), read
            for the omitted blobs the destination does not have.
        receipt_repository: ``REGISTRY/REPOSITORY`` of the registry receipts (None:
            ``<--to>/bundler-receipts``, see :mod:`bundler.engine.registry_receipt`).
        receipt: push the registry receipt once every image is tagged.

    A differential bundle (``export --since``) is checked before anything is pushed:
    every blob it omits must be in the destination repositories that need it, mountable
    from another repository of the registry, or in ``base`` (see
    :mod:`bundler.engine.preflight`); ``result.chain`` says what was found.

    Referrers (entries annotated as :mod:`bundler.engine.referrers` writes them) are
    pushed after their subjects, into their subjects' repositories, and recorded in the
    referrers tag schema where a destination has no referrers API (see
    :mod:`bundler.engine.referrer_push`). From an archive, read once, they are pushed in
    the run with their subjects, and the tag schema is written after it (not for ``-``).

    Returns:
        An :class:`ImportResult`.

    Raises:
        BundleError: the bundle cannot be read. MappingError: no destination can be worked
        out. TransferError: an image failed (naming it and the blob or manifest).
        PartialFailureError: with ``keep_going``, some images failed (``.result`` says
        what was imported). MissingBlobsError: a differential bundle's omitted blobs
        are not all available (nothing was pushed). WrongBaseError: ``base`` is not the
        bundle's base, or cannot be read at random. ReceiptError: the bundle's receipt
        is malformed.
    """
    pairs = mapping if isinstance(mapping, list) or mapping is None else parse_mapping(mapping)
    if is_archive(bundle):
        no_shared_blobs(bundle, shared_blob_dir)
    chain = ImportChain.open(bundle, to=to, mapping=pairs, base=base,
                             receipt_repository=receipt_repository, push=receipt)
    with closing(chain):
        return chain.finish(import_any(bundle, chain, pairs, to=to, options=options, jobs=jobs,
                                    reporter=reporter, stop=stop, keep_going=keep_going,
                                    shared_blob_dir=shared_blob_dir,
                                    max_zstd_ratio=max_zstd_ratio), options)


@dataclass
class BundleImage:
    """One image of a bundle, for ``bundler list``.

    Attributes:
        name: the recorded name (reference) or "" when unnamed.
        digest: the top-level manifest or index digest.
        media_type: its media type.
        platforms: ``os/arch[/variant]`` of an index's platform children (of a sparse
            index, those the bundle holds).
        sparse: the index is sparse (``dev.bundler.platforms.sparse``): the bundle holds
            the children of ``platforms`` only, under the original index digest.
        size: bytes of its manifests and blobs that the bundle holds (each counted once
            within the image; a non-distributable layer left out is not counted).
        referrers: the signatures, attestations, SBOMs that refer to it (or to one of
            its manifests), each a ``BundleImage`` with its own referrers.
        subject: for a referrer, the digest it refers to; scheme: how it was found.
    """

    name: str
    digest: Digest
    media_type: str
    platforms: list[str]
    size: int
    referrers: list[BundleImage] = field(default_factory=list)
    subject: Digest | None = None
    scheme: str = ""
    sparse: bool = False


@dataclass
class BundleListing:
    """``bundler list``: the images (referrers under their subjects), and sizes with
    and without deduplication (bytes)."""

    images: list[BundleImage] = field(default_factory=list)
    unique_bytes: int = 0
    total_bytes: int = 0
    blob_count: int = 0
    #: one line per image whose manifests cannot be read (it is not in ``images``),
    #: or a receipt that is not the bundle's
    problems: list[str] = field(default_factory=list)
    #: a differential bundle: its base's bundle id, and the blobs (count, bytes) it
    #: leaves to the base; bundle_id: the bundle's own id (from its receipt)
    base: str | None = None
    omitted: int = 0
    omitted_bytes: int = 0
    bundle_id: str | None = None


def list_bundle(bundle: str | os.PathLike[str], *,
                shared_blob_dir: str | os.PathLike[str] | None = None,
                max_zstd_ratio: int | None = None) -> BundleListing:
    """Describe what a bundle holds. In a directory bundle, an image whose manifests
    cannot be read (missing or corrupt) is left out and named in ``problems``; the
    others are listed.

    Sizes count only what the bundle holds: a blob missing from a directory bundle
    (a non-distributable layer the registry did not serve) adds nothing. An archive is
    read up to its manifests only, so there a non-distributable layer is not counted.

    Args:
        bundle: a bundle directory or archive.
        shared_blob_dir: read a directory bundle's blobs from this shared blob
            directory (see :func:`open_bundle`).
        max_zstd_ratio: see :func:`import_bundle`.

    Raises:
        BundleError: the bundle cannot be read at all (no layout, no index.json; an
        archive whose head lacks a manifest; a shared blob directory for an archive).
    """
    if is_archive(bundle):
        no_shared_blobs(bundle, shared_blob_dir)
    listing = BundleListing()
    if reads_by_offsets(bundle):  # a .tar file: read by offsets, in any member order
        receipt = listed_receipt(bundle, None, listing.problems)
        with open_archive(bundle) as archive:
            return _list_store(archive, listing, receipt)
    if is_archive(bundle):
        head = read_head(bundle, max_zstd_ratio=max_zstd_ratio)
        return _list_store(head, listing, listed_receipt(bundle, head, listing.problems))
    store = open_bundle(bundle, shared_blob_dir=shared_blob_dir)
    return _list_store(store, listing, listed_receipt(bundle, None, listing.problems))


def _list_store(store: LayoutStore | ArchiveStore | ArchiveHead, listing: BundleListing,
                receipt: Receipt | None) -> BundleListing:
    """The listing of an open bundle (see :func:`list_bundle`)."""
    omitted = omitted_digests(receipt)
    if receipt is not None:
        listing.bundle_id = receipt.bundle_id
    if receipt is not None and receipt.base is not None:
        listing.base = receipt.base.bundle_id
        listing.omitted, listing.omitted_bytes = len(receipt.omitted), receipt.omitted_bytes
    unique: dict[Digest, int] = {}
    plans = []
    for descriptor in store.read_index():
        name = entry_name(descriptor) or str(descriptor.digest)
        try:
            plans.append(walk(descriptor, store.get_manifest, name=name))
        except BundlerError as exc:
            listing.problems.append(f"{name}: {exc}")
    for plan in plans:
        held = {d: b.size for d, b in plan.blobs.items()
                if d not in omitted and _holds(store, b)}
        held.update((descriptor.digest, len(item.raw)) for descriptor, item in plan.manifests)
        size = sum(held.values())
        listing.images.append(
            BundleImage(plan.name if plan.name != str(plan.descriptor.digest) else "",
                        plan.descriptor.digest, plan.descriptor.media_type,
                        plan.platforms, size, subject=subject_of(plan.descriptor),
                        scheme=plan.descriptor.annotations.get(SCHEME, ""),
                        sparse=plan.sparse is not None)
        )
        listing.total_bytes += size
        unique.update(held)
    listing.images = _nest_referrers(listing.images, plans)
    listing.unique_bytes = sum(unique.values())
    listing.blob_count = len(unique)
    return listing


def _nest_referrers(images: list[BundleImage], plans: list) -> list[BundleImage]:
    """Move each referrer under the image that holds its subject."""
    owners = referrer_owners(plans)
    for position in sorted(owners):
        images[owners[position]].referrers.append(images[position])
    return [image for position, image in enumerate(images) if position not in owners]


def _holds(store: LayoutStore | ArchiveStore | ArchiveHead, descriptor: Descriptor) -> bool:
    """Whether the bundle holds a blob (for the sizes of ``list``): a directory or an
    archive file is asked (an unreadable blob counts as not held); in the head of an
    archive read once only the non-distributable layers are in doubt, and they are not
    counted."""
    if isinstance(store, ArchiveHead):
        return not is_non_distributable(descriptor)
    try:
        return store.has_blob(descriptor.digest)
    except BundlerError:
        return False


def verify_bundle(bundle: str | os.PathLike[str], *,
                  shared_blob_dir: str | os.PathLike[str] | None = None,
                  max_zstd_ratio: int | None = None,
                  base: str | os.PathLike[str] | None = None) -> VerifyReport:
    """Check a bundle offline: every descriptor reachable from ``index.json`` is present,
    every manifest parses, every blob has its size and sha256, every referrer's subject
    is in the bundle (not checked in an archive read from stdin). A non-distributable (foreign) layer the
    bundle does not hold is listed in ``skipped``, not as a problem; so is, in
    ``expected``, a blob a differential bundle leaves to its base (its receipt lists it
    as omitted), and the receipt must be the bundle's
    (:mod:`bundler.engine.differential_check`).

    Args:
        bundle: a bundle directory or archive.
        shared_blob_dir: read a directory bundle's blobs from this shared blob
            directory (see :func:`open_bundle`).
        base: ``--base``: the bundle (or receipt) a differential bundle was exported
            since, checked to hold every blob the bundle leaves to it.

    Returns:
        A :class:`VerifyReport` (problems listed, not raised).

    Raises:
        BundleError: the bundle cannot be opened at all; a shared blob directory given
        for an archive.
    """
    report = _verify(bundle, shared_blob_dir, max_zstd_ratio)
    if base is not None:
        check_base(bundle, base, report)
    return report


def _verify(bundle: str | os.PathLike[str], shared_blob_dir: str | os.PathLike[str] | None,
            max_zstd_ratio: int | None) -> VerifyReport:
    """:func:`verify_bundle` without ``--base``."""
    report = VerifyReport()
    if is_archive(bundle):
        no_shared_blobs(bundle, shared_blob_dir)
    if reads_by_offsets(bundle):  # a .tar file: read by offsets, in any member order
        report = verify_file(bundle, report, inside_receipt(bundle, report))
        if not report.problems:  # referrers: their subjects too
            with open_archive(bundle) as store:
                entries = store.read_index()
                reached = {d.digest for e in entries for d, _ in walk(
                    e, store.get_manifest, name=entry_name(e) or str(e.digest)).manifests}
                report.problems.extend(missing_subjects(entries, reached.__contains__))
        return report
    if is_archive(bundle):
        report = verify_archive(bundle, report, max_zstd_ratio=max_zstd_ratio,
                                receipt_check=receipt_check)
        if str(bundle) != "-" and not report.problems:  # referrers: their subjects too
            head = read_head(bundle, max_zstd_ratio=max_zstd_ratio)
            report.problems.extend(missing_subjects(head.entries,
                                                    lambda d: d in head.manifests))
        return report
    root = Path(bundle)
    try:
        store = open_bundle(root, shared_blob_dir=shared_blob_dir)
        entries = store.read_index()
    except BundleError as exc:
        report.problems.append(str(exc))
        return report
    return verify_layout(store, entries, report, inside_receipt(root, report))

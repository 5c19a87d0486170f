"""``bundler copy SRC DST``: one image from any location to any other, by the one
export/import engine.

Locations are skopeo's (containers-transports(5)): ``docker://REFERENCE``,
``oci:DIR[:NAME]``, ``oci-archive:FILE[:NAME]``, ``docker-archive:FILE[:NAME]``. Which
engine moves the image:

====================  ==========================  ========================================
source                destination                 engine
====================  ==========================  ========================================
docker://             oci: / oci-archive:         export (:func:`export_bundle`), the entry
                                                  named NAME (none without ``:NAME``)
oci: / oci-archive:   docker://                   import (:func:`push_images`,
                                                  :func:`import_archive`), a one-line
                                                  mapping entry -> destination
oci:                  oci: / oci-archive:         export from a store
                                                  (:func:`export_from_store`)
oci-archive: read     oci: / oci-archive:         export: the manifests from the
once (.tar.zst,                                   archive's head, each blob handed to the
volumes)                                          engine as its member goes by
                                                  (:func:`feed_archive`)
docker://             docker://                   :func:`bundler.engine.mirroring.mirror_images`
a .tar file           any                         (``oci-archive:`` or ``docker-archive:``)
                                                  the archive read by offsets as a store
                                                  (:mod:`bundler.stores.archive_files`):
                                                  import or export from the store
any                   docker-archive:             :mod:`bundler.engine.docker_export`: one
                                                  platform of an index, streamed into a
                                                  new docker archive (dual form)
====================  ==========================  ========================================

An index is copied whole (every child manifest and blob), every digest preserved:
skopeo's ``--all``. What the destination already holds is not copied again.

Checked before anything moves (:class:`~bundler.errors.LocationError`, exit 2 on the
command line): a location without a known transport; an archive source on stdin; a
layout or archive holding several images and no ``:NAME``, or no
image of that name; a destination equal to the source; a ``docker://`` destination by
digest only.

Spec: image-spec ``image-layout.md``, ``annotations.md`` (``ref.name``);
distribution-spec "Pull", "Push".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BundlerError, LocationError
from ..events import NullReporter, Reporter
from ..oci.content import Descriptor, entry_name
from ..oci.digest import Digest
from ..oci.graph import walk
from ..oci.reference import Location
from ..registry.client import TransportOptions
from ..stores import Store
from ..stores.archive import refuse_existing
from ..stores.archive_files import open_archive, reads_by_offsets
from ..stores.layout import LayoutStore
from .archive_check import ArchiveHead, read_head
from .archive_import import feed_archive, import_archive
from .copy_locations import check_locations, select_entry
from .docker_export import copy_to_docker_archive
from .exporting import UNNAMED, ExportResult, StoreImage, export_bundle, export_from_store
from .importing import ImportResult, push_images
from .mirroring import mirror_images, plan_mirror
from .naming import resolve_targets
from .planning import ExportPlan, ImportPlan, PlannedImage, plan_export, plan_import
from .push import PushRun
from .receipts import read_receipt
from .referrers import DEFAULT_REFERRERS, ReferrerPolicy

__all__ = ["CopyResult", "check_locations", "copy_image", "plan_copy", "select_entry"]


@dataclass
class CopyResult:
    """What a copy did.

    Attributes:
        source, destination: the locations.
        digest: the digest of the image's top manifest or index (kept as it was).
        blobs_copied: blobs written to the destination in this run.
        bytes_copied: their bytes.
        blobs_mounted: blobs mounted from another repository of the destination registry.
        blobs_present: blobs the destination already held.
        detail: the result of the engine that ran.
        notes: what the user should know (the platform taken from an index for a
            docker archive; a manifest built for a legacy docker archive).
    """

    source: Location
    destination: Location
    digest: Digest | None = None
    blobs_copied: int = 0
    bytes_copied: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    detail: ExportResult | ImportResult | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)


def copy_image(
    source: str,
    destination: str,
    *,
    src_options: TransportOptions | None = None,
    dest_options: TransportOptions | None = None,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    keep_going: bool = False,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    max_zstd_ratio: int | None = None,
    platform: str | None = None,
    referrers: ReferrerPolicy | None = DEFAULT_REFERRERS,
) -> CopyResult:
    """Copy one image (an index with all its children) from ``source`` to ``destination``.

    Args:
        source, destination: ``docker://REFERENCE``, ``oci:DIR[:NAME]`` or
            ``oci-archive:FILE[:NAME]``. A layout destination that exists is added to
            (an entry of the same name is replaced); without ``:NAME`` the entry is
            written without a name, as skopeo does. An archive destination must not
            exist yet (an archive is written whole).
        src_options, dest_options: transport options of the source and destination
            registries.
        jobs: concurrent transfers.
        reporter: receives progress events. stop: set to cancel.
        keep_going: as for export and import (one image: it fails or it is copied).
        wait, on_wait: wait for another bundler writing the destination layout or
            archive (see :func:`export_bundle`).
        max_zstd_ratio: see :class:`~bundler.stores.archive.ArchiveReader`.
        platform: ``os/arch[/variant]``: for a ``docker-archive:`` destination, the
            platform taken from an index (default linux/amd64).
        referrers: registry to registry, carry the image's referrers too (see
            :mod:`bundler.engine.referrers`); None: none. A layout or archive
            destination gets the one image it names, as skopeo writes it.

    Returns:
        A :class:`CopyResult`.

    Raises:
        LocationError, InvalidReferenceError: bad locations (before anything moves).
        TransferError: the image could not be copied (naming it and the cause).
        PartialFailureError: with ``keep_going``. BundleError: a source layout or
        archive that cannot be read, a destination that cannot be written.
    """
    src, dst = check_locations(source, destination)
    report = reporter or NullReporter()
    stop = stop or threading.Event()
    result = CopyResult(src, dst)
    if src.transport == "docker" and dst.transport == "docker":
        return _mirror(src, dst, result, src_options, dest_options, jobs, report, stop,
                       keep_going, referrers)
    if dst.transport == "docker-archive":
        return _to_docker_archive(src, dst, source, result, src_options, platform, jobs,
                                  report, stop)
    if dst.transport == "docker" and src.transport in ("oci", "oci-archive"):
        _refuse_differential(src, source)
    if src.transport == "docker":
        ref = src.reference
        assert ref is not None
        exported = export_bundle([ref], dst.path, format=_format(dst), options=src_options,
                                 jobs=jobs, reporter=report, stop=stop, keep_going=keep_going,
                                 wait=wait, on_wait=on_wait, referrers=None,  # one image
                                 entry_names={str(ref): dst.ref_name or UNNAMED},
                                 receipts=False)
        return _exported(result, exported)
    if src.transport == "oci":
        store = LayoutStore(src.path)
        entry = select_entry(src, store.read_index(), source)
        result.digest = entry.digest
        if dst.transport == "docker":
            targets = resolve_targets([entry], mapping=_mapping(entry, dst))
            return _imported(result, push_images(
                store, targets, options=dest_options, jobs=jobs, reporter=report, stop=stop,
                keep_going=keep_going))
        return _exported(result, _from_store(store, entry, dst, jobs, report, stop,
                                             keep_going, wait, on_wait))
    if src.transport == "docker-archive" or reads_by_offsets(src.path):
        with open_archive(src.path) as archive:  # read by offsets, in any member order
            entry = select_entry(src, archive.read_index(), source)
            result.digest = entry.digest
            result.notes.extend(getattr(archive, "notes", ()))  # a manifest built
            if dst.transport == "docker":
                targets = resolve_targets([entry], mapping=_mapping(entry, dst))
                return _imported(result, push_images(
                    archive, targets, options=dest_options, jobs=jobs, reporter=report,
                    stop=stop, keep_going=keep_going))
            return _exported(result, _from_store(archive, entry, dst, jobs, report, stop,
                                                 keep_going, wait, on_wait))
    head = read_head(src.path, max_zstd_ratio=max_zstd_ratio)  # an oci-archive read once
    entry = select_entry(src, head.read_index(), source)
    result.digest = entry.digest
    if dst.transport == "docker":
        return _imported(result, import_archive(
            src.path, mapping=_mapping(entry, dst), options=dest_options, jobs=jobs,
            reporter=report, stop=stop, keep_going=keep_going, max_zstd_ratio=max_zstd_ratio))
    # the manifests from the archive's head; its blobs handed over as the archive is
    # read once more (nothing is staged)
    return _exported(result, _from_store(
        head, entry, dst, jobs, report, stop, keep_going, wait, on_wait,
        move=lambda run: feed_archive(run, src.path, max_zstd_ratio=max_zstd_ratio)))


def _refuse_differential(src: Location, source: str) -> None:
    """Refuse to copy from a differential bundle into a registry: its omitted blobs are
    its base's, and only ``bundler import`` checks the base before it pushes.

    Raises:
        LocationError: the source layout or archive is a differential bundle.
    """
    try:
        receipt = read_receipt(src.path)
    except BundlerError:  # not a bundle with a receipt: the copy says what is wrong
        return
    if receipt.base is not None:
        raise LocationError(
            source, f"a differential bundle (base {receipt.base.bundle_id}) holds only the "
            "blobs its base does not; copy does not check that base: use bundler import "
            f"{src.path} --to REGISTRY[/PREFIX] (with --base BUNDLE if the destination "
            "lacks the base)")


def plan_copy(
    source: str,
    destination: str,
    *,
    src_options: TransportOptions | None = None,
    dest_options: TransportOptions | None = None,
    jobs: int = 8,
    max_zstd_ratio: int | None = None,
) -> ExportPlan | ImportPlan:
    """Work out what :func:`copy_image` would copy; copy and write nothing.

    Returns:
        An :class:`ExportPlan` for a local destination (blobs to fetch, blobs it
        already holds), an :class:`ImportPlan` for a registry (to upload, to mount,
        present).

    Raises:
        LocationError, InvalidReferenceError: as :func:`copy_image`.
        BundleError, TransferError: a source that cannot be read or resolved; a
        destination that cannot be written.
    """
    src, dst = check_locations(source, destination)
    if src.transport == "docker" and dst.transport == "docker":
        return plan_mirror([str(src.reference)], mapping=_pair(src, dst),
                           src_options=src_options, dest_options=dest_options, jobs=jobs)
    if src.transport == "docker":
        assert src.reference is not None
        return plan_export([src.reference], dst.path, format=_format(dst),
                           options=src_options, jobs=jobs)
    if src.transport != "oci" and reads_by_offsets(src.path):
        with open_archive(src.path) as archive:  # read by offsets, in any member order
            return _plan_from(archive, src, dst, source, dest_options, jobs)
    head = (LayoutStore(src.path) if src.transport == "oci"
            else read_head(src.path, max_zstd_ratio=max_zstd_ratio))
    return _plan_from(head, src, dst, source, dest_options, jobs)


def _plan_from(head: Store | ArchiveHead, src: Location, dst: Location, source: str,
               dest_options: TransportOptions | None, jobs: int) -> ExportPlan | ImportPlan:
    """The plan of a copy from a layout or archive (see :func:`plan_copy`)."""
    entry = select_entry(src, head.read_index(), source)
    if dst.transport == "docker":
        return plan_import(src.path, mapping=_mapping(entry, dst), options=dest_options,
                           jobs=jobs)
    plan = walk(entry, head.get_manifest, name=entry_name(entry) or str(entry.digest))
    store = None
    if dst.transport == "oci-archive":
        refuse_existing(Path(dst.path).absolute())
    elif Path(dst.path).exists():
        store = LayoutStore(dst.path)
    result = ExportPlan(images=[PlannedImage(plan.name, entry.digest, plan.size)])
    for digest, blob in plan.blobs.items():
        result.blobs += 1
        result.blob_bytes += blob.size
        if store is not None and store.has_blob(digest, blob.size):
            result.present += 1
            result.present_bytes += blob.size
        else:
            result.to_fetch += 1
            result.fetch_bytes += blob.size
    return result


def _to_docker_archive(src: Location, dst: Location, text: str, result: CopyResult,
                       src_options: TransportOptions | None, platform: str | None,
                       jobs: int, report: Reporter, stop: threading.Event) -> CopyResult:
    """Any source -> ``docker-archive:FILE[:NAME]`` (one platform of an index)."""
    written = copy_to_docker_archive(src, dst, text, options=src_options, platform=platform,
                                     jobs=jobs, reporter=report, stop=stop)
    result.digest = written.images[0].descriptor.digest if written.images else None
    result.blobs_copied, result.bytes_copied = written.blobs, written.bytes
    result.notes = written.notes
    return result


def _format(location: Location) -> str:
    """The bundle format a local destination is written in (an oci-archive is a plain
    tar unless its name ends in ``.tar.zst``)."""
    if location.transport == "oci":
        return "dir"
    return "tar.zst" if location.path.endswith(".tar.zst") else "tar"


def _mapping(entry: Descriptor, dst: Location) -> list[tuple[str, str]]:
    """The one mapping line of a copy into a registry: the entry (by digest) -> the
    destination reference."""
    return [(str(entry.digest), str(dst.reference))]


def _from_store(store: Store | ArchiveHead, entry: Descriptor, dst: Location, jobs: int,
                report: Reporter, stop: threading.Event, keep_going: bool, wait: bool,
                on_wait: Callable[[str], None] | None,
                move: Callable[[PushRun], None] | None = None) -> ExportResult:
    """Export one entry of ``store`` into a local destination, named as it asks
    (``move``: see :func:`export_from_store`)."""
    image = StoreImage(entry_name(entry) or str(entry.digest), entry)
    return export_from_store(store, [image], dst.path, format=_format(dst),  # type: ignore[arg-type]
                             jobs=jobs, reporter=report, stop=stop, keep_going=keep_going,
                             wait=wait, on_wait=on_wait,
                             entry_names={image.name: dst.ref_name or UNNAMED}, move=move,
                             receipts=False)


def _exported(result: CopyResult, exported: ExportResult) -> CopyResult:
    """Fill ``result`` from an export."""
    result.detail = exported
    if exported.images:
        result.digest = exported.images[0].descriptor.digest
    result.blobs_copied += exported.blobs_downloaded
    result.bytes_copied += exported.bytes_downloaded
    result.blobs_present += exported.blobs_reused
    return result


def _imported(result: CopyResult, imported: ImportResult) -> CopyResult:
    """Fill ``result`` from an import."""
    result.detail = imported
    result.blobs_copied += imported.blobs_uploaded
    result.bytes_copied += imported.bytes_uploaded
    result.blobs_mounted += imported.blobs_mounted
    result.blobs_present += imported.blobs_present
    result.notes.extend(imported.notes)
    return result


def _mirror(src: Location, dst: Location, result: CopyResult,
            src_options: TransportOptions | None, dest_options: TransportOptions | None,
            jobs: int, report: Reporter, stop: threading.Event,
            keep_going: bool, referrers: ReferrerPolicy | None = None) -> CopyResult:
    """docker:// -> docker://: the mirror engine with one mapping line."""
    mirrored = mirror_images([str(src.reference)], mapping=_pair(src, dst),
                             src_options=src_options, dest_options=dest_options, jobs=jobs,
                             reporter=report, stop=stop, keep_going=keep_going,
                             referrers=referrers)
    if mirrored.targets:
        result.digest = mirrored.targets[0].descriptor.digest
    return _imported(result, mirrored)


def _pair(src: Location, dst: Location) -> list[tuple[str, str]]:
    """The one mapping line of a registry-to-registry copy."""
    return [(str(src.reference), str(dst.reference))]

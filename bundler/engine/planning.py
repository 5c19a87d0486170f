"""Dry runs: what an export or an import would move, worked out without moving it.

An export plan resolves every reference and reads its manifests (a HEAD, and a manifest
GET unless the bundle already holds it), then compares the blobs with what the bundle
has. An import plan reads the bundle's ``index.json`` and manifests (an archive only up
to its last manifest) and asks each destination with HEAD requests which images and
blobs it already holds. Neither downloads a blob, uploads anything, pushes a manifest
or writes a file.

Spec: distribution-spec "Checking if content exists in the registry".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TransferError
from ..events import NullReporter
from ..oci.digest import Digest
from ..oci.graph import ImagePlan, walk
from ..oci.platforms import PlatformChoice
from ..oci.reference import Reference
from ..registry.client import TransportOptions
from ..registry.workers import worker_pool
from ..stores import Store
from ..stores.archive import is_archive, output_format, refuse_existing
from ..stores.archive_files import open_archive, reads_by_offsets
from ..stores.layout import LayoutStore
from ..stores.platform_source import PlatformSource
from ..stores.registry import RegistrySource
from .archive_check import read_head
from .chain_import import ImportChain
from .export_sources import StoreImage, StoreSource
from .exporting import unique_references
from .naming import Target, parse_mapping, resolve_targets
from .parallel import ClientPool, raise_first, run_parallel
from .preflight import ChainReport
from .pushplan import plan_push
from .receipts import read_receipt

__all__ = ["ExportPlan", "ImportPlan", "PlannedImage", "plan_export", "plan_import",
           "plan_targets"]


@dataclass
class PlannedImage:
    """One image of a dry run.

    Attributes:
        name: the reference (export) or the bundle name (import).
        digest: its manifest or index digest.
        size: bytes of its manifests and blobs.
        destination: where an import would push it ("" for an export).
        present: the destination already has this digest (import only).
    """

    name: str
    digest: Digest
    size: int
    destination: str = ""
    present: bool = False


@dataclass
class ExportPlan:
    """What ``export`` would do.

    Attributes:
        images: the images, in the order asked.
        blobs: distinct config and layer blobs (after dedup); blob_bytes: their bytes.
        to_fetch: blobs the bundle lacks; fetch_bytes: their bytes.
        present: blobs the bundle already holds; present_bytes: their bytes.
    """

    images: list[PlannedImage] = field(default_factory=list)
    blobs: int = 0
    blob_bytes: int = 0
    to_fetch: int = 0
    fetch_bytes: int = 0
    present: int = 0
    present_bytes: int = 0


@dataclass
class ImportPlan:
    """What ``import`` would do (blob counts are per destination repository).

    Attributes:
        images: the images and their destinations.
        blobs: distinct blobs of the images to push; blob_bytes: their bytes.
        to_upload, upload_bytes: uploads (once per registry; other repositories mount).
        to_mount, mount_bytes: cross-repository mounts (bytes: the mounted blobs' sizes,
            once per repository).
        present, present_bytes: (blob, repository) pairs the destination already has.
        chain: a differential bundle's check of its base (a
            :class:`~bundler.engine.preflight.ChainReport`), else None.
    """

    images: list[PlannedImage] = field(default_factory=list)
    blobs: int = 0
    blob_bytes: int = 0
    to_upload: int = 0
    upload_bytes: int = 0
    to_mount: int = 0
    mount_bytes: int = 0
    present: int = 0
    present_bytes: int = 0
    chain: ChainReport | None = None


def plan_export(
    references: Sequence[str | Reference],
    output: str | os.PathLike[str],
    *,
    format: str | None = None,
    split_size: int | None = None,
    options: TransportOptions | None = None,
    jobs: int = 8,
    platforms: PlatformChoice | None = None,
    choices: Mapping[str, PlatformChoice] | None = None,
) -> ExportPlan:
    """Work out what :func:`bundler.export_bundle` would fetch; fetch no blob, write nothing.

    Args:
        references: image references, as for an export.
        output: the bundle directory or archive name (read, never created).
        format: ``dir``, ``tar`` or ``tar.zst``; None: from the output name.
        split_size: bytes per volume of an archive.
        options: transport options of the source registries.
        jobs: concurrent manifest requests.
        platforms, choices: as :func:`~bundler.engine.platform_export.export_platforms`
            (the platforms kept of each index; each reference's own): the plan is then
            the narrowed indexes' (their new digests, only the chosen platforms' blobs).

    Returns:
        An :class:`ExportPlan`.

    Raises:
        InvalidReferenceError: a bad reference. BundleError: the output cannot be a bundle
        (an archive name that is taken, a directory that is not a layout).
        TransferError: an image cannot be resolved.
    """
    refs = unique_references(references)
    fmt = output_format(output, format, split_size)
    store: LayoutStore | None = None
    if fmt != "dir":
        refuse_existing(Path(output).absolute())
    elif Path(output).exists():
        store = LayoutStore(output)
    plans: dict[Reference, ImagePlan] = {}
    with ClientPool(options) as clients, worker_pool(jobs) as pool:
        registry = (PlatformSource(clients, platforms or PlatformChoice(), choices)
                    if platforms is not None or choices else RegistrySource(clients))
        source = StoreSource(registry)
        source.reuse(store)

        def resolve(ref: Reference) -> None:
            image = StoreImage.of(ref)
            plans[ref] = walk(source.top(image), source.get_manifest, name=image.name,
                              pool=pool)

        raise_first(run_parallel(refs, resolve, jobs=jobs), refs)
    result = ExportPlan()
    sizes: dict[Digest, int] = {}
    for ref in refs:
        plan = plans[ref]
        result.images.append(PlannedImage(str(ref), plan.descriptor.digest, plan.size))
        sizes.update((d, b.size) for d, b in plan.blobs.items())
    for digest, size in sizes.items():
        result.blobs += 1
        result.blob_bytes += size
        if store is not None and store.has_blob(digest, size):
            result.present += 1
            result.present_bytes += size
        else:
            result.to_fetch += 1
            result.fetch_bytes += size
    return result


def plan_import(
    bundle: str | os.PathLike[str],
    *,
    to: str | None = None,
    mapping: str | os.PathLike[str] | list[tuple[str, str]] | None = None,
    options: TransportOptions | None = None,
    jobs: int = 8,
    shared_blob_dir: str | os.PathLike[str] | None = None,
    base: str | os.PathLike[str] | None = None,
    receipt_repository: str | None = None,
) -> ImportPlan:
    """Work out what :func:`bundler.import_bundle` would push; push nothing.

    Args:
        bundle: a bundle directory or archive (an archive is read up to its last manifest).
        to: ``REGISTRY[/PREFIX]``. mapping: a mapping file or (source, destination) pairs.
        options: transport options of the destination registries.
        jobs: concurrent HEAD requests.
        shared_blob_dir: a layout's shared blob directory (``--shared-blob-dir``).
        base, receipt_repository: as :func:`bundler.import_bundle`: a differential
            bundle's plan says whether its chain is complete (``chain``).

    Returns:
        An :class:`ImportPlan`.

    Raises:
        BundleError: the bundle cannot be read. MappingError: no destination.
        TransferError: a destination cannot be asked (naming the image).
        WrongBaseError: ``base`` is not the bundle's base.
    """
    pairs = mapping if isinstance(mapping, list) or mapping is None else parse_mapping(mapping)
    chain = ImportChain.open(bundle, to=to, mapping=pairs, base=base,
                             receipt_repository=receipt_repository, push=False)
    with closing(chain):
        if reads_by_offsets(bundle):  # a .tar file: read by offsets, in any member order
            with open_archive(bundle) as archive:
                chain.take_store(bundle, archive)
                targets = resolve_targets(archive.read_index(), to=to, mapping=pairs)
                return plan_targets(archive, targets, options=options, jobs=jobs,
                                    chain=chain)
        if is_archive(bundle):
            store: Store = read_head(bundle)
            if str(bundle) != "-":
                chain.take_receipt(read_receipt(bundle))
        else:
            store = LayoutStore(bundle, blob_root=shared_blob_dir)
            chain.take_store(bundle, store)
        targets = resolve_targets(store.read_index(), to=to, mapping=pairs)
        return plan_targets(store, targets, options=options, jobs=jobs, chain=chain)


def plan_targets(store: Store, targets: list[Target], *,
                 options: TransportOptions | None = None, jobs: int = 8,
                 chain: ImportChain | None = None) -> ImportPlan:
    """Work out what :func:`bundler.engine.importing.push_images` would push of
    ``store``'s images (a bundle, or a registry source for a mirror); push nothing.

    Raises:
        What the store's ``get_manifest`` raises; TransferError: a destination cannot
        be asked (naming the image).
    """
    plans = {t: walk(t.descriptor, store.get_manifest, name=t.name) for t in targets}
    report = None
    with ClientPool(options) as clients:
        push = plan_push(targets, plans, clients, jobs=jobs, report=NullReporter(),
                         record_new=False)
        for key, exc in push.failures.items():
            name = key.name if isinstance(key, Target) else key.owner.name
            raise TransferError(name, exc) from exc
        if chain is not None:
            report = chain.check(clients, push.blobs, targets, plans, headed=True, new=set(),
                                 jobs=jobs, refuse=False)
    complete = set(push.complete)
    result = ImportPlan(images=[
        PlannedImage(t.name, t.descriptor.digest, plans[t].size, str(t.destination),
                     t in complete)
        for t in targets], chain=report)
    sizes = {b.digest: b.descriptor.size for b in push.blobs}
    result.blobs, result.blob_bytes = len(sizes), sum(sizes.values())
    for blob in push.blobs:
        size = blob.descriptor.size
        result.present += len(blob.present)
        result.present_bytes += len(blob.present) * size
        missing = len(blob.missing)
        if missing and not blob.present and blob.mount_from is None:
            result.to_upload += 1
            result.upload_bytes += size
            missing -= 1
        result.to_mount += missing
        result.mount_bytes += missing * size
    return result

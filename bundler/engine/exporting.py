"""Export: pull images from registries (or read them from a layout: a
:class:`~bundler.stores.Store`) into one deduplicated OCI layout bundle or archive.

This is the export driver of the one transfer engine: it parses every reference (bad
input fails before any I/O), locks and opens the bundle, resolves each image and names
its ``index.json`` entry, then runs a :class:`~bundler.engine.push.PushRun` into a
:class:`~bundler.engine.bundle_destination.BundleDestination`, moving the blobs with the
shared random-access driver (:func:`~bundler.engine.importing.transfer`). The run fetches
every manifest (an index is kept whole), downloads each distinct blob once, and stores the
manifests; ``index.json`` comes last and atomically. An interrupted or failed export
leaves the previous ``index.json`` as it was; finished blobs stay for the next run and a
partial blob is continued.

With ``keep_going`` an image whose manifests or blobs fail is left out of
``index.json`` and the others are written; the failures come back together in one
:class:`~bundler.errors.PartialFailureError`. An archive's ``index.json`` comes first
in the stream, so with ``keep_going`` an archive export downloads every blob to its
spool before writing, and needs room for the blobs twice.

Spec: image-spec ``image-layout.md``; annotations ``org.opencontainers.image.ref.name``
(image-spec ``annotations.md``) and ``io.containerd.image.name`` (containerd).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import BundleError, Cancelled, PartialFailureError, TransferError
from ..events import NullReporter, Reporter
from ..oci.content import Descriptor
from ..oci.digest import Digest
from ..oci.graph import ImagePlan
from ..oci.reference import Reference
from ..registry.client import TransportOptions
from ..registry.workers import worker_pool
from ..stores import BundleStore, Store
from ..stores.archive import output_format
from ..stores.archive_export import ArchiveExport
from ..stores.layout import LayoutStore
from ..stores.lock import WriterLock
from ..stores.registry import RegistrySource
from .bundle_destination import BundleDestination
from .destination import BundleEntry
from .export_receipts import (
    UNNAMED,
    Differential,
    merged_entries,
    source_repository,
    start_archive,
    write_beside,
    write_index,
)
from .export_sources import StoreImage, StoreSource
from .image_lists import parse_references, read_images_file, unique_references
from .importing import transfer
from .naming import Target
from .parallel import ClientPool, raise_first, run_parallel
from .push import PushRun, record_failure
from .receipts import Receipt, receipt_path_beside
from .referrers import (
    DEFAULT_REFERRERS,
    ReferrerDiscovery,
    ReferrerPolicy,
)

__all__ = ["UNNAMED", "ExportResult", "StoreImage", "export_bundle", "export_from_store",
           "parse_references", "read_images_file", "unique_references"]



@dataclass
class ExportResult:
    """What an export did.

    Attributes:
        images: the plans of the exported images, in the order asked.
        blobs_downloaded: blobs fetched in this run.
        blobs_reused: blobs already in the bundle (checked by size).
        bytes_downloaded: blob bytes fetched in this run.
        unique_bytes: bytes of all distinct blobs and manifests of these images (of a
            differential bundle: but the blobs it leaves to its base).
        total_bytes: the same without deduplication (sum over images).
        skipped_foreign: digests of non-distributable layers the registry did not serve.
        included_foreign: digests of non-distributable layers stored in the bundle in this
            run (``include_foreign_layers``: from the registry or from their ``urls``).
        damaged: digests that arrived damaged (wrong size or digest) once and were
            downloaded again (directory bundles; an archive export fails instead).
    """

    images: list[ImagePlan] = field(default_factory=list)
    blobs_downloaded: int = 0
    blobs_reused: int = 0
    bytes_downloaded: int = 0
    unique_bytes: int = 0
    total_bytes: int = 0
    skipped_foreign: list[Digest] = field(default_factory=list)
    damaged: list[Digest] = field(default_factory=list)
    included_foreign: list[Digest] = field(default_factory=list)
    #: referrers exported with their subjects (names), and those left out (one line each)
    referrers: list[str] = field(default_factory=list)
    referrer_warnings: list[str] = field(default_factory=list)
    #: the bundle's receipt (written inside it and beside it), None if nothing was written
    receipt: Receipt | None = None


def export_bundle(
    references: Sequence[str | Reference],
    output: str | os.PathLike[str],
    *,
    format: str | None = None,
    split_size: int | None = None,
    compression_level: int = 3,
    options: TransportOptions | None = None,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    keep_going: bool = False,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    include_foreign_layers: bool = False,
    entry_names: dict[str, str] | None = None,
    referrers: ReferrerPolicy | None = DEFAULT_REFERRERS,
    since: Receipt | None = None,
    receipts: bool = True,
) -> ExportResult:
    """Export images from registries into an OCI image layout directory or archive.

    The bundle is locked for the whole run (:mod:`bundler.stores.lock`): a second
    export into the same directory or archive waits for the first to finish, so no
    image of either is lost from ``index.json``.

    Args:
        references: image references (``docker.io/library/alpine:3.20``, ``host/a/b@sha256:...``).
        output: the bundle directory (created if missing; an existing bundle is extended),
            or an archive ``NAME.tar`` / ``NAME.tar.zst`` (must not exist yet).
        format: ``dir``, ``tar`` or ``tar.zst``; None: from the output name.
        split_size: cut an archive into volumes ``NAME.000``, ... of this many bytes.
        compression_level: zstd level of a ``tar.zst`` archive.
        options: transport options for the source registries.
        jobs: concurrent transfers.
        reporter: receives progress events.
        stop: set it to cancel (Ctrl-C).
        keep_going: export every image that can be; fail at the end for the others.
        wait: wait for another export writing the same bundle; False: fail at once.
        on_wait: called once with a one-line message when this export starts to wait.
        include_foreign_layers: store non-distributable (foreign) layers too: from the
            source registry if it serves them, else from their ``urls`` in order (see
            :mod:`bundler.foreign`); one that no source serves fails its image. Without
            it, such a layer the registry does not serve is left out.
        entry_names: canonical reference -> the ``org.opencontainers.image.ref.name``
            its ``index.json`` entry gets instead of the reference (and no
            ``io.containerd.image.name``); :data:`UNNAMED` writes the entry without a
            name (an unnamed entry of the same digest is replaced). An entry of the same
            name is replaced, as always.
        referrers: export the signatures, attestations and SBOMs that refer to each
            manifest too (see :mod:`bundler.engine.referrers`); by default all of them,
            the referrers of referrers too; None: none (``--no-referrers``).
        since: the receipt of a base bundle (``--since``): write a differential bundle,
            every manifest and only the configs and layers the base does not list
            (:mod:`bundler.engine.export_receipts`); a directory must be new or empty.
        receipts: write the receipts (False: ``copy``, which writes them only into a
            directory bundle that has them, to keep them true).

    Every export writes the bundle's receipt inside it and beside it
    (:mod:`bundler.engine.receipts`); ``ExportResult.receipt`` is it.

    Returns:
        An :class:`ExportResult`.

    Raises:
        InvalidReferenceError: a bad reference (before any I/O).
        TransferError: an image could not be fetched; names the image, wraps the cause
            (a :class:`~bundler.foreign.ForeignLayerError` for a foreign layer no source
            served; a DigestMismatchError naming the layer and the URL for wrong bytes).
        PartialFailureError: with ``keep_going``, some images failed (the others are in
            the bundle; ``.result`` says what was exported).
        BundleLockedError: another export is writing the bundle and ``wait`` is False.
        BundleError: the bundle cannot be written.
    """
    images = [StoreImage.of(ref) for ref in unique_references(references)]
    with ClientPool(options) as clients:
        source = StoreSource(RegistrySource(clients), include_foreign=include_foreign_layers)
        discovery = ReferrerDiscovery(clients, referrers) if referrers is not None else None
        return _write_bundle(source, images, output, format=format, split_size=split_size,
                             compression_level=compression_level, jobs=jobs,
                             reporter=reporter, stop=stop, keep_going=keep_going, wait=wait,
                             on_wait=on_wait, entry_names=entry_names, discovery=discovery,
                             since=since, receipts=receipts)


def export_from_store(
    store: Store,
    images: Sequence[StoreImage],
    output: str | os.PathLike[str],
    *,
    format: str | None = None,
    split_size: int | None = None,
    compression_level: int = 3,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    keep_going: bool = False,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    entry_names: dict[str, str] | None = None,
    move: Callable[[PushRun], None] | None = None,
    since: Receipt | None = None,
    receipts: bool = True,
) -> ExportResult:
    """Export images of a store (a layout directory) into a layout directory or archive:
    the export engine with a :class:`~bundler.engine.export_sources.StoreSource`, as
    :func:`export_bundle` over a :class:`~bundler.stores.registry.RegistrySource`.

    Each manifest and blob is read from ``store`` (checked while read) and stored once;
    what the output already holds is kept. ``index.json`` comes last, as in
    :func:`export_bundle`.

    Args:
        store: the source store (see :class:`bundler.stores.Store`).
        images: the images to export (an ``index.json`` descriptor and a name each).
        output, format, split_size, compression_level, jobs, reporter, stop,
            keep_going, wait, on_wait: as :func:`export_bundle`.
        entry_names: image name -> its entry name in the output (see
            :func:`export_bundle`); an image not in it keeps its name.
        move: hands the pending blobs of the planned run over itself, in the order the
            source gives them (an archive read once:
            :func:`~bundler.engine.archive_import.feed_archive`; ``store`` then serves
            the manifests only); None: ``jobs`` blobs at once from ``store``.
        since, receipts: see :func:`export_bundle`.

    Returns:
        An :class:`ExportResult`.

    Raises:
        TransferError: an image could not be read (naming it, wrapping the BundleError
            or IntegrityError). PartialFailureError: with ``keep_going``.
        BundleLockedError, BundleError: as :func:`export_bundle`.

    Spec: image-spec ``image-layout.md``.
    """
    return _write_bundle(StoreSource(store), list(images), output, format=format,
                         split_size=split_size, compression_level=compression_level,
                         jobs=jobs, reporter=reporter, stop=stop, keep_going=keep_going,
                         wait=wait, on_wait=on_wait, entry_names=entry_names, move=move,
                         since=since, receipts=receipts)


def _write_bundle(source: StoreSource, items: list[StoreImage],
                  output: str | os.PathLike[str], *, format: str | None,
                  split_size: int | None, compression_level: int, jobs: int,
                  reporter: Reporter | None, stop: threading.Event | None, keep_going: bool,
                  wait: bool, on_wait: Callable[[str], None] | None,
                  entry_names: dict[str, str] | None,
                  discovery: ReferrerDiscovery | None = None,
                  move: Callable[[PushRun], None] | None = None,
                  since: Receipt | None = None, receipts: bool = True) -> ExportResult:
    """Lock the output, open it as a layout or an archive, run :func:`_export`, and
    write the receipt beside the bundle last."""
    report = reporter or NullReporter()
    stop = stop or threading.Event()
    fmt = output_format(output, format, split_size)
    failed: dict[object, TransferError] = {}
    collect = failed if keep_going else None
    names = entry_names or {}
    differential = Differential(since) if since is not None else None
    beside = receipts or receipt_path_beside(output).exists()
    lock = WriterLock.for_output(output, directory=fmt == "dir", wait=wait, on_wait=on_wait)
    if fmt != "dir":
        with lock:
            with ArchiveExport(output, fmt, split_size=split_size,
                               compression_level=compression_level) as archive:
                result = _export(items, source, archive, jobs, report, stop, collect, names,
                                 discovery, move, differential, receipts)
                if failed and not result.images:  # nothing to write: no archive at all
                    raise PartialFailureError([failed[r] for r in items if r in failed],
                                              result)
            if result.receipt is not None and beside:  # last: the archive is complete
                write_beside(output, result.receipt)
    else:
        with lock:
            store = LayoutStore(output, create=True)
            try:
                if differential is not None and store.read_index():
                    raise BundleError(f"{output}: --since writes a new bundle; this directory "
                                      "holds one already: choose a new or empty directory")
                result = _export(items, source, store, jobs, report, stop, collect, names,
                                 discovery, move, differential, receipts)
            except BaseException:
                store.discard_if_empty()  # a new directory holding only oci-layout is no
                raise  # bundle (the lock removes the directory it made, if empty)
            if not result.images:
                store.discard_if_empty()
            if result.receipt is not None and beside:  # last, still under the lock: the
                write_beside(output, result.receipt)  # next writer's receipt comes after
    if failed:
        raise PartialFailureError([failed[r] for r in items if r in failed], result)
    return result


def _export(items: list[StoreImage], source: StoreSource, store: BundleStore,
            jobs: int, report: Reporter, stop: threading.Event,
            failed: dict | None = None, names: dict[str, str] | None = None,
            discovery: ReferrerDiscovery | None = None,
            move: Callable[[PushRun], None] | None = None,
            differential: Differential | None = None,
            receipts: bool = True) -> ExportResult:
    """Resolve the images, run the push engine into the bundle, write ``index.json``
    and the receipt inside the bundle.

    ``items`` are the images to read from ``source``; ``failed`` (given: keep going)
    collects the failed images; ``names`` renames entries (see ``entry_names``);
    ``move`` moves the blobs instead of the random-access driver (a blob read once is
    not fetched again when it arrives damaged); ``differential`` leaves the base's
    blobs out; ``receipts`` False writes no receipt (but keeps a directory's inside
    receipt true).
    """
    keep_going = failed is not None
    failed = {} if failed is None else failed
    names = names or {}
    source.reuse(store if isinstance(store, LayoutStore) and store.read_index()
                 else None)  # a new bundle has nothing to reuse
    # 1. each image's top descriptor (a reference is resolved), then its target: the
    #    bundle, under the name of its index.json entry
    tops: dict[StoreImage, Descriptor] = {}

    def resolve(item: StoreImage) -> None:
        tops[item] = source.top(item)

    resolved = run_parallel(items, resolve, jobs=jobs, stop=stop, keep_going=keep_going)
    if not keep_going:
        raise_first(resolved, items)
    for item in items:
        if item in resolved:
            record_failure(failed, item, str(item), resolved[item], report, keep_going)
    image_of = {_target(item, tops[item], names): item for item in items if item in tops}
    targets = list(image_of)
    made: list[Receipt] = []  # an archive's receipt, written at its head
    bundle = BundleDestination(store, report, refetch=move is None)
    run = PushRun(bundle, report=report, stop=stop, keep_going=keep_going, tags_last=True)
    try:
        # 2. the manifests (an index's children at once), then what the bundle lacks
        with worker_pool(jobs) as manifest_pool:
            run.plan(targets, source.get_manifest, jobs=jobs, pool=manifest_pool)
            if discovery is not None:  # referrers, planned after their subjects
                targets += _referrers(discovery, run, targets, image_of, source,
                                      manifest_pool, store, names)
        if differential is not None:  # the configs and layers the base holds
            differential.choose([(run.plans[t], source_repository(
                image_of[t].name, image_of[t].reference)) for t in targets if t in run.plans])
        run.check_destinations(jobs=jobs, head_blobs=True, leave_out=(
            differential.leaves_out if differential is not None else None))
        # 3. each blob once: the largest first (the long downloads start at once and the
        #    small ones fill in); an archive's index.json comes first in its stream, so
        #    without keep_going it is written now and the blobs come in archive order
        order = sorted(run.pending, key=lambda b: b.descriptor.size, reverse=True)
        if isinstance(store, ArchiveExport) and not keep_going:
            made = start_archive(store, _kept(run, targets), names, differential, receipts)
            order.sort(key=lambda b: store.position(b.digest))
        if move is not None:  # the source gives the order (an archive read once)
            move(run)
        else:
            transfer(run, order, lambda blob: source.for_image(image_of[blob.owner]),
                     jobs=jobs)
    finally:
        for target, error in run.failed.items():  # an image with a failed blob is left out
            failed.setdefault(image_of[target], error)
    if stop.is_set():
        raise Cancelled("cancelled")
    images = _kept(run, targets)
    if isinstance(store, ArchiveExport) and keep_going and images:
        made = start_archive(store, images, names, differential, receipts)
    result = _result(images, bundle, source,
                     set(differential.omitted) if differential is not None else set())
    if discovery is not None:
        result.referrers, result.referrer_warnings = discovery.found, discovery.warnings
    if not images:
        store.sync()  # the finished blobs stay for the next run
        return result  # everything failed: index.json stays as it was

    # 4. manifests, then the blob directories (every rename of this run durable), then
    #    the images named, index.json last
    bundle.store_manifests(images, jobs=jobs)
    entries = merged_entries(store.read_index(), images, names)
    for target in targets:
        if target in run.plans and target not in run.failed:
            run.tag(target)  # the image is done: its entry is written below
    result.receipt = write_index(store, entries, differential, receipts, made)
    return result


def _referrers(discovery: ReferrerDiscovery, run: PushRun, targets: list[Target],
               image_of: dict[Target, StoreImage], source: StoreSource,
               pool: ThreadPoolExecutor, store: BundleStore,
               names: dict[str, str]) -> list[Target]:
    """Plan the referrers of the planned images into ``run`` (each after its subject,
    with the annotations that say so); return their targets."""
    plans = {image_of[t]: run.plans[t] for t in targets if t in run.plans}
    planned = [image_of[t] for t in targets if t in run.plans and t not in run.failed]
    added = []
    for item in discovery.extend(source, planned, plans, pool, store.has_blob):
        plan_ = plans[item]
        target = _target(item, plan_.descriptor, names)
        image_of[target] = item
        run.plans[target] = plan_
        run.targets.append(target)
        run.result.targets.append(target)
        added.append(target)
    return added


def _target(item: StoreImage, top: Descriptor, names: dict[str, str]) -> Target:
    """The push target of an image: the bundle, under its entry's name."""
    name = names.get(item.name, item.name)
    return Target(item.name, top, BundleEntry(name or None, top.digest))


def _kept(run: PushRun, targets: list[Target]) -> list[ImagePlan]:
    """The plans of the images planned and not failed, in the order asked."""
    return [run.plans[t] for t in targets if t in run.plans and t not in run.failed]


def _result(images: list[ImagePlan], bundle: BundleDestination, source: StoreSource,
            left_out: set[Digest]) -> ExportResult:
    """What the export did, from the kept images and the bundle's counts (the sizes
    count no blob ``left_out`` to a base)."""
    manifests = {d.digest: len(m.raw) for p in images for d, m in p.manifests}
    blobs = {d: b.size for p in images for d, b in p.blobs.items() if d not in left_out}
    total = sum(p.size - sum(b.size for d, b in p.blobs.items() if d in left_out)
                for p in images)
    return ExportResult(
        images=images, blobs_downloaded=len(bundle.fetched), blobs_reused=bundle.reused,
        bytes_downloaded=bundle.bytes_fetched,
        unique_bytes=sum(blobs.values()) + sum(manifests.values()),
        total_bytes=total, skipped_foreign=list(bundle.skipped_foreign),
        damaged=list(bundle.damaged),
        included_foreign=[d for d in bundle.fetched if source.foreign(d)])

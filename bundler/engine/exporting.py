"""Export: pull images from registries (or read them from a layout: a
:class:`~bundler.stores.Store`) into one deduplicated OCI layout bundle or archive.

Order of work: parse every reference (bad input fails before any I/O), resolve and
fetch every manifest (an index is kept whole), download each distinct blob once, write
the manifests, and write ``index.json`` last and atomically. An interrupted or failed
export leaves the previous ``index.json`` as it was; finished blobs stay for the next
run and a partial blob is continued.

With ``keep_going`` an image whose manifests or blobs fail is left out of
``index.json`` and the others are written; the failures come back together in one
:class:`~bundler.errors.PartialFailureError`. An archive's ``index.json`` comes first
in the stream, so with ``keep_going`` an archive export downloads every blob to its
spool before writing, and needs room for the blobs twice.

Spec: image-spec ``image-layout.md``; annotations ``org.opencontainers.image.ref.name``
(image-spec ``annotations.md``) and ``io.containerd.image.name`` (containerd).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import (
    Cancelled,
    IntegrityError,
    NotFoundError,
    PartialFailureError,
    TransferError,
)
from ..events import Event, NullReporter, Reporter
from ..oci.content import CONTAINERD_NAME, REF_NAME, Descriptor, is_non_distributable
from ..oci.digest import Digest
from ..oci.graph import ImagePlan
from ..oci.reference import Reference
from ..registry.client import TransportOptions
from ..stores import BundleStore, Store
from ..stores.archive import output_format
from ..stores.archive_export import ArchiveExport
from ..stores.layout import LayoutStore
from ..stores.lock import WriterLock
from ..stores.registry import RegistrySource
from .export_sources import StoreImage, StoreSource
from .image_lists import parse_references, read_images_file, unique_references
from .parallel import ClientPool, raise_first, run_parallel
from .referrers import (
    DEFAULT_REFERRERS,
    ReferrerDiscovery,
    ReferrerPolicy,
    referrer_annotations,
)

_log = logging.getLogger("bundler")

__all__ = ["ExportResult", "StoreImage", "export_bundle", "export_from_store",
           "parse_references", "read_images_file", "unique_references"]

#: ``entry_names`` value of an image written without a name (``oci:DIR`` with no
#: ``:NAME``, as skopeo writes it): its ``index.json`` entry has no annotations.
UNNAMED = ""


@dataclass
class ExportResult:
    """What an export did.

    Attributes:
        images: the plans of the exported images, in the order asked.
        blobs_downloaded: blobs fetched in this run.
        blobs_reused: blobs already in the bundle (checked by size).
        bytes_downloaded: blob bytes fetched in this run.
        unique_bytes: bytes of all distinct blobs and manifests of these images.
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
                             on_wait=on_wait, entry_names=entry_names, discovery=discovery)


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
                         wait=wait, on_wait=on_wait, entry_names=entry_names)


def _write_bundle(source: StoreSource, items: list[StoreImage],
                  output: str | os.PathLike[str], *, format: str | None,
                  split_size: int | None, compression_level: int, jobs: int,
                  reporter: Reporter | None, stop: threading.Event | None, keep_going: bool,
                  wait: bool, on_wait: Callable[[str], None] | None,
                  entry_names: dict[str, str] | None,
                  discovery: ReferrerDiscovery | None = None) -> ExportResult:
    """Lock the output, open it as a layout or an archive, and run :func:`_export`."""
    report = reporter or NullReporter()
    stop = stop or threading.Event()
    fmt = output_format(output, format, split_size)
    failed: dict[object, TransferError] = {}
    collect = failed if keep_going else None
    names = entry_names or {}
    lock = WriterLock.for_output(output, directory=fmt == "dir", wait=wait, on_wait=on_wait)
    if fmt != "dir":
        with lock, ArchiveExport(output, fmt, split_size=split_size,
                                 compression_level=compression_level) as archive:
            result = _export(items, source, archive, jobs, report, stop, collect, names,
                             discovery)
            if failed and not result.images:  # nothing to write: no archive at all
                raise PartialFailureError([failed[r] for r in items if r in failed], result)
    else:
        with lock:
            store = LayoutStore(output, create=True)
            try:
                result = _export(items, source, store, jobs, report, stop, collect, names,
                                 discovery)
            except BaseException:
                store.discard_if_empty()  # a new directory holding only oci-layout is no
                raise  # bundle (the lock removes the directory it made, if empty)
            if not result.images:
                store.discard_if_empty()
    if failed:
        raise PartialFailureError([failed[r] for r in items if r in failed], result)
    return result


def _export(refs: list[StoreImage], source: StoreSource, store: BundleStore,
            jobs: int, report: Reporter, stop: threading.Event,
            failed: dict | None = None, names: dict[str, str] | None = None,
            discovery: ReferrerDiscovery | None = None) -> ExportResult:
    """Plan, download, write. ``refs`` are the images to read from ``source``;
    ``failed`` (given: keep going) collects the failed images; ``names`` renames
    entries (see ``entry_names``)."""
    keep_going = failed is not None
    failed = {} if failed is None else failed
    result = ExportResult()
    with ThreadPoolExecutor(max(1, jobs)) as manifest_pool:
        # 1. resolve every reference and fetch every manifest
        plans: dict[StoreImage, ImagePlan] = {}
        source.reuse(store if isinstance(store, LayoutStore) and store.read_index()
                     else None)  # a new bundle has nothing to reuse

        def plan(ref: StoreImage) -> None:
            plans[ref] = source.plan(ref, manifest_pool)
            report(Event("image", str(ref), "start", total=plans[ref].size))

        failures = run_parallel(refs, plan, jobs=jobs, stop=stop, keep_going=keep_going)
        if not keep_going:
            raise_first(failures, refs)
        for ref in refs:
            if ref in failures:
                _fail(failed, ref, failures[ref], report)
        planned = [r for r in refs if r in plans and r not in failed]
        if discovery is not None:  # referrers, planned after their subjects
            planned += discovery.extend(source, planned, plans, manifest_pool, store.has_blob)
            result.referrers, result.referrer_warnings = discovery.found, discovery.warnings
        result.images = [plans[r] for r in planned]

        # 2. each distinct blob once, from the first image that has it
        sources: dict[Digest, tuple[Descriptor, StoreImage]] = {}
        for ref in planned:
            for digest, descriptor in plans[ref].blobs.items():
                sources.setdefault(digest, (descriptor, ref))
        todo = []
        for digest, (descriptor, _ref) in sources.items():
            if store.has_blob(digest, descriptor.size):
                result.blobs_reused += 1
                report(Event("blob", str(digest), "skipped", total=descriptor.size))
            else:
                todo.append(digest)
        report(Event("plan", "export", "start",
                     total=sum(sources[d][0].size for d in todo), images=len(planned)))
        # largest first: the long downloads start at once and the small ones fill in
        todo.sort(key=lambda d: sources[d][0].size, reverse=True)
        if isinstance(store, ArchiveExport) and not keep_going:  # index.json first
            _start_archive(store, result.images, names)
            todo.sort(key=store.position)
        lock = threading.Lock()

        def download(digest: Digest) -> None:
            descriptor, ref = sources[digest]
            blob = source.blob(ref, descriptor)
            opened: list[Iterator[bytes]] = []

            def open_source(offset: int) -> Iterator[bytes]:
                chunks = blob.open(offset)
                opened.append(chunks)
                return chunks

            def on_bytes(n: int) -> None:
                if stop.is_set():
                    raise Cancelled("cancelled")
                report(Event("blob", str(digest), "progress", n, descriptor.size))

            report(Event("blob", str(digest), "start", total=descriptor.size))
            try:
                try:
                    fetched = store.put_blob(digest, descriptor.size, open_source,
                                               on_bytes=on_bytes)
                except IntegrityError as exc:  # bytes damaged on the way: once more
                    if not isinstance(store, LayoutStore):
                        raise  # an archive's writer may have begun the member already
                    _log.info("%s: %s; downloading it again", ref, exc)
                    with lock:
                        result.damaged.append(digest)
                    report(Event("blob", str(digest), "start", total=descriptor.size))
                    fetched = store.put_blob(digest, descriptor.size, open_source,
                                               on_bytes=on_bytes)
            except NotFoundError as exc:
                if not is_non_distributable(descriptor):
                    report(Event("blob", str(digest), "failed", total=descriptor.size,
                                 detail=str(exc)))
                    raise
                with lock:
                    result.skipped_foreign.append(digest)
                report(Event("blob", str(digest), "skipped", total=descriptor.size,
                             detail="non-distributable layer not served by the registry"))
                return
            except Exception as exc:
                named = blob.explain(exc)
                if not isinstance(exc, Cancelled):
                    report(Event("blob", str(digest), "failed", total=descriptor.size,
                                 detail=str(named) or type(exc).__name__))
                if named is not exc:  # wrong bytes of a foreign layer: name it and its URL
                    raise named from exc
                raise
            finally:
                for chunks in opened:  # a failed download gives its connection back now
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()
            with lock:
                result.blobs_downloaded += 1
                result.bytes_downloaded += fetched
                if blob.foreign:
                    result.included_foreign.append(digest)
            report(Event("blob", str(digest), "done", descriptor.size, descriptor.size))

        failures = run_parallel(todo, download, jobs=jobs, stop=stop, keep_going=keep_going)
        if failures and not keep_going:
            digest, exc = next(iter(failures.items()))
            raise TransferError(str(sources[digest][1]), exc) from exc
        for ref in planned:  # an image with a failed blob is left out
            bad = [d for d in plans[ref].blobs if d in failures]
            if bad:
                _fail(failed, ref, failures[bad[0]], report)
        result.images = [plans[r] for r in planned if r not in failed]
        if isinstance(store, ArchiveExport) and keep_going and result.images:
            _start_archive(store, result.images, names)
    manifests = {d.digest: len(m.raw) for p in result.images for d, m in p.manifests}
    blobs = {d: b.size for p in result.images for d, b in p.blobs.items()}
    result.unique_bytes = sum(blobs.values()) + sum(manifests.values())
    result.total_bytes = sum(p.size for p in result.images)
    if not result.images:
        store.sync()  # the finished blobs stay for the next run
        return result  # everything failed: index.json stays as it was

    # 3. manifests (each fsynced, so written side by side), then the blob directories
    # (every rename of this run durable), then index.json last
    raw = {d.digest: m.raw for p in result.images for d, m in p.manifests}

    def put_manifest(digest: Digest) -> None:
        store.put_manifest(digest, raw[digest])
        report(Event("manifest", str(digest), "done", len(raw[digest]), len(raw[digest])))

    raise_first(run_parallel(list(raw), put_manifest, jobs=jobs), list(raw))
    store.sync()
    entries = {
        (d.annotations.get(REF_NAME) or f"#{i}"): d for i, d in enumerate(store.read_index())
    }
    for key, entry in _named_entries(result.images, names or {}).items():
        if key.startswith("@") and any(not d.annotations and d.digest == entry.digest
                                       for d in entries.values()):
            continue  # already there without a name
        entries[key] = entry
    for plan_ in result.images:
        report(Event("image", plan_.name, "done", plan_.size, plan_.size))
    store.write_index(entries.values())
    return result


def _named_entries(images: list[ImagePlan], names: dict[str, str]) -> dict[str, Descriptor]:
    """The ``index.json`` entries of ``images``, keyed as :func:`_entry_key` keys them:
    named by their reference (ref.name and containerd's name), or as ``names`` says
    (ref.name only, as skopeo writes it; :data:`UNNAMED`: no annotations, keyed by
    ``@DIGEST``)."""
    entries: dict[str, Descriptor] = {}
    for plan_ in images:
        name = names.get(plan_.name, plan_.name)
        if plan_.name not in names:
            annotations = {REF_NAME: name, CONTAINERD_NAME: name}
        else:
            annotations = {REF_NAME: name} if name != UNNAMED else {}
        annotations.update(referrer_annotations(plan_.descriptor))
        entries[name or f"@{plan_.descriptor.digest}"] = plan_.descriptor.with_annotations(
            annotations)
    return entries


def _start_archive(store: ArchiveExport, images: list[ImagePlan],
                   names: dict[str, str] | None = None) -> None:
    """Write ``oci-layout``, ``index.json`` and the manifests at the archive's head."""
    store.start(list(_named_entries(images, names or {}).values()), images)


def _fail(failed: dict, ref: object, exc: BaseException, report: Reporter) -> None:
    """Record that ``ref`` failed (first cause kept) and report it."""
    if ref not in failed:
        failed[ref] = exc if isinstance(exc, TransferError) else TransferError(str(ref), exc)
        report(Event("image", str(ref), "failed", detail=str(exc)))


"""Export: pull images from registries into one deduplicated OCI layout bundle.

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
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import (
    BundlerError,
    Cancelled,
    IntegrityError,
    InvalidReferenceError,
    NotFoundError,
    PartialFailureError,
    SizeMismatchError,
    TransferError,
)
from ..events import Event, NullReporter, Reporter
from ..oci.content import (
    CONTAINERD_NAME,
    REF_NAME,
    Descriptor,
    Index,
    Manifest,
    is_non_distributable,
    parse_manifest,
)
from ..oci.digest import Digest
from ..oci.graph import ImagePlan, walk
from ..oci.reference import Reference
from ..registry.client import TransportOptions
from ..registry.foreign import ForeignSource
from ..stores import BundleStore
from ..stores.archive import output_format
from ..stores.archive_export import ArchiveExport
from ..stores.layout import LayoutStore
from ..stores.lock import WriterLock
from .parallel import ClientPool, raise_first, run_parallel

_log = logging.getLogger("bundler")

__all__ = ["ExportResult", "export_bundle", "plan_image", "unique_references",
           "read_images_file"]



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


def read_images_file(path: str | os.PathLike[str], *,
                     numbered: bool = False) -> list[str] | list[tuple[str, str]]:
    """Read a list of references: one per line, blank lines and ``#`` comments ignored.

    Args:
        path: the images file (UTF-8, a byte-order mark allowed), or ``-`` for stdin.
        numbered: return ``(reference, "FILE:LINE")`` pairs, so that a bad line can be
            named by :func:`parse_references`.

    Raises:
        BundlerError: the file cannot be read.
    """
    try:
        if str(path) == "-":
            text = sys.stdin.buffer.read().decode("utf-8-sig")
            path = "<stdin>"
        else:
            text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundlerError(f"cannot read images file {path}: {exc}") from exc
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            out.append((line, f"{path}:{number}"))
    if numbered:
        return out
    return [line for line, _ in out]


def parse_references(texts: Iterable[str | tuple[str, str]]) -> list[Reference]:
    """Parse and normalize references; duplicates (same canonical form) kept once.

    Args:
        texts: references, or ``(reference, where)`` pairs (``where`` like ``FILE:LINE``
            names the input in an error).

    Raises:
        InvalidReferenceError: naming the first bad input (and where it came from).
        BundlerError: no references at all.
    """
    refs: list[Reference] = []
    for item in texts:
        text, where = (item, "") if isinstance(item, str) else item
        try:
            refs.append(Reference.parse(text))
        except InvalidReferenceError as exc:
            if not where:
                raise
            raise InvalidReferenceError(exc.text, exc.reason, where=where) from exc
    if not refs:
        raise BundlerError("no image references given")
    return unique_references(refs)


def plan_image(
    ref: Reference, clients: ClientPool, pool: ThreadPoolExecutor, store: LayoutStore | None
) -> ImagePlan:
    """Resolve one reference and load its manifests.

    Manifests the bundle already holds are read from it (digest-checked) after one HEAD
    for a tag, so a re-export spends no manifest GETs (which registries count as pulls).
    With ``store`` None (a new bundle) the manifests are fetched at once.
    """
    client = clients.get(ref.registry)

    def stored(digest: Digest) -> Manifest | Index | None:
        if store is None or not store.has_blob(digest):
            return None
        size = store.blob_path(digest).stat().st_size
        return store.get_manifest(Descriptor(media_type="", digest=digest, size=size))

    digest = ref.digest
    if digest is None and store is not None:
        digest = client.resolve(ref.repository, ref.identifier)
    item = stored(digest) if digest is not None else None
    if item is None:
        raw, media_type, digest = client.get_manifest(ref.repository, ref.identifier)
        item = parse_manifest(raw, media_type, digest=digest)
    # an artifact's index.json entry carries its artifactType (image-spec descriptor.md)
    top = Descriptor(media_type=item.media_type, digest=digest, size=len(item.raw),
                     artifact_type=item.artifact_type)

    def load(descriptor: Descriptor) -> Manifest | Index:
        if descriptor.digest == digest:
            return item
        child = stored(descriptor.digest)
        if child is not None:
            return child
        child_raw, child_type, _ = client.get_manifest(ref.repository, str(descriptor.digest))
        if len(child_raw) != descriptor.size:
            raise SizeMismatchError(
                digest=str(descriptor.digest), expected=descriptor.size, actual=len(child_raw),
                where=f"manifest {ref.registry}/{ref.repository}@{descriptor.digest}")
        return parse_manifest(child_raw, descriptor.media_type or child_type,
                              digest=descriptor.digest)

    return walk(top, load, name=str(ref), pool=pool)


def unique_references(references: Sequence[str | Reference]) -> list[Reference]:
    """Parse what is not parsed yet; keep each canonical reference once, in order.

    Raises:
        InvalidReferenceError: naming the first bad input.
    """
    refs = [r if isinstance(r, Reference) else Reference.parse(r) for r in references]
    return list({str(r): r for r in refs}.values())


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
    refs = unique_references(references)
    report = reporter or NullReporter()
    stop = stop or threading.Event()
    fmt = output_format(output, format, split_size)
    failed: dict[Reference, TransferError] = {}
    collect = failed if keep_going else None
    lock = WriterLock.for_output(output, directory=fmt == "dir", wait=wait, on_wait=on_wait)
    if fmt != "dir":
        with lock, ArchiveExport(output, fmt, split_size=split_size,
                                 compression_level=compression_level) as archive:
            result = _export(refs, archive, options, jobs, report, stop, collect,
                             include_foreign_layers)
            if failed and not result.images:  # nothing to write: no archive at all
                raise PartialFailureError([failed[r] for r in refs if r in failed], result)
    else:
        with lock:
            store = LayoutStore(output, create=True)
            try:
                result = _export(refs, store, options, jobs, report, stop, collect,
                                 include_foreign_layers)
            except BaseException:
                store.discard_if_empty()  # a new directory holding only oci-layout is no
                raise  # bundle (the lock removes the directory it made, if empty)
            if not result.images:
                store.discard_if_empty()
    if failed:
        raise PartialFailureError([failed[r] for r in refs if r in failed], result)
    return result


def _export(refs: list[Reference], store: BundleStore,
            options: TransportOptions | None, jobs: int, report: Reporter,
            stop: threading.Event, failed: dict[Reference, TransferError] | None = None,
            include_foreign: bool = False) -> ExportResult:
    """Plan, download, write. ``failed`` (given: keep going) collects the failed images."""
    keep_going = failed is not None
    failed = {} if failed is None else failed
    result = ExportResult()
    with ClientPool(options) as clients, ThreadPoolExecutor(max(1, jobs)) as manifest_pool:
        # 1. resolve every reference and fetch every manifest
        plans: dict[Reference, ImagePlan] = {}
        cache = store if store.read_index() else None  # a new bundle has nothing to reuse

        def plan(ref: Reference) -> None:
            plans[ref] = plan_image(ref, clients, manifest_pool, cache)
            report(Event("image", str(ref), "start", total=plans[ref].size))

        failures = run_parallel(refs, plan, jobs=jobs, stop=stop, keep_going=keep_going)
        if not keep_going:
            raise_first(failures, refs)
        for ref in refs:
            if ref in failures:
                _fail(failed, ref, failures[ref], report)
        planned = [r for r in refs if r in plans and r not in failed]
        result.images = [plans[r] for r in planned]

        # 2. each distinct blob once, from the first image that has it
        sources: dict[Digest, tuple[Descriptor, Reference]] = {}
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
            _start_archive(store, result.images)
            todo.sort(key=store.position)
        lock = threading.Lock()

        def download(digest: Digest) -> None:
            descriptor, ref = sources[digest]
            client = clients.get(ref.registry)
            opened: list[Iterator[bytes]] = []
            foreign = (ForeignSource(descriptor, ref.registry, lambda offset: client.iter_blob(
                ref.repository, digest, offset=offset), options or TransportOptions())
                if include_foreign and is_non_distributable(descriptor) else None)

            def open_source(offset: int) -> Iterator[bytes]:
                source = (foreign.open(offset) if foreign is not None
                          else client.iter_blob(ref.repository, digest, offset=offset))
                opened.append(source)
                return source

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
                named = foreign.explain(exc) if foreign is not None else exc
                if not isinstance(exc, Cancelled):
                    report(Event("blob", str(digest), "failed", total=descriptor.size,
                                 detail=str(named) or type(exc).__name__))
                if named is not exc:  # wrong bytes of a foreign layer: name it and its URL
                    raise named from exc
                raise
            finally:
                for source in opened:  # a failed download gives its connection back now
                    source.close()
            with lock:
                result.blobs_downloaded += 1
                result.bytes_downloaded += fetched
                if foreign is not None:
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
            _start_archive(store, result.images)
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
    for plan_ in result.images:
        name = plan_.name
        annotations = {REF_NAME: name, CONTAINERD_NAME: name}
        entries[name] = plan_.descriptor.with_annotations(annotations)
        report(Event("image", name, "done", plan_.size, plan_.size))
    store.write_index(entries.values())
    return result


def _start_archive(store: ArchiveExport, images: list[ImagePlan]) -> None:
    """Write ``oci-layout``, ``index.json`` and the manifests at the archive's head."""
    named = {p.name: p.descriptor.with_annotations({REF_NAME: p.name, CONTAINERD_NAME: p.name})
             for p in images}
    store.start(list(named.values()), images)


def _fail(failed: dict[Reference, TransferError], ref: Reference, exc: BaseException,
          report: Reporter) -> None:
    """Record that ``ref`` failed (first cause kept) and report it."""
    if ref not in failed:
        failed[ref] = exc if isinstance(exc, TransferError) else TransferError(str(ref), exc)
        report(Event("image", str(ref), "failed", detail=str(exc)))


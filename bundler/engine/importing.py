"""Import and mirror: push the images of a store into registries, every digest preserved.

The store is anything with the :class:`~bundler.stores.Store` read protocol: a bundle's
layout (``bundler import DIR``) or images read on demand from source registries
(:class:`~bundler.stores.registry.RegistrySource`, ``bundler mirror``); the engine is the
same. A blob from a registry source streams from the source response into the
destination upload, nothing written to disk.

For each destination registry the blobs of all images move concurrently, the largest
and the smallest alternating; each distinct (registry, blob) is handled by one task that
climbs a ladder: the repository has it (HEAD: skip) -> another repository of this run has
it, or holds an image found complete (cross-repository mount) -> upload (streamed from
the bundle through the verifying reader). A non-distributable (foreign) layer the bundle
does not hold is not pushed: registries accept a manifest that references one they do
not have. As soon as the last blob of an image is in place, the task that placed it
pushes that image's child manifests by digest, then its top manifest by tag (or by
digest), byte for byte, and the digest the registry reports is checked; tagging thus
overlaps the transfers of the other images. An image whose destination already holds
the same digest is skipped whole after one HEAD.

With ``keep_going`` an image whose blob or manifest fails is not tagged, the others
still go, and the failures come back together in one
:class:`~bundler.errors.PartialFailureError`.

Spec: distribution-spec "Pushing blobs", "Mounting a blob from another repository",
"Pushing manifests".
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from ..errors import (
    BundlerError,
    Cancelled,
    PartialFailureError,
    RegistryError,
    TransferError,
    TransportError,
)
from ..events import Event, NullReporter, Reporter
from ..oci.content import Descriptor, is_non_distributable
from ..oci.digest import Digest
from ..oci.graph import ImagePlan, walk
from ..registry.client import RegistryClient, TransportOptions
from ..stores import MountSource, Store
from .naming import Target
from .parallel import ClientPool, run_parallel
from .pushplan import BlobPush, plan_push

_log = logging.getLogger("bundler")

__all__ = ["ImportResult", "foreign_refused", "not_distributed", "push_images",
           "record_failure"]


@dataclass
class ImportResult:
    """What an import did.

    Attributes:
        targets: the images and where they went.
        skipped_images: names of images whose destination already had the digest.
        blobs_uploaded, blobs_mounted, blobs_present: blob counts per destination repository.
        bytes_uploaded: blob bytes sent.
        skipped_foreign: non-distributable layers not in the bundle, so not pushed.
    """

    targets: list[Target] = field(default_factory=list)
    skipped_images: list[str] = field(default_factory=list)
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_uploaded: int = 0
    skipped_foreign: list[Digest] = field(default_factory=list)


def push_images(
    store: Store,
    targets: list[Target],
    *,
    options: TransportOptions | None = None,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    keep_going: bool = False,
) -> ImportResult:
    """Push the images of a store to their destinations.

    Args:
        store: where the images are read from: a bundle's layout, or a
            :class:`~bundler.stores.registry.RegistrySource` (mirror). Only its read
            verbs are used (``get_manifest``, ``check_blob``, ``has_blob``,
            ``open_blob``); each blob is read once per destination registry (a second
            repository of that registry gets it by a cross-repository mount).
        targets: from :func:`bundler.naming.resolve_targets`.
        options: transport options of the destination registries.
        jobs: concurrent blob transfers.
        reporter: receives progress events.
        stop: set to cancel.
        keep_going: push every image that can be; fail at the end for the others.

    Returns:
        An :class:`ImportResult`.

    Raises:
        TransferError: naming the image and the blob or manifest that failed; nothing is
        tagged for an image whose content did not all arrive.
        PartialFailureError: with ``keep_going``, some images failed (the others were
        pushed; ``.result`` says what was imported).
    """
    report = reporter or NullReporter()
    stop = stop or threading.Event()
    result = ImportResult(targets=list(targets))
    lock = threading.Lock()
    failed: dict[Target, TransferError] = {}

    def fail(items: dict, culprits) -> None:  # type: ignore[no-untyped-def]
        """Fail fast on the first failure, or record every target each failure hits."""
        for item, exc in items.items():
            for target in culprits(item):
                record_failure(failed, target, target.name, exc, report, keep_going)

    with ClientPool(options) as clients:
        # 1. plans from the bundle (digests checked while reading)
        plans: dict[Target, ImagePlan] = {}

        def load(target: Target) -> None:
            plan = walk(target.descriptor, store.get_manifest, name=target.name)
            for blob in plan.blobs.values():  # before a byte is sent: a regular file
                store.check_blob(blob)  # inside the bundle, of its size
            plans[target] = plan

        # concurrently (a registry source reads manifests over the network); every
        # image is planned, so that the failure reported first is the first in order
        loaded = run_parallel(targets, load, jobs=jobs, stop=stop, keep_going=True)
        for target in targets:
            if target in loaded:
                exc = loaded[target]
                if not isinstance(exc, (BundlerError, OSError)):
                    raise exc
                record_failure(failed, target, target.name, exc, report, keep_going)
        if stop.is_set():
            raise Cancelled("cancelled")
        planned = [t for t in targets if t not in failed]

        # 2. what the destinations have: complete images are skipped, their repositories
        #    become mount sources; the other images' blobs are grouped by registry
        foreign = {d: b for t in planned for d, b in plans[t].blobs.items()
                   if not_distributed(store, b)}
        push = plan_push(planned, plans, clients, jobs=jobs, report=report, stop=stop,
                         keep_going=keep_going, head_blobs=False,
                         leave_out=lambda d: d.digest in foreign)
        order = by_size_interleaved([b for b in push.blobs if b not in push.failures])
        result.skipped_images = [t.name for t in push.complete]
        fail(push.failures, lambda key: push.culprits(key, plans))
        todo = [t for t in push.todo if t not in failed]
        for digest in sorted({d for t in todo for d in plans[t].blobs if d in foreign}):
            result.skipped_foreign.append(digest)
            report(Event("blob", str(digest), "skipped", total=foreign[digest].size,
                         detail="non-distributable layer not in the bundle"))

        # 3. blobs: one task per (registry, digest), all repositories that need it; the
        #    worker that finishes an image's last blob pushes its manifests (step 4) at
        #    once, so tagging overlaps the remaining transfers
        waiting: dict[Target, int] = dict.fromkeys(todo, 0)
        needs = {b: [t for t in push.needing(b, plans) if t in waiting] for b in order}
        for blob in order:
            for target in needs[blob]:
                waiting[target] += 1
        tagged: set[Target] = set()
        manifest_failures: dict[Target, BaseException] = {}

        def push_blob(blob: BlobPush) -> None:
            mount_from = blob.mount_from
            if mount_from is None and isinstance(store, MountSource):  # same registry
                mount_from = store.mount_source(blob.registry, blob.descriptor.digest)
            _push_blob(clients.get(blob.registry), store, blob.descriptor, blob.repositories,
                       result, lock, report, stop, mount_from,  # HEADs in the task
                       keep_going=keep_going)
            with lock:
                ready = []
                for target in needs[blob]:
                    waiting[target] -= 1
                    if waiting[target] == 0:
                        ready.append(target)
            for target in ready:
                if stop.is_set():
                    return
                try:
                    push_manifests(target)
                except Exception as exc:
                    with lock:
                        manifest_failures[target] = exc
                    if not keep_going:
                        stop.set()
                else:
                    with lock:
                        tagged.add(target)

        # 4. manifests, children first, then the tag
        def push_manifests(target: Target) -> None:
            dest = target.destination
            client = clients.get(dest.registry)
            plan = plans[target]
            foreign = [d for d in plan.blobs if d in result.skipped_foreign]
            listed = [d for d, b in plan.blobs.items() if b.urls and d not in foreign]
            try:
                for descriptor, item in plan.manifests[:-1]:
                    media_type = item.media_type or descriptor.media_type
                    client.put_manifest(dest.repository, str(descriptor.digest), item.raw,
                                        media_type)
                    report(Event("manifest", str(descriptor.digest), "done", len(item.raw),
                                 len(item.raw)))
                top = plan.top
                client.put_manifest(dest.repository, dest.tag or str(target.descriptor.digest),
                                    top.raw, top.media_type or target.descriptor.media_type)
                report(Event("manifest", str(target.descriptor.digest), "done", len(top.raw),
                             len(top.raw)))
            except RegistryError as exc:
                raise foreign_refused(exc, foreign, listed) from exc
            report(Event("image", target.name, "done", plan.size, plan.size,
                         detail=str(dest)))

        failures = run_parallel(order, push_blob, jobs=jobs, stop=stop, keep_going=keep_going)
        fail(manifest_failures, lambda t: [t])
        for blob, exc in failures.items():  # without keep_going: raises for the first
            hits = blob_culprits(exc, push.needing(blob, plans)) or [(blob.owner, exc)]
            for target, cause in hits:
                record_failure(failed, target, target.name, cause, report, keep_going)

        # images with nothing left to upload, and any a stopped worker left untagged
        rest = [t for t in todo if t not in failed and t not in tagged]
        fail(run_parallel(rest, push_manifests, jobs=jobs, stop=stop, keep_going=keep_going),
             lambda t: [t])
    return finish(result, targets, failed)


def by_size_interleaved(blobs: list[BlobPush]) -> list[BlobPush]:
    """The largest blob, the smallest, the next largest, the next smallest, ...

    The long transfers start at once; a small blob is a few round trips that fills in
    beside them instead of queueing at the end, where it would leave the CPUs idle.
    """
    ranked = sorted(blobs, key=lambda b: b.descriptor.size, reverse=True)
    order: list[BlobPush] = []
    low, high = 0, len(ranked) - 1
    while low <= high:
        order.append(ranked[low])
        if low != high:
            order.append(ranked[high])
        low, high = low + 1, high - 1
    return order


def not_distributed(store: Store, descriptor: Descriptor) -> bool:
    """True for a non-distributable (foreign) layer the bundle does not hold: it is not
    pushed, and the manifest that references it is pushed all the same.

    Args:
        store: the bundle.
        descriptor: a blob descriptor of one of its images.

    Returns:
        Whether the blob is left out on purpose.

    Spec: image-spec ``layer.md`` "Non-Distributable Layers".
    """
    return is_non_distributable(descriptor) and not store.has_blob(descriptor.digest)


def foreign_refused(exc: RegistryError, foreign: list[Digest],
                    listed: list[Digest] | None = None) -> RegistryError:
    """``exc`` (a refused manifest push), told apart when the manifest references
    non-distributable layers that were not pushed, or layers whose descriptors list
    ``urls`` (pushed or not): some registries refuse those.

    Args:
        exc: the error of the manifest push.
        foreign: the image's non-distributable layers that were not pushed.
        listed: the image's layers that were pushed and whose descriptors list ``urls``
            (a foreign layer the bundle holds).

    Returns:
        ``exc`` itself, or a RegistryError with the same status and codes that says why.

    Spec: image-spec ``layer.md`` "Non-Distributable Layers"; distribution
    ``validation.manifests.urls``.
    """
    if (not foreign and not listed) or isinstance(exc, TransportError) \
            or exc.status in (401, 403, 404, 429):
        return exc
    if foreign:
        why = (f"the manifest references non-distributable layers the bundle does not hold "
               f"({', '.join(str(d) for d in foreign)}); this registry refuses them")
    else:
        why = (f"the blobs were pushed, but this registry refuses the layer URLs of "
               f"{', '.join(str(d) for d in listed or [])}")
    return RegistryError(
        f"{exc} ({why}: it must accept foreign layer URLs, e.g. "
        f"distribution's validation.manifests.urls.allow)",
        status=exc.status, codes=exc.codes, url=exc.url, registry=exc.registry,
    )


class BlobFailures(BundlerError):
    """A blob that could not be placed in some destination repositories of one registry
    (the others, if any, got it).

    Attributes:
        errors: repository -> the error of that repository (first one first).
    """

    def __init__(self, errors: dict[str, BaseException]) -> None:
        self.errors = errors
        super().__init__(str(next(iter(errors.values()))))

    def culprits(self, targets: list[Target]) -> list[tuple[Target, BaseException]]:
        """Each of ``targets`` whose destination repository failed, with its error."""
        return [(t, self.errors[t.destination.repository]) for t in targets
                if t.destination.repository in self.errors]


def blob_culprits(exc: BaseException, targets: list[Target]) -> list[tuple[Target, BaseException]]:
    """The images a failed blob task fails: those whose repository failed (a
    :class:`BlobFailures`), else all of ``targets`` (the blob failed as a whole)."""
    if isinstance(exc, BlobFailures):
        return exc.culprits(targets)
    return [(t, exc) for t in targets]


def record_failure(failed: dict, key: object, name: str, exc: BaseException, report: Reporter,
                   keep_going: bool) -> None:
    """Raise at once (fail fast), or record the first failure of ``key`` and report it.

    Raises:
        TransferError: naming ``name`` and wrapping ``exc``, unless ``keep_going``.
    """
    error = exc if isinstance(exc, TransferError) else TransferError(name, exc)
    if not keep_going:
        if error is exc:
            raise error
        raise error from exc
    if key not in failed:
        failed[key] = error
        report(Event("image", name, "failed", detail=str(exc)))


def finish(result: ImportResult, targets: list[Target], failed: dict) -> ImportResult:
    """Drop the failed targets from ``result``; the result, or PartialFailureError.

    Raises:
        PartialFailureError: some targets failed (``.result`` lists the others).
    """
    if not failed:
        return result
    result.targets = [t for t in result.targets if t not in failed]
    result.skipped_images = [n for n in result.skipped_images
                             if any(t.name == n for t in result.targets)]
    raise PartialFailureError([failed[t] for t in targets if t in failed], result)


def _push_blob(
    client: RegistryClient,
    store: Store,
    descriptor: Descriptor,
    repositories: list[str],
    result: ImportResult,
    lock: threading.Lock,
    report: Reporter,
    stop: threading.Event,
    known_source: str | None = None,
    present: list[str] | None = None,
    keep_going: bool = False,
) -> None:
    """Climb the blob ladder in one registry: present (skip) -> mount -> upload.

    ``store`` is anything with ``open_blob(descriptor)`` (a layout, or a one-shot
    archive member); ``present`` lists the repositories known to have the blob
    already (None: ask each with HEAD). A refused mount falls back to an upload.

    Raises:
        BlobFailures: the blob could not be placed in some repositories (with
        ``keep_going`` the others are still tried; without it the first failure ends).
        Cancelled: ``stop`` was set.
    """
    digest, size = descriptor.digest, descriptor.size
    name = str(digest)
    if present is None:
        present = [r for r in repositories if client.has_blob(r, digest)]
    with lock:
        result.blobs_present += len(present)
    if len(present) == len(repositories):
        report(Event("blob", name, "skipped", total=size))
        return

    def open_source():  # type: ignore[no-untyped-def]
        def chunks():  # type: ignore[no-untyped-def]
            with store.open_blob(descriptor) as reader:
                for chunk in reader:
                    if stop.is_set():
                        raise Cancelled("cancelled")
                    report(Event("blob", name, "progress", len(chunk), size))
                    yield chunk
        return chunks()

    source_repo = present[0] if present else known_source
    errors: dict[str, BaseException] = {}
    for repository in repositories:
        if repository in present:
            continue
        try:
            upload_url = ""
            if source_repo is not None:
                try:
                    mounted = client.mount_blob(repository, digest, source_repo)
                except RegistryError as exc:  # the bytes are at hand: upload them instead
                    _log.info("%s: mount into %s failed (%s); uploading instead", name,
                              repository, exc)
                    mounted = ""
                if mounted is None:
                    with lock:
                        result.blobs_mounted += 1
                    report(Event("blob", name, "mounted", total=size, detail=repository))
                    continue
                upload_url = mounted
            report(Event("blob", name, "start", total=size, detail=repository))
            client.put_blob(repository, digest, size, open_source, upload_url=upload_url)
            with lock:
                result.blobs_uploaded += 1
                result.bytes_uploaded += size
            report(Event("blob", name, "done", size, size, detail=repository))
            source_repo = repository  # surely holds it now
        except Cancelled:
            raise
        except Exception as exc:
            report(Event("blob", name, "failed", total=size,
                         detail=f"{repository}: {str(exc) or type(exc).__name__}"))
            errors[repository] = exc
            if not keep_going or stop.is_set():
                break
    if errors:
        raise BlobFailures(errors) from next(iter(errors.values()))

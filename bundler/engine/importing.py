"""Import and mirror: push the images of a random-access store into registries.

The store is anything with the :class:`~bundler.stores.Store` read protocol: a bundle's
layout (``bundler import DIR``) or images read on demand from source registries
(:class:`~bundler.stores.registry.RegistrySource`, ``bundler mirror``); the engine is the
same. It is the random-access driver of the push engine
(:class:`~bundler.engine.push.PushRun`): it chooses the order of the blobs and moves
``jobs`` of them at once (:func:`transfer`, which an export runs too, into a bundle). A blob from a registry source streams from the source response
into the destination upload, nothing written to disk.

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

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from ..events import Event, NullReporter, Reporter
from ..oci.content import Descriptor, is_non_distributable
from ..oci.digest import Digest
from ..registry.client import TransportOptions
from ..stores import Store
from .destination import RegistryDestination
from .ladder import BlobSource
from .naming import Target
from .parallel import ClientPool, run_parallel
from .push import ImportResult, PushRun, foreign_refused, record_failure
from .pushplan import BlobPush, PlanMemo


class OmittedBlobs(Protocol):
    """What a differential import tells the push (implemented by
    :class:`~bundler.engine.chain_import.ImportChain`): the answers its check got, the
    blobs the bundle omits, and where their bytes come from."""

    memo: PlanMemo

    @property
    def omitted(self) -> Mapping[Digest, int]:
        """The digests the bundle omits, with their sizes (bytes)."""
        ...

    def apply(self, pending: Sequence[BlobPush]) -> None:
        """Hand the check's answers to the pending blobs of a round."""
        ...

    def source(self, digest: Digest, store: BlobSource) -> BlobSource:
        """Where a blob's bytes come from (``store``, or the base bundle)."""
        ...

__all__ = ["ImportResult", "by_size_interleaved", "foreign_refused", "not_distributed",
           "push_images", "record_failure", "transfer"]


def push_images(
    store: Store,
    targets: list[Target],
    *,
    options: TransportOptions | None = None,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    keep_going: bool = False,
    chain: OmittedBlobs | None = None,
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
        chain: a differential bundle's check, made before the first round
            (:meth:`~bundler.engine.chain_import.ImportChain.check_store`): its answers serve the plan, and the blobs
            the bundle omits come from the base (or are mounted, or are there).

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
    with ClientPool(options) as clients:
        run = PushRun(RegistryDestination(clients, chain.memo if chain else None),
                      report=report, stop=stop, keep_going=keep_going)
        omitted = chain.omitted if chain else {}
        # 1. plans from the store (digests checked while reading); before a byte is
        #    sent, each blob is checked (a layout: a regular file inside it, of its size)
        #    but those a differential bundle omits
        run.plan(targets, store.get_manifest, jobs=jobs,
                 check_blob=lambda b: None if b.digest in omitted else store.check_blob(b))
        # 2. what the destinations have; foreign layers the store lacks are left out
        foreign = {d: b for t in run.plans for d, b in run.plans[t].blobs.items()
                   if not_distributed(store, b)}
        run.check_destinations(jobs=jobs, head_blobs=False,
                               leave_out=lambda d: d.digest in foreign)
        for digest in sorted({d for t in run.todo for d in run.plans[t].blobs
                              if d in foreign}):
            run.result.skipped_foreign.append(digest)
            report(Event("blob", str(digest), "skipped", total=foreign[digest].size,
                         detail="non-distributable layer not in the bundle"))
        # 3. blobs in the order chosen here, ``jobs`` at once; the task that places an
        #    image's last blob pushes its manifests and tag, overlapping the transfers
        if chain is not None:
            chain.apply(run.pending)
        transfer(run, by_size_interleaved(run.pending),
                 (lambda blob: chain.source(blob.digest, store)) if chain else lambda blob: store,
                 jobs=jobs)
    return run.finish()


def transfer(run: PushRun, order: list[BlobPush], source_of: Callable[[BlobPush], BlobSource],
             *, jobs: int) -> None:
    """Move the pending blobs of a planned run from a random-access source, ``jobs`` at
    once, then push the manifests of the images that had nothing to move (the driver of
    import, mirror and export).

    Args:
        run: after :meth:`PushRun.check_destinations`.
        order: the blobs of ``run.pending`` in the order to start them.
        source_of: where a blob is read from (export: bound to the first image that
            references it, whose repository serves it).
        jobs: concurrent blob transfers.

    Raises:
        TransferError: the first failure, unless the run keeps going (then recorded).
        Cancelled: the run's ``stop`` was set.
    """
    run.settle(run_parallel(order, lambda blob: run.push_blob(blob, source_of(blob)),
                            jobs=jobs, stop=run.stop, keep_going=run.keep_going))
    # images with nothing to move, and any a stopped worker left without manifests
    run.settle(run_parallel(run.ready(), run.push_manifests, jobs=jobs, stop=run.stop,
                            keep_going=run.keep_going))


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



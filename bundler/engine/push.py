"""The one transfer engine: export, import, mirror, copy and the one-pass archive import.

A :class:`PushRun` puts images into a :class:`~bundler.engine.destination.Destination`,
every digest preserved: registries (:class:`~bundler.engine.destination.RegistryDestination`:
import, mirror, archive import) or a bundle being written
(:class:`~bundler.engine.bundle_destination.BundleDestination`: export). Its driver tells
it what to move and in which order the blobs become available:

1. :meth:`PushRun.plan` walks each image (index -> manifests -> config and layers) into
   an :class:`~bundler.oci.graph.ImagePlan`;
2. :meth:`PushRun.check_destinations` asks the destination what it has
   (:meth:`Destination.plan`): complete images are skipped, the other images' blobs
   become :attr:`PushRun.pending`, one :class:`BlobPush` per (registry, digest);
3. the driver hands each pending blob to :meth:`PushRun.push_blob` with a source to read
   it from, in the order the blobs arrive: a random-access source
   (:func:`bundler.engine.importing.transfer`: a layout, registries) runs ``jobs`` of them
   at once in the order its driver chose; an archive read once
   (:mod:`bundler.engine.archive_import`) hands each blob over as its member goes by.
   The blob climbs the ladder of :func:`~bundler.engine.ladder.climb`;
4. when the last blob of an image is in place its manifests are put, children first.
   With ``tags_last=False`` the top manifest goes at once by tag (or by digest): the
   image is done. With ``tags_last=True`` it goes by digest, and :meth:`PushRun.tag`
   moves the tag later (an archive import: once the whole archive was read and checked;
   an export: its ``index.json`` entry, written last for all images).

Failures: without ``keep_going`` the first one raises a
:class:`~bundler.errors.TransferError` naming the image; with it, each failed image is
recorded (an ``image failed`` event), is not tagged, and :meth:`PushRun.finish` raises
one :class:`~bundler.errors.PartialFailureError`. An unsafe archive member
(:class:`~bundler.errors.UnsafeArchiveError`) ends the run whatever the mode.

Spec: distribution-spec "Pushing blobs", "Mounting a blob from another repository",
"Pushing manifests"; image-spec ``image-layout.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from ..errors import (
    BundlerError,
    Cancelled,
    PartialFailureError,
    RegistryError,
    TransferError,
    UnsafeArchiveError,
)
from ..events import Event, Reporter
from ..oci.content import Descriptor, Index, Manifest
from ..oci.digest import Digest
from ..oci.graph import ImagePlan, walk
from ..stores import MountSource
from .destination import BundleEntry, Destination, StagedManifests, foreign_refused, sparse_refused
from .ladder import BlobFailures, BlobSource, ImportResult, blob_culprits, climb
from .naming import Target
from .parallel import run_parallel
from .pushplan import BlobPush, PushPlan
from .referrers import subject_of

__all__ = ["ImportResult", "PushRun", "foreign_refused", "record_failure", "shown"]


class PushRun:
    """One transfer of images into a destination (see the module docstring).

    Args:
        destination: registries, or a bundle.
        report: receives progress events. stop: set to cancel.
        keep_going: push every image that can be; fail at the end for the others.
        tags_last: push top manifests by digest and leave the tags to :meth:`tag`.

    Attributes:
        result: what was done so far (an :class:`ImportResult`).
        plans: each planned image's manifests and blobs.
        todo: the images still to push (not complete, not failed), in the order given.
        pending: the blobs some repository still needs, one per (registry, digest).
        remaining: per image of ``todo``, the digests still to be placed.
        failed: image -> its first failure (with ``keep_going``).
    """

    def __init__(self, destination: Destination, *, report: Reporter, stop: threading.Event,
                 keep_going: bool = False, tags_last: bool = False,
                 referrers_last: bool = False) -> None:
        self.destination, self.report, self.stop = destination, report, stop
        self.keep_going, self.tags_last = keep_going, tags_last
        self.referrers_last = referrers_last
        self.result = ImportResult()
        self.lock = threading.Lock()
        self.targets: list[Target] = []
        self.plans: dict[Target, ImagePlan] = {}
        self.todo: list[Target] = []
        self.pending: list[BlobPush] = []
        self.remaining: dict[Target, set[Digest]] = {}
        self.failed: dict[Target, TransferError] = {}
        self.pushed: set[Target] = set()  # manifests pushed (and tagged, unless tags_last)
        self._users: dict[tuple[str, Digest], list[Target]] = {}
        self._headed = False
        self._journaled: set[tuple[str, str]] = set()  # see PushPlan.journaled
        self._first: BaseException | None = None

    # -- failures --------------------------------------------------------------------
    def fail(self, targets: Iterable[Target], exc: BaseException) -> None:
        """Fail fast, or record each of ``targets`` as failed and drop it from ``todo``.

        Raises:
            TransferError: naming the first target, unless ``keep_going``.
            UnsafeArchiveError: ``exc`` is (or wraps) one: no image can go on.
        """
        cause = exc.__cause__ if isinstance(exc, TransferError) else exc
        if isinstance(cause, UnsafeArchiveError):
            raise cause  # the archive itself: no image can go on
        with self.lock:
            for target in targets:
                try:
                    record_failure(self.failed, target, target.name, exc, self.report,
                                   self.keep_going)
                except TransferError as error:
                    self._first = self._first or error
                    raise
            self.todo = [t for t in self.todo if t not in self.failed]

    def settle(self, failures: dict) -> None:
        """After a :func:`run_parallel` of this run's tasks: raise the failure that
        stopped it, or record a task's unexpected error against its images.

        Args:
            failures: task (a :class:`BlobPush` or a :class:`Target`) -> its exception.

        Raises:
            TransferError: the first failure, unless ``keep_going``.
        """
        if self._first is not None:  # fail fast: the first failure, not a later one
            raise self._first
        for task, exc in failures.items():
            if isinstance(task, BlobPush):
                self.fail(self.needing(task.digest, task.registry) or [task.owner], exc)
            else:
                self.fail([task], exc)

    def needing(self, digest: Digest, registry: str | None = None) -> list[Target]:
        """The images still to push that need ``digest`` (in ``registry``, if given)."""
        if registry is not None:
            return [t for t in self._users.get((registry, digest), []) if t not in self.failed]
        return [t for t in self.todo if digest in self.plans[t].blobs]

    # -- planning --------------------------------------------------------------------
    def plan(self, targets: list[Target],
             get_manifest: Callable[[Descriptor], Manifest | Index], *,
             check_blob: Callable[[Descriptor], object] | None = None, jobs: int,
             pool: ThreadPoolExecutor | None = None) -> None:
        """Walk every image; an image that cannot be walked fails.

        Args:
            targets: the images and their destinations, in the order given.
            get_manifest: a manifest or index by descriptor, digest-checked.
            check_blob: called on each blob before anything is sent (a layout's
                :meth:`~bundler.stores.Store.check_blob`), or None.
            jobs: images walked at once (a registry source reads over the network).
            pool: also walks the children of an index at once, when given.

        Raises:
            TransferError: an image failed (the first in order), unless ``keep_going``.
            Cancelled: ``stop`` was set.
        """
        self.targets = list(targets)
        self.result.targets = list(targets)

        def load(target: Target) -> None:
            plan = walk(target.descriptor, get_manifest, name=target.name, pool=pool)
            if check_blob is not None:
                for blob in plan.blobs.values():
                    check_blob(blob)
            with self.lock:
                self.plans[target] = plan

        # every image is planned, so that the failure reported first is the first in order
        loaded = run_parallel(targets, load, jobs=jobs, stop=self.stop, keep_going=True)
        for target in targets:
            if target in loaded:
                exc = loaded[target]
                if not isinstance(exc, (BundlerError, OSError)):
                    raise exc
                self.fail([target], exc)
        if self.stop.is_set():
            raise Cancelled("cancelled")

    def check_destinations(self, *, jobs: int, head_blobs: bool,
                           leave_out: Callable[[Descriptor], bool] | None = None) -> PushPlan:
        """Ask the destinations about the planned images (and, with ``head_blobs``, each
        blob: one that every repository has is counted and reported ``skipped`` now).

        Args:
            jobs: concurrent ``HEAD`` requests.
            head_blobs: ``HEAD`` every blob now (an archive, before its members go by);
                else :meth:`push_blob` asks as it climbs.
            leave_out: blobs not to push at all (non-distributable layers not held).

        Returns:
            The :class:`PushPlan`; ``todo``, ``pending`` and ``remaining`` are set.

        Raises:
            TransferError: a ``HEAD`` failed, unless ``keep_going``.
        """
        planned = [t for t in self.targets if t in self.plans]
        push = self.destination.plan(planned, self.plans, jobs=jobs, report=self.report,
                                     stop=self.stop, keep_going=self.keep_going,
                                     head_blobs=head_blobs, leave_out=leave_out)
        self.result.skipped_images = [t.name for t in push.complete]
        for key, exc in push.failures.items():
            self.fail(push.culprits(key, self.plans), exc)
        self.todo = [t for t in push.todo if t not in self.failed]
        self._headed = head_blobs
        self._journaled = push.journaled
        for blob in push.blobs:
            if blob in push.failures:
                continue
            if head_blobs and not blob.missing:
                with self.lock:
                    self.result.blobs_present += len(blob.present)
                self.report(Event("blob", str(blob.digest), "skipped",
                                  total=blob.descriptor.size))
            else:
                self.pending.append(blob)
                self._users[(blob.registry, blob.digest)] = []
        for target in self.todo:
            registry = target.destination.registry
            self.remaining[target] = left = set()
            for digest in self.plans[target].blobs:
                users = self._users.get((registry, digest))
                if users is not None:
                    users.append(target)
                    left.add(digest)
        return push

    def ready(self, *, referrers: bool = True) -> list[Target]:
        """The images of ``todo`` whose blobs are all in place but whose manifests have
        not been pushed yet (nothing to upload, or a stopped run left them), in order;
        ``referrers=False`` leaves out the referrers that :meth:`waits` holds back."""
        return [t for t in self.todo if not self.remaining[t] and t not in self.pushed
                and (referrers or not self.waits(t))]

    def waits(self, target: Target) -> bool:
        """Whether the image is a referrer held back until the end of the run (with
        ``referrers_last``: its manifests go after every subject's)."""
        return self.referrers_last and subject_of(target.descriptor) is not None

    # -- pushing ---------------------------------------------------------------------
    def push_blob(self, blob: BlobPush, source: BlobSource) -> None:
        """Place one blob in its registry's repositories, then push the manifests of
        every image whose last blob this was.

        Args:
            blob: from :attr:`pending`.
            source: reads the blob (a store, or a one-shot archive member); a
                :class:`~bundler.stores.MountSource` may name a repository to mount from.

        Raises:
            TransferError: a failure, unless ``keep_going`` (else it is recorded).
            Cancelled: ``stop`` was set.
        """
        mount_from = blob.mount_from
        if mount_from is None and isinstance(source, MountSource):  # same registry
            mount_from = source.mount_source(blob.registry, blob.digest)
        try:
            climb(self.destination.get(blob.registry), source, blob.descriptor, blob.repositories,
                  self.result, self.lock, self.report, self.stop, mount_from,
                  blob.present if self._headed or blob.headed else None,
                  keep_going=self.keep_going,
                  new=blob.new)
        except Cancelled:
            raise
        except Exception as exc:
            needing = self.needing(blob.digest, blob.registry)
            hits = blob_culprits(exc, needing)
            if not hits and not isinstance(exc, BlobFailures):
                hits = [(blob.owner, exc)]
            for target, cause in hits:
                self.fail([target], cause)
        ready = []
        with self.lock:
            for target in self._users.get((blob.registry, blob.digest), []):
                left = self.remaining[target]
                if target not in self.failed and blob.digest in left:
                    left.discard(blob.digest)
                    if not left:
                        ready.append(target)
        for target in ready:
            if self.stop.is_set():
                return
            if not self.waits(target):  # a held-back referrer goes with ready() at the end
                self.push_manifests(target)

    def push_manifests(self, target: Target) -> None:
        """Push an image's manifests byte for byte, children first; the top one by tag
        (or by digest), or with ``tags_last`` by digest only.

        Raises:
            TransferError: a push failed, unless ``keep_going`` (else it is recorded).
        """
        dest = target.destination
        client = self.destination.get(dest.registry)
        plan = self.plans[target]
        last = False
        try:
            for n, (descriptor, item) in enumerate(plan.manifests, 1):
                last = n == len(plan.manifests)
                reference = (dest.tag or str(descriptor.digest)) if last and not self.tags_last \
                    else str(descriptor.digest)
                client.put_manifest(dest.repository, reference, item.raw,
                                    item.media_type or descriptor.media_type)
                if not isinstance(client, StagedManifests):  # else reported when stored
                    self.report(Event("manifest", str(descriptor.digest), "done",
                                      len(item.raw), len(item.raw)))
        except Cancelled:
            raise
        except Exception as exc:
            self.fail([target], self._refused(target, exc, top=last))
            return
        with self.lock:
            self.pushed.add(target)
        if not self.tags_last:
            self.report(Event("image", target.name, "done", plan.size, plan.size,
                              detail=shown(dest)))

    def tag(self, target: Target) -> None:
        """With ``tags_last``: push the top manifest by tag (if the destination has one);
        the image is done.

        Raises:
            TransferError: the push failed, unless ``keep_going`` (else it is recorded).
        """
        dest, plan = target.destination, self.plans[target]
        try:
            if dest.tag:
                self.destination.get(dest.registry).put_manifest(
                    dest.repository, dest.tag, plan.top.raw,
                    plan.top.media_type or target.descriptor.media_type)
        except BundlerError as exc:
            self.fail([target], self._refused(target, exc, top=True))
            return
        self.report(Event("image", target.name, "done", plan.size, plan.size,
                          detail=shown(dest)))

    def _refused(self, target: Target, exc: BaseException, *, top: bool) -> BaseException:
        """A refused manifest push, told apart when the image has foreign layers, or
        when it was the top index of a sparse image (``top``)."""
        if not isinstance(exc, RegistryError):
            return exc
        if top and self.plans[target].omitted:
            return sparse_refused(exc, self.plans[target])
        blobs = self.plans[target].blobs
        foreign = [d for d in blobs if d in self.result.skipped_foreign]
        listed = [d for d, b in blobs.items() if b.urls and d not in foreign]
        return foreign_refused(exc, foreign, listed)

    def finish(self) -> ImportResult:
        """The result, without the failed images.

        Raises:
            PartialFailureError: some images failed (``.result`` lists the others).
        """
        result, failed = self.result, self.failed
        self._end_new()
        if not failed:
            return result
        result.targets = [t for t in result.targets if t not in failed]
        result.skipped_images = [n for n in result.skipped_images
                                 if any(t.name == n for t in result.targets)]
        raise PartialFailureError([failed[t] for t in self.targets if t in failed], result)


    def _end_new(self) -> None:
        """Tell the upload journal that the repositories this run found new (or an
        earlier, cut run left) are done with: every image pushed there is tagged (one with
        a failed image stays recorded, so a later run asks about its blobs)."""
        if not self._journaled:
            return
        failed = {(t.destination.registry, t.destination.repository) for t in self.failed}
        done = [key for key in self._journaled if key not in failed]
        for registry in {registry for registry, _ in done}:
            journal = getattr(getattr(self.destination.get(registry), "options", None),
                              "journal", None)
            if journal is not None:
                journal.end([key for key in done if key[0] == registry])


def shown(destination: object) -> str | None:
    """The ``detail`` of an image event: where the image went; None for a bundle entry
    (the image's own name, already the event's ``name``)."""
    return None if isinstance(destination, BundleEntry) else str(destination)


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

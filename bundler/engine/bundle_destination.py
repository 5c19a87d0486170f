"""A bundle being written, as a destination of the push engine: what an export puts
images into.

:class:`BundleDestination` gives the verbs of a
:class:`~bundler.engine.destination.DestinationStore` over a
:class:`~bundler.stores.BundleStore` (a :class:`~bundler.stores.layout.LayoutStore`
directory or an :class:`~bundler.stores.archive_export.ArchiveExport`):

- the plan: no image is complete (each gets its ``index.json`` entry again); a blob the
  bundle holds with its size is ``skipped`` (reported before the ``plan`` event, whose
  total is the bytes still to fetch); each other distinct blob is fetched once, from
  the first image that references it;
- ``put_blob``: the store streams the blob from the source, from the offset a partial
  file of an earlier run reached, and checks size and digest while writing. In a
  directory a blob that arrived damaged is fetched once more (an archive's writer may
  have begun its member, so there it fails). A non-distributable layer the source does
  not serve is left out (:class:`~bundler.engine.destination.LeftOut`);
- ``put_manifest``: a manifest by digest is kept (:class:`StagedManifests`) and stored by
  :meth:`BundleDestination.store_manifests` after every blob; by tag it is the image's
  ``index.json`` entry, which the export driver writes last, for all images at once
  (:meth:`~bundler.stores.BundleStore.write_index`).

Spec: image-spec ``image-layout.md``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import IntegrityError, InvalidReferenceError, NotFoundError
from ..events import Event, Reporter
from ..oci.content import CONTAINERD_NAME, REF_NAME, Descriptor, is_non_distributable
from ..oci.digest import Digest
from ..oci.graph import ImagePlan
from ..oci.platforms import sparse_annotations
from ..stores import BundleStore
from ..stores.layout import LayoutStore
from .destination import DestinationStore, LeftOut
from .naming import Target
from .parallel import raise_first, run_parallel
from .pushplan import BlobPush, PushPlan
from .referrers import referrer_annotations

_log = logging.getLogger("bundler")

__all__ = ["UNNAMED", "BundleDestination", "named_entries"]

#: ``entry_names`` value of an image written without a name (``oci:DIR`` with no
#: ``:NAME``, as skopeo writes it): its ``index.json`` entry has no annotations.
UNNAMED = ""


class BundleDestination:
    """A :class:`~bundler.stores.BundleStore` as the destination of a push (see the
    module docstring): one "registry" and one "repository", both ``""``.

    Args:
        store: the bundle being written (the caller opens, locks and closes it).
        report: receives the events of the plan, of damaged blobs fetched again, and of
            the manifests stored.
        refetch: fetch a blob that arrived damaged in a directory once more (False: a
            source read once cannot give it again).

    Attributes:
        reused: blobs the bundle held already (by size).
        fetched: the blobs stored in this run, in the order they landed.
        bytes_fetched: blob bytes fetched in this run.
        damaged: blobs that arrived damaged once and were fetched again.
        skipped_foreign: non-distributable layers the source did not serve.
    """

    def __init__(self, store: BundleStore, report: Reporter, *, refetch: bool = True) -> None:
        self.store, self.report, self.refetch = store, report, refetch
        self.reused = 0
        self.fetched: list[Digest] = []
        self.bytes_fetched = 0
        self.damaged: list[Digest] = []
        self.skipped_foreign: list[Digest] = []
        self._descriptors: dict[Digest, Descriptor] = {}
        self._manifests: dict[Digest, bytes] = {}
        self._lock = threading.Lock()

    # -- the Destination protocol ------------------------------------------------------
    def get(self, registry: str) -> DestinationStore:
        """Itself: a bundle is its one destination."""
        return self

    def plan(self, targets: list[Target], plans: dict[Target, ImagePlan], *, jobs: int,
             report: Reporter, stop: threading.Event | None = None, keep_going: bool = False,
             head_blobs: bool = True,
             leave_out: Callable[[Descriptor], bool] | None = None) -> PushPlan:
        """Every image to write; each distinct blob the bundle lacks, once, from the
        first image (in order) that references it.

        Reports ``blob skipped`` for each blob held, then the ``plan`` event (``export``,
        the bytes to fetch, the image count), then ``image start`` for each image.

        Args:
            targets, plans: the images and their plans. jobs, stop, keep_going,
                head_blobs: unused (asking the bundle is a ``stat``).
            report: receives the events. leave_out: blobs not to fetch at all.

        Returns:
            A :class:`~bundler.engine.pushplan.PushPlan` with nothing complete; a held
            blob is not in it.

        Raises:
            UnsafeBundleError: a blob of the bundle is no regular file.
        """
        push = PushPlan(todo=list(targets))
        seen: set[Digest] = set()
        for target in targets:
            for digest, descriptor in plans[target].blobs.items():
                if digest in seen or (leave_out is not None and leave_out(descriptor)):
                    continue
                seen.add(digest)
                self._descriptors[digest] = descriptor
                if self.store.has_blob(digest, descriptor.size):
                    self.reused += 1
                    report(Event("blob", str(digest), "skipped", total=descriptor.size))
                else:
                    push.blobs.append(BlobPush("", descriptor, [""], target))
        report(Event("plan", "export", "start", images=len(targets),
                     total=sum(b.descriptor.size for b in push.blobs)))
        for target in targets:
            report(Event("image", target.name, "start", total=plans[target].size))
        return push

    # -- the DestinationStore verbs -----------------------------------------------------
    def resolve(self, repository: str, identifier: str) -> Digest | None:
        """None: an export writes every image's entry again (see :meth:`plan`)."""
        return None

    def has_blob(self, repository: str, digest: Digest) -> bool:
        """Whether the bundle holds the blob (with its planned size, if planned)."""
        descriptor = self._descriptors.get(digest)
        return self.store.has_blob(digest, descriptor.size if descriptor else None)

    def put_blob(self, repository: str, digest: Digest, size: int,
                 open_source: Callable[..., Iterable[bytes]], *, upload_url: str = "") -> int:
        """Store the blob, streamed by ``open_source(offset)`` (see the module docstring).

        Returns:
            Bytes fetched (0: it was there, another export into this directory wrote it).

        Raises:
            IntegrityError: wrong size or digest (in a directory: a second time).
            LeftOut: a non-distributable layer the source does not serve.
            NotFoundError, RegistryError, TransportError, BundleError: as the source and
            the store raise them.
        """
        opened: list[Any] = []

        def open_at(offset: int) -> Iterable[bytes]:
            chunks = open_source(offset)
            opened.append(chunks)
            return chunks

        try:
            try:
                fetched = self.store.put_blob(digest, size, open_at)
            except IntegrityError as exc:  # damaged on the way: once more
                if not isinstance(self.store, LayoutStore) or not self.refetch:
                    raise  # an archive's writer may have begun the member already
                _log.info("%s: %s; downloading it again", digest, exc)
                with self._lock:
                    self.damaged.append(digest)
                self.report(Event("blob", str(digest), "start", total=size))
                fetched = self.store.put_blob(digest, size, open_at)
        except NotFoundError as exc:
            descriptor = self._descriptors.get(digest)
            if descriptor is None or not is_non_distributable(descriptor):
                raise
            with self._lock:
                self.skipped_foreign.append(digest)
            raise LeftOut("non-distributable layer not served by the registry") from exc
        finally:
            for chunks in opened:  # a failed download gives its connection back now
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        with self._lock:
            self.fetched.append(digest)
            self.bytes_fetched += fetched
        return fetched

    def put_manifest(self, repository: str, identifier: str, raw: bytes,
                     media_type: str) -> None:
        """By digest: keep the manifest for :meth:`store_manifests`. By tag: nothing
        more; the tag of a bundle is the image's ``index.json`` entry."""
        try:
            digest = Digest.parse(identifier)
        except InvalidReferenceError:
            return
        with self._lock:
            self._manifests.setdefault(digest, raw)

    def staged_manifests(self) -> dict[Digest, bytes]:
        """The manifests kept by :meth:`put_manifest`, by digest (the
        :class:`~bundler.engine.destination.StagedManifests` ability)."""
        with self._lock:
            return dict(self._manifests)

    # -- committing --------------------------------------------------------------------
    def store_manifests(self, images: list[ImagePlan], *, jobs: int) -> None:
        """Store the kept manifests of ``images`` (every one was put, as the image's
        blobs were all in place; each is fsynced, so they are written side by side),
        reporting a ``manifest done`` event for each, then make every blob of this run
        durable (:meth:`~bundler.stores.BundleStore.sync`).

        Raises:
            TransferError: a manifest could not be stored (naming its digest).
        """
        staged = self.staged_manifests()
        raw = {d.digest: staged[d.digest] for p in images for d, _ in p.manifests}

        def put(digest: Digest) -> None:
            self.store.put_manifest(digest, raw[digest])
            self.report(Event("manifest", str(digest), "done", len(raw[digest]),
                              len(raw[digest])))

        raise_first(run_parallel(list(raw), put, jobs=jobs), list(raw))
        self.store.sync()


def named_entries(images: list[ImagePlan], names: dict[str, str]) -> dict[str, Descriptor]:
    """The ``index.json`` entries of ``images`` (an export's), keyed by name: named by
    their reference (ref.name and containerd's name), or as ``names`` (image name ->
    entry name) says (ref.name only, as skopeo writes it; :data:`UNNAMED`: no
    annotations, keyed by ``@DIGEST``). A referrer's entry says which subject it refers
    to.

    Spec: image-spec ``annotations.md``."""
    entries: dict[str, Descriptor] = {}
    for plan_ in images:
        name = names.get(plan_.name, plan_.name)
        if plan_.name not in names:
            annotations = {REF_NAME: name, CONTAINERD_NAME: name}
        else:
            annotations = {REF_NAME: name} if name != UNNAMED else {}
        annotations.update(referrer_annotations(plan_.descriptor))
        annotations.update(sparse_annotations(plan_.descriptor))
        entries[name or f"@{plan_.descriptor.digest}"] = plan_.descriptor.with_annotations(
            annotations)
    return entries

"""One-pass import of an archive bundle (``.tar``, ``.tar.zst``, volumes, or stdin).

The archive is read once, front to back, and never unpacked to disk. ``index.json``
gives the images and, with ``--to``/``--mapping``, their destinations; the manifests
that follow are parsed and held in memory (bounded by ``max_held`` bytes). Once every
manifest of every image is known, one HEAD per (registry, blob, repository) finds the
blobs the destinations already have; then each blob member is streamed, through the
verifying reader, up the ladder of :mod:`bundler.importing` (present -> mount ->
upload) as it arrives; members nobody needs are read past. When all blobs of an image
are there its manifests are pushed by digest (children first); the tags are pushed
last, after the whole archive has been read and checked, so a damaged or unsafe archive
never moves a tag.

With ``keep_going`` an image whose blob or manifest fails is not tagged, the others
still go, and the failures come back together in one
:class:`~bundler.errors.PartialFailureError`.

Spec: distribution-spec "Pushing blobs", "Mounting a blob from another repository",
"Pushing manifests"; image-spec ``image-layout.md``.
"""

from __future__ import annotations

import os
import threading

from ..errors import (
    BundleError,
    BundlerError,
    Cancelled,
    RegistryError,
    SizeMismatchError,
    TransferError,
    UnsafeArchiveError,
)
from ..events import Event, NullReporter, Reporter
from ..oci.content import Descriptor, is_non_distributable, parse_layout_index
from ..oci.digest import Digest, VerifyingReader
from ..oci.graph import ImagePlan, walk
from ..registry.client import TransportOptions
from ..stores.archive import ArchiveReader, Member
from ..stores.blob_sources import InMemory, OneShot, Teed
from ..stores.layout import check_layout_file
from .archive_check import MAX_HELD, HeadManifests, check_held
from .importing import (
    ImportResult,
    _push_blob,
    blob_culprits,
    finish,
    foreign_refused,
    record_failure,
)
from .naming import Target, resolve_targets
from .parallel import ClientPool
from .pushplan import BlobPush, plan_push

__all__ = ["MAX_HELD", "import_archive"]

#: A blob that must be uploaded more than once is read into memory up to this size,
#: and copied to a temp file beyond it.
IN_MEMORY = 1 << 20


class _Session:
    def __init__(self, where: str, clients: ClientPool, to: str | None,
                 mapping: list[tuple[str, str]] | None, jobs: int, report: Reporter,
                 stop: threading.Event, max_held: int, keep_going: bool = False) -> None:
        self.where, self.clients, self.to, self.mapping = where, clients, to, mapping
        self.jobs, self.report, self.stop, self.max_held = jobs, report, stop, max_held
        self.keep_going = keep_going
        self.failed: dict[Target, TransferError] = {}
        self.result = ImportResult()
        self.lock = threading.Lock()
        self.targets: list[Target] | None = None
        self.graph = HeadManifests(where=where)
        self.held_bytes = 0
        self.plans: dict[Target, ImagePlan] = {}
        self.ready = False
        self.work: dict[Digest, list[BlobPush]] = {}
        self.descriptors: dict[Digest, Descriptor] = {}
        self.remaining: dict[Target, set[Digest]] = {}
        self.todo: list[Target] = []

    # -- failures ------------------------------------------------------------------------
    def _fail(self, targets: list[Target], exc: BaseException) -> None:
        """Fail fast (raise for the first target), or record and drop these targets."""
        cause = exc.__cause__ if isinstance(exc, TransferError) else exc
        if isinstance(cause, UnsafeArchiveError):
            raise cause  # the archive itself: no image can go on
        for target in targets:
            record_failure(self.failed, target, target.name, exc, self.report,
                           self.keep_going)
        self.todo = [t for t in self.todo if t not in self.failed]

    def _needing(self, digest: Digest, registry: str | None = None) -> list[Target]:
        """The targets still to push that need ``digest`` (in ``registry``, if given)."""
        return [t for t in self.todo if digest in self.plans[t].blobs
                and (registry is None or t.destination.registry == registry)]

    # -- members ---------------------------------------------------------------------
    def _hold(self, member: Member) -> bytes:
        wanted = member.digest is None or member.digest in self.graph.missing
        check_held(self.where, member, self.held_bytes, self.max_held, wanted=wanted)
        data = member.file.read()
        self.held_bytes += len(data)
        return data

    def take(self, member: Member) -> None:
        if self.stop.is_set():
            raise Cancelled("cancelled")
        if member.name == "oci-layout":
            check_layout_file(self._hold(member), self.where)
        elif member.name == "index.json":
            entries = parse_layout_index(self._hold(member), self.where)
            self.targets = resolve_targets(entries, to=self.to,
                                           mapping=self.mapping)
            self.result.targets = list(self.targets)
            self.graph.root(t.descriptor for t in self.targets)
            self._advance()
        elif member.digest is not None and self.ready:
            if member.digest in self.work:
                self._push(member.digest, member)
        elif member.digest is not None:
            self.graph.offer(member.digest, self._verified(member.digest, member.size,
                                                           self._hold(member)))
            self._advance()

    def _verified(self, digest: Digest, size: int, data: bytes) -> bytes:
        VerifyingReader([data], digest, size, where=f"{self.where}: {digest}").read()
        return data

    # -- planning ------------------------------------------------------------------------
    def _advance(self) -> None:
        if self.targets is None or self.ready or not self.graph.complete:
            return
        manifests = self.graph.manifests
        for target in self.targets:
            try:
                self.plans[target] = walk(target.descriptor,
                                          lambda d: manifests[d.digest], name=target.name)
            except BundlerError as exc:
                self._fail([target], exc)
        self.ready = True
        self._check_destinations()
        held = self.graph.held
        for digest in [d for d in held if d in self.work]:
            self._push(digest, None, held.pop(digest))
        held.clear()
        for target in self.todo:
            if not self.remaining[target]:
                self._push_manifests(target)

    def _check_destinations(self) -> None:
        """HEAD the images and blobs at their destinations, before any blob arrives."""
        assert self.targets is not None
        planned = [t for t in self.targets if t in self.plans]
        push = plan_push(planned, self.plans, self.clients, jobs=self.jobs, report=self.report,
                         stop=self.stop, keep_going=self.keep_going)
        for key, exc in push.failures.items():
            self._fail(push.culprits(key, self.plans), exc)
        self.result.skipped_images = [t.name for t in push.complete]
        self.todo = [t for t in push.todo if t not in self.failed]
        for blob in push.blobs:
            self.work.setdefault(blob.digest, []).append(blob)
            self.descriptors.setdefault(blob.digest, blob.descriptor)
        for digest in list(self.work):
            if all(not w.missing for w in self.work[digest]):
                self._account_present(digest)
        for target in self.todo:
            self.remaining[target] = {d for d in self.plans[target].blobs if d in self.work}

    def _account_present(self, digest: Digest) -> None:
        for work in self.work.pop(digest):
            with self.lock:
                self.result.blobs_present += len(work.present)
            self.report(Event("blob", str(digest), "skipped",
                              total=self.descriptors[digest].size))

    # -- pushing ---------------------------------------------------------------------------
    def _push(self, digest: Digest, member: Member | None, data: bytes | None = None) -> None:
        descriptor = self.descriptors[digest]
        works = self.work.pop(digest)
        if member is not None and member.size != descriptor.size:
            self._fail(self._needing(digest), SizeMismatchError(
                digest=str(digest), expected=descriptor.size, actual=member.size,
                where=f"{self.where}: {member.name}"))
            return
        works = [w for w in works if self._needing(digest, w.registry)]
        uploads = sum(len(w.repositories) - len(w.present) for w in works)
        where = f"{self.where}: {member.name if member is not None else digest}"
        source: InMemory | OneShot | Teed
        if data is not None:
            source = InMemory(data, where)
        elif uploads > 1 and descriptor.size <= IN_MEMORY:  # read again: keep it at hand
            assert member is not None
            try:
                source = InMemory(self._verified(digest, member.size, member.file.read()),
                                  where)
            except BundlerError as exc:
                self._fail(self._needing(digest), exc)
                return
        elif uploads > 1:  # a refused mount uploads it again: copied as it is first read
            assert member is not None
            try:
                source = Teed(member.file, where)
            except BundlerError as exc:
                self._fail(self._needing(digest), exc)
                return
        else:
            assert member is not None
            source = OneShot(member.file, where)
        try:
            for work in works:
                try:
                    _push_blob(self.clients.get(work.registry), source, descriptor,  # type: ignore[arg-type]
                               work.repositories, self.result, self.lock, self.report,
                               self.stop, work.mount_from,
                               work.present, keep_going=self.keep_going)
                except BundlerError as exc:
                    for target, cause in blob_culprits(exc, self._needing(digest,
                                                                          work.registry)):
                        self._fail([target], cause)
        finally:
            if isinstance(source, Teed):
                source.close()
        for target in list(self.todo):
            left = self.remaining[target]
            if digest in left:
                left.discard(digest)
                if not left:
                    self._push_manifests(target)

    def _push_manifests(self, target: Target) -> None:
        """Children by digest, then the image itself by digest; the tag comes at the end."""
        dest = target.destination
        client = self.clients.get(dest.registry)
        try:
            for descriptor, item in self.plans[target].manifests:
                client.put_manifest(dest.repository, str(descriptor.digest), item.raw,
                                    item.media_type or descriptor.media_type)
                self.report(Event("manifest", str(descriptor.digest), "done", len(item.raw),
                                  len(item.raw)))
        except BundlerError as exc:
            self._fail([target], self._foreign_refused(target, exc))

    def _foreign_refused(self, target: Target, exc: BundlerError) -> BundlerError:
        """A refused manifest push, told apart when the image has foreign layers (see
        :func:`bundler.importing.foreign_refused`)."""
        if not isinstance(exc, RegistryError):
            return exc
        blobs = self.plans[target].blobs
        foreign = [d for d in blobs if d in self.result.skipped_foreign]
        listed = [d for d, b in blobs.items() if b.urls and d not in foreign]
        return foreign_refused(exc, foreign, listed)

    def finish(self) -> ImportResult:
        """After the last member: everything arrived? Then the tags."""
        if self.targets is None:
            raise BundleError(f"{self.where}: the archive has no index.json")
        if not self.ready:
            descriptor = next(iter(self.graph.missing.values()))
            raise BundleError(f"{self.where}: manifest {descriptor.digest} is missing from "
                              "the archive")
        for target in list(self.todo):
            left, blobs = self.remaining[target], self.plans[target].blobs
            if left and all(is_non_distributable(blobs[d]) for d in left):
                with self.lock:  # left out of the archive on purpose: not pushed
                    self.result.skipped_foreign.extend(
                        d for d in sorted(left) if d not in self.result.skipped_foreign)
                left.clear()
                self._push_manifests(target)
            elif left:
                digest = sorted(left)[0]
                self._fail([target], BundleError(
                    f"{self.where}: blob {digest} is missing from the archive"))
        for target in list(self.todo):
            dest, plan = target.destination, self.plans[target]
            try:
                if dest.tag:
                    self.clients.get(dest.registry).put_manifest(
                        dest.repository, dest.tag, plan.top.raw,
                        plan.top.media_type or target.descriptor.media_type)
            except BundlerError as exc:
                self._fail([target], self._foreign_refused(target, exc))
                continue
            self.report(Event("image", target.name, "done", plan.size, plan.size,
                              detail=str(dest)))
        return finish(self.result, self.targets, self.failed)


def import_archive(
    bundle: str | os.PathLike[str],
    *,
    to: str | None = None,
    mapping: list[tuple[str, str]] | None = None,
    options: TransportOptions | None = None,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    max_held: int = MAX_HELD,
    keep_going: bool = False,
    max_zstd_ratio: int | None = None,
) -> ImportResult:
    """Import an archive bundle in one pass (see the module docstring).

    Args:
        bundle: a ``.tar``/``.tar.zst`` file, split volumes (base name or first volume),
            or ``-`` for stdin.
        to: ``REGISTRY[/PREFIX]``. mapping: (source, destination) pairs.
        options: transport options of the destination registries.
        jobs: concurrent HEAD checks.
        reporter: receives progress events. stop: set to cancel.
        max_held: cap in bytes on index.json and manifests held in memory.
        keep_going: push every image that can be; fail at the end for the others.
        max_zstd_ratio: decompressed bytes a ``.tar.zst`` member may take per compressed
            byte (None: :data:`bundler.limits.ZSTD_RATIO_LIMIT`).

    Returns:
        An :class:`ImportResult`.

    Raises:
        UnsafeArchiveError: an unsafe member (before it is used), or a decompression
        bomb (past ``max_zstd_ratio``). BundleError: a damaged,
        truncated or out-of-order archive, a volume checksum mismatch. MappingError: no
        destination. TransferError: an image failed (naming it and the cause).
        PartialFailureError: with ``keep_going``, some images failed (``.result`` says
        what was imported).
    """
    report = reporter or NullReporter()
    stop = stop or threading.Event()
    with ArchiveReader(bundle, max_zstd_ratio=max_zstd_ratio) as reader, \
            ClientPool(options) as clients:
        session = _Session(reader.where, clients, to, mapping, jobs, report, stop, max_held,
                           keep_going)
        for member in reader:
            session.take(member)
        return session.finish()

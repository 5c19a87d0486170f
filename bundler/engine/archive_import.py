"""One-pass import of an archive bundle (``.tar``, ``.tar.zst``, volumes, or stdin).

The archive is a streaming source of the push engine
(:class:`bundler.engine.push.PushRun`): this module turns its members into blob
arrivals; the planning, the ladder, the manifests, the tags and the failures are the
engine's. The same arrivals feed a run another driver planned (:func:`feed_archive`:
``copy oci-archive:F.tar.zst oci:DIR``, an export whose blobs come from the archive).

The archive is read once, front to back, and never unpacked to disk. ``index.json``
gives the images and, with ``--to``/``--mapping``, their destinations; the manifests
that follow are parsed and held in memory (bounded by ``max_held`` bytes). Once every
manifest of every image is known, one HEAD per (registry, blob, repository) finds the
blobs the destinations already have; then each blob member is streamed, through the
verifying reader, up the ladder (present -> mount -> upload) as it arrives, in the
reading thread; members nobody needs are read past. A blob that more than one
repository must receive is held in memory (up to :data:`IN_MEMORY` bytes) or teed to a
temp file. When all blobs of an image are there its manifests are pushed by digest
(children first); the tags are pushed last, after the whole archive has been read and
checked, so a damaged or unsafe archive never moves a tag.

With ``keep_going`` an image whose blob or manifest fails is not tagged, the others
still go, and the failures come back together in one
:class:`~bundler.errors.PartialFailureError`.

Spec: distribution-spec "Pushing blobs", "Mounting a blob from another repository",
"Pushing manifests"; image-spec ``image-layout.md``.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from ..errors import BundleError, BundlerError, Cancelled, SizeMismatchError
from ..events import NullReporter, Reporter
from ..oci.content import is_non_distributable, parse_layout_index
from ..oci.digest import Digest, VerifyingReader
from ..oci.limits import MANIFEST_LIMIT
from ..registry.client import TransportOptions
from ..stores.archive import RECEIPT_MEMBER, ArchiveReader, Member
from ..stores.blob_sources import InMemory, OneShot, Teed
from ..stores.layout import check_layout_file
from .archive_check import MAX_HELD, ONE_PASS_ORDER, HeadManifests, check_held
from .destination import RegistryDestination
from .naming import Target, resolve_targets
from .parallel import ClientPool
from .push import ImportResult, PushRun
from .pushplan import BlobPush
from .receipts import Receipt

if TYPE_CHECKING:
    from .chain_import import ImportChain

__all__ = ["MAX_HELD", "feed_archive", "import_archive"]

#: A blob that must be uploaded more than once is read into memory up to this size,
#: and copied to a temp file beyond it.
IN_MEMORY = 1 << 20


class _ArchiveFeed:
    """The archive as a streaming source of a :class:`PushRun`: members in, blob
    arrivals out.

    Args:
        where: the archive's name, for messages.
        run: the push (``tags_last``).
        to, mapping: the destinations (see :func:`resolve_targets`).
        jobs: concurrent ``HEAD`` requests. max_held: cap in bytes on what is held.
        chain: the receipt side of the import (its receipt member, a differential
            bundle's check once planned); clients: the destination clients.
    """

    def __init__(self, where: str, run: PushRun, to: str | None,
                 mapping: list[tuple[str, str]] | None, jobs: int, max_held: int,
                 chain: ImportChain | None = None, clients: ClientPool | None = None) -> None:
        self.where, self.run, self.to, self.mapping = where, run, to, mapping
        self.jobs, self.max_held = jobs, max_held
        self.chain, self.clients = chain, clients
        self.index_json: bytes | None = None
        self.receipt: Receipt | None = None
        self.targets: list[Target] | None = None
        self.graph = HeadManifests(where=where)
        self.held_bytes = 0
        self.planned = False
        self.work: dict[Digest, list[BlobPush]] = {}  # digest -> its pushes, one a registry
        self.early: dict[Digest, str] = {}  # large members before the last manifest

    # -- members ---------------------------------------------------------------------
    def _hold(self, member: Member) -> bytes:
        wanted = member.digest is None or member.digest in self.graph.missing
        check_held(self.where, member, self.held_bytes, self.max_held, wanted=wanted)
        data = member.file.read()
        self.held_bytes += len(data)
        return data

    def take(self, member: Member) -> None:
        """One member, in archive order: held (``index.json``, manifests, anything that
        comes before the manifests naming it), pushed (a blob to push), or read past.

        Raises:
            BundleError, UnsafeArchiveError: see :func:`import_archive`. Cancelled.
        """
        if self.run.stop.is_set():
            raise Cancelled("cancelled")
        if member.name == "oci-layout":
            check_layout_file(self._hold(member), self.where)
        elif member.name == "index.json" and not self.planned:
            self.index_json = self._hold(member)
            entries = parse_layout_index(self.index_json, self.where)
            self.targets = resolve_targets(entries, to=self.to, mapping=self.mapping)
            self.graph.root(t.descriptor for t in self.targets)
            self._advance()
        elif member.name == RECEIPT_MEMBER:
            self.receipt = Receipt.from_bytes(self._hold(member),
                                              f"{self.where}/{RECEIPT_MEMBER}")
        elif member.digest is not None and self.planned:
            if member.digest in self.work:
                self._arrive(member.digest, member)
        elif member.digest is not None and self._too_early(member):
            self.early[member.digest] = f"{member.name} ({member.size} bytes)"
        elif member.digest is not None:
            self.graph.offer(member.digest, self._verified(member.digest, member.size,
                                                           self._hold(member)))
            self._advance()

    def _too_early(self, member: Member) -> bool:
        """A large member nothing has named yet, before the last manifest: read past
        (refused later if a manifest names it, else ignored with a note)."""
        return (member.digest not in self.graph.missing and member.name != "index.json"
                and (member.size > MANIFEST_LIMIT
                     or self.held_bytes + member.size > self.max_held))

    def _verified(self, digest: Digest, size: int, data: bytes) -> bytes:
        VerifyingReader([data], digest, size, where=f"{self.where}: {digest}").read()
        return data

    def _advance(self) -> None:
        """Once every manifest is known: plan, one HEAD pass, then what was held."""
        if self.targets is None or self.planned or not self.graph.complete:
            return
        manifests = self.graph.manifests
        self.run.plan(self.targets, lambda d: manifests[d.digest], jobs=self.jobs)
        self.planned = True
        needed = {d for plan in self.run.plans.values() for d in plan.blobs}
        for digest, what in self.early.items():
            if digest in needed:  # gone by: nothing was sent yet
                raise BundleError(f"{self.where}: {what} arrived before the manifests that "
                                  f"name it; {ONE_PASS_ORDER}")
            self.run.result.notes.append(f"{self.where}: {what.split(' ')[0]} is named by "
                                         "no manifest of the images imported; it was "
                                         "ignored")
        push = self.run.check_destinations(jobs=self.jobs, head_blobs=True)
        omitted = self._check_chain(push.new_repositories)
        for blob in self.run.pending:
            if blob.digest not in omitted:
                self.work.setdefault(blob.digest, []).append(blob)
        for blob in [b for b in self.run.pending if b.digest in omitted]:
            assert self.chain is not None  # placed now: the archive does not hold them
            self.run.push_blob(blob, self.chain.omitted_source(blob.digest))
        held = self.graph.held
        for digest in [d for d in held if d in self.work]:
            self._arrive(digest, None, held.pop(digest))
        held.clear()
        for target in self.run.ready(referrers=False):
            self.run.push_manifests(target)

    def _check_chain(self, new: set[tuple[str, str]]) -> dict[Digest, int]:
        """The bundle's receipt (checked against ``index.json``; computed for a bundle
        without one) to the chain, and a differential bundle's check: the omitted
        digests, or nothing.

        Raises:
            BundleError: a differential bundle without its receipt, a receipt of another
            ``index.json``. WrongBaseError, MissingBlobsError: see
            :class:`~bundler.engine.chain_import.ImportChain`.
        """
        from .chain_import import checked_receipt

        if self.chain is None or self.clients is None:
            return {}
        assert self.index_json is not None
        receipt = checked_receipt(self.receipt, self.index_json, self.where,
                                  self.graph.manifests)
        if self.chain.receipt is None and receipt is not None:
            self.chain.take_receipt(receipt)
        run = self.run
        self.chain.check(self.clients, run.pending, run.targets, run.plans, headed=True,
                         new=new, jobs=self.jobs, stop=run.stop)
        return self.chain.omitted

    # -- arrivals --------------------------------------------------------------------
    def _arrive(self, digest: Digest, member: Member | None, data: bytes | None = None) -> None:
        """A blob is here (a member being read, or bytes held): up the ladder of each
        registry that needs it, read once (teed when it may be read again)."""
        run = self.run
        works = self.work.pop(digest)
        descriptor = works[0].descriptor
        if member is not None and member.size != descriptor.size:
            run.fail(run.needing(digest), SizeMismatchError(
                digest=str(digest), expected=descriptor.size, actual=member.size,
                where=f"{self.where}: {member.name}"))
            return
        works = [w for w in works if run.needing(digest, w.registry)]
        uploads = sum(len(w.missing) for w in works)
        where = f"{self.where}: {member.name if member is not None else digest}"
        source: InMemory | OneShot | Teed
        try:
            if data is not None:
                source = InMemory(data, where)
            elif uploads > 1 and descriptor.size <= IN_MEMORY:  # read again: keep it at hand
                assert member is not None
                source = InMemory(self._verified(digest, member.size, member.file.read()),
                                  where)
            elif uploads > 1:  # a refused mount uploads it again: copied as first read
                assert member is not None
                source = Teed(member.file, where)
            else:
                assert member is not None
                source = OneShot(member.file, where)
        except BundlerError as exc:
            run.fail(run.needing(digest), exc)
            return
        try:
            for work in works:
                run.push_blob(work, source)
        finally:
            if isinstance(source, Teed):
                source.close()

    def finish(self) -> ImportResult:
        """After the last member: everything arrived? Then the tags.

        Raises:
            BundleError: no ``index.json``, a manifest or blob missing from the archive.
            TransferError, PartialFailureError: see :func:`import_archive`.
        """
        if self.targets is None:
            raise BundleError(f"{self.where}: the archive has no index.json")
        if not self.planned:
            descriptor = next(iter(self.graph.missing.values()))
            raise BundleError(f"{self.where}: manifest {descriptor.digest} is missing from "
                              "the archive")
        self.complete()
        for target in list(self.run.todo):
            self.run.tag(target)
        return self.run.finish()

    def complete(self) -> None:
        """After the last member of a planned run: an image whose blobs did not all
        arrive fails (non-distributable layers left out of the archive are skipped);
        the manifests of the others are put.

        Raises:
            TransferError: an image failed, unless the run keeps going.
        """
        run = self.run
        for target in list(run.todo):
            left, blobs = run.remaining[target], run.plans[target].blobs
            if left and all(is_non_distributable(blobs[d]) for d in left):
                with run.lock:  # left out of the archive on purpose: not pushed
                    run.result.skipped_foreign.extend(
                        d for d in sorted(left) if d not in run.result.skipped_foreign)
                left.clear()
            elif left:
                digest = sorted(left)[0]
                run.fail([target], BundleError(
                    f"{self.where}: blob {digest} is missing from the archive"))
        for target in run.ready():
            run.push_manifests(target)


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
    chain: ImportChain | None = None,
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
        chain: the receipt side (its receipt member read; a differential bundle's
            omitted blobs checked once planned, before the first push, and placed from
            the destination or the base).

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
        run = PushRun(RegistryDestination(clients), report=report, stop=stop,
                      keep_going=keep_going, tags_last=True, referrers_last=True)
        feed = _ArchiveFeed(reader.where, run, to, mapping, jobs, max_held, chain, clients)
        for member in reader:
            feed.take(member)
        return feed.finish()


def feed_archive(run: PushRun, bundle: str | os.PathLike[str], *,
                 max_zstd_ratio: int | None = None) -> None:
    """Read an archive once and hand each pending blob of a planned run (after
    :meth:`PushRun.check_destinations`) over as its member goes by; then put the
    manifests of every image whose blobs all arrived. The driver that planned the run
    (from the archive's head: :func:`~bundler.engine.archive_check.read_head`) commits
    it: an export into a layout or archive (``copy oci-archive:F.tar.zst oci:DIR``).

    Args:
        run: the planned run; its ``index.json`` is not read again.
        bundle: a ``.tar``/``.tar.zst`` file or split volumes (not ``-``: the head was
            read already).
        max_zstd_ratio: see :class:`~bundler.stores.archive.ArchiveReader`.

    Raises:
        UnsafeArchiveError, BundleError: an unsafe, damaged or truncated archive.
        TransferError: an image failed (a blob missing from the archive, damaged),
        unless the run keeps going. Cancelled: the run's ``stop`` was set.
    """
    with ArchiveReader(bundle, max_zstd_ratio=max_zstd_ratio) as reader:
        feed = _ArchiveFeed(reader.where, run, None, None, jobs=1, max_held=MAX_HELD)
        feed.planned = True
        for blob in run.pending:
            feed.work.setdefault(blob.digest, []).append(blob)
        for member in reader:
            feed.take(member)
        feed.complete()

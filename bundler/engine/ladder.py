"""The blob ladder: place one blob in the repositories of one destination that need it
(a registry, or a bundle: one repository, ``""``).

Each repository climbs: it has the blob already (``HEAD``: skip) -> a cross-repository
mount from a repository that holds it (a destination with the
:class:`~bundler.engine.destination.BlobMount` ability) -> the blob streamed from the
source: through the verifying reader into a registry upload, or, into a bundle that
checks it while writing, from the byte offset its partial file reached
(:class:`~bundler.engine.destination.BlobStream`). A refused mount falls back to an
upload; after an upload the repository just filled becomes the mount source of the
next one.

Spec: distribution-spec "Checking if content exists", "Mounting a blob from another
repository", "Pushing blobs".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BundlerError, Cancelled, RegistryError
from ..events import Event, Reporter
from ..oci.content import Descriptor
from ..oci.digest import Digest, VerifyingReader
from .destination import BlobMount, BlobStream, DestinationStore, LeftOut
from .naming import Target

_log = logging.getLogger("bundler")

__all__ = ["BlobFailures", "BlobSource", "ImportResult", "blob_culprits", "climb"]


@dataclass
class ImportResult:
    """What an import did.

    Attributes:
        targets: the images and where they went.
        skipped_images: names of images whose destination already had the digest.
        blobs_uploaded, blobs_mounted, blobs_present: blob counts per destination repository.
        bytes_uploaded: blob bytes sent.
        skipped_foreign: non-distributable layers not in the bundle, so not pushed.
        notes: things the user should know about the source (a manifest bundler built
            for a legacy docker archive, a blob no manifest names), one line each.
        chain: a differential import's check of its base (a
            :class:`~bundler.engine.preflight.ChainReport`), else None.
        receipt: ``registry/repository:tag`` of the registry receipt pushed, or "".
    """

    targets: list[Target] = field(default_factory=list)
    skipped_images: list[str] = field(default_factory=list)
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_uploaded: int = 0
    skipped_foreign: list[Digest] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chain: Any = None
    receipt: str = ""


class BlobSource(Protocol):
    """Where a blob's bytes come from: a :class:`~bundler.stores.Store`, or one of the
    one-shot archive sources of :mod:`bundler.stores.blob_sources`."""

    def open_blob(self, descriptor: Descriptor) -> AbstractContextManager[VerifyingReader]:
        """A verifying reader over the blob (size capped, digest checked at the end)."""
        ...


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
    """The images a failed blob fails: those whose repository failed (a
    :class:`BlobFailures`), else all of ``targets`` (the blob failed as a whole)."""
    if isinstance(exc, BlobFailures):
        return exc.culprits(targets)
    return [(t, exc) for t in targets]


def climb(
    client: DestinationStore,
    source: BlobSource,
    descriptor: Descriptor,
    repositories: list[str],
    result: ImportResult,
    lock: threading.Lock,
    report: Reporter,
    stop: threading.Event,
    known_source: str | None = None,
    present: list[str] | None = None,
    keep_going: bool = False,
    new: frozenset[str] = frozenset(),
) -> None:
    """Climb the blob ladder in one registry: present (skip) -> mount -> upload.

    Args:
        client: the destination registry, or a bundle. Its ``put_blob`` gets
            ``open_source``: ``open_source()`` gives the blob's verified chunks;
            ``open_source(offset)`` its chunks from ``offset``, for a store that checks
            them itself (unverified when ``source`` has the ``BlobStream`` ability).
        source: anything with ``open_blob(descriptor)`` (a layout, a registry source, a
            one-shot archive member, an export's image); opened once per upload.
        descriptor: the blob (digest, size in bytes).
        repositories: the repositories of ``client``'s registry that need it.
        result: counts ``blobs_present``, ``blobs_mounted``, ``blobs_uploaded``,
            ``bytes_uploaded`` (under ``lock``).
        lock: guards ``result``. report: receives ``blob`` events (``skipped``,
            ``mounted``, ``start``, ``progress``, ``done``, ``failed``); ``skipped``
            too for a blob the destination leaves out (:class:`LeftOut`).
        stop: set to cancel (checked between chunks).
        known_source: a repository of this registry known to hold the blob (a mount source).
        present: the repositories known to have the blob already (None: ask each with
            ``HEAD``).
        keep_going: after a failed repository, still try the others.
        new: repositories the registry did not know when the run began (no ``HEAD``:
            they lack the blob).

    Raises:
        BlobFailures: the blob could not be placed in some repositories (with
        ``keep_going`` the others are still tried; without it the first failure ends).
        RegistryError: a ``HEAD`` failed (``present`` None).
        Cancelled: ``stop`` was set.
    """
    digest, size = descriptor.digest, descriptor.size
    name = str(digest)
    if present is None:
        present = [r for r in repositories if r not in new and client.has_blob(r, digest)]
    with lock:
        result.blobs_present += len(present)
    if len(present) == len(repositories):
        report(Event("blob", name, "skipped", total=size))
        return

    def open_source(offset: int | None = None) -> Iterator[bytes]:
        if offset is not None and isinstance(source, BlobStream):  # checked by the store
            return _watched(source.stream_blob(descriptor, offset), name, size, report, stop)
        return _verified(source, descriptor, offset or 0, report, stop)

    source_repo = present[0] if present else known_source
    errors: dict[str, BaseException] = {}
    for repository in repositories:
        if repository in present:
            continue
        try:
            upload_url = ""
            if source_repo is not None and isinstance(client, BlobMount):
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
            report(Event("blob", name, "start", total=size, detail=repository or None))
            try:
                client.put_blob(repository, digest, size, open_source, upload_url=upload_url)
            except LeftOut as why:
                report(Event("blob", name, "skipped", total=size, detail=str(why)))
                continue
            with lock:
                result.blobs_uploaded += 1
                result.bytes_uploaded += size
            report(Event("blob", name, "done", size, size, detail=repository or None))
            source_repo = repository  # surely holds it now
        except Cancelled:
            raise
        except Exception as exc:
            if isinstance(source, BlobStream):  # wrong bytes of a foreign layer: its URL
                exc = source.explain(descriptor, exc)
            why = str(exc) or type(exc).__name__
            report(Event("blob", name, "failed", total=size,
                         detail=f"{repository}: {why}" if repository else why))
            errors[repository] = exc
            if not keep_going or stop.is_set():
                break
    if errors:
        raise BlobFailures(errors) from next(iter(errors.values()))


def _verified(source: BlobSource, descriptor: Descriptor, offset: int, report: Reporter,
              stop: threading.Event) -> Iterator[bytes]:
    """The blob's chunks through the verifying reader from byte ``offset`` (the bytes
    before it read and hashed too), each reported as ``progress``; ends with Cancelled
    once ``stop`` is set."""
    name, size, skip = str(descriptor.digest), descriptor.size, offset
    with source.open_blob(descriptor) as reader:
        for chunk in reader:
            if skip:
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                chunk, skip = chunk[skip:], 0
            if stop.is_set():
                raise Cancelled("cancelled")
            report(Event("blob", name, "progress", len(chunk), size))
            yield chunk


def _watched(chunks: Iterator[bytes], name: str, size: int, report: Reporter,
             stop: threading.Event) -> Iterator[bytes]:
    """``chunks``, each reported as ``progress``; ends with Cancelled once ``stop`` is set.
    Closing it closes ``chunks`` (a transfer cut short gives its connection back now)."""
    try:
        for chunk in chunks:
            if stop.is_set():
                raise Cancelled("cancelled")
            report(Event("blob", name, "progress", len(chunk), size))
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()

"""A registry as a source: the :class:`~bundler.stores.Store` read protocol over images
resolved from registries, read on demand.

:meth:`RegistrySource.resolve` fetches each reference's top manifest or index (an index
stays whole) and names it as an export names a bundle entry (the full normalized source
reference), so the images go through the same naming rules (``--to``, ``--mapping``) and
the same push engine as a bundle's. While the engine walks an image, every manifest it
reads records where its children and blobs are found (registry, repository); a blob is
then streamed from there into the destination through the verifying reader, nothing
written to disk and no blob whole in memory. Manifests are kept as their raw bytes only
(fetched once each).

An export reads through the same class: :meth:`RegistrySource.reuse` names a layout
whose manifests are read instead of fetched (a re-export spends one ``HEAD`` per tag and
no manifest ``GET``), :meth:`RegistrySource.iter_blob` streams a blob from a byte offset
for a writer that verifies it, and :meth:`RegistrySource.foreign_source` reaches a
non-distributable layer through its ``urls`` too (``--include-foreign-layers``).

Spec: distribution-spec "Pulling manifests", "Pulling blobs"; image-spec
``image-layout.md`` (``index.json`` names), ``annotations.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager

from ..errors import SizeMismatchError
from ..oci.content import (
    CONTAINERD_NAME,
    REF_NAME,
    Descriptor,
    Index,
    Manifest,
    is_non_distributable,
    parse_manifest,
)
from ..oci.digest import Digest, VerifyingReader
from ..oci.reference import Reference
from ..registry.foreign import ForeignSource
from ..registry.pool import ClientPool
from ..registry.workers import worker_pool
from .layout import LayoutStore

__all__ = ["RegistrySource"]


class RegistrySource:
    """Images read from registries on demand (the :class:`~bundler.stores.Store`
    protocol).

    Args:
        clients: the source side's clients (its transport options: credentials, TLS,
            retries). The caller closes the pool.

    Thread-safe: the engine reads manifests and blobs from many threads.
    """

    def __init__(self, clients: ClientPool) -> None:
        self.clients = clients
        self._entries: dict[str, Descriptor] = {}
        self._rank: dict[str, int] = {}
        self._raw: dict[Digest, tuple[bytes, str]] = {}
        self._where: dict[Digest, tuple[str, str]] = {}
        self._foreign: dict[Digest, Descriptor] = {}
        self._reuse: LayoutStore | None = None
        self._lock = threading.Lock()

    def __str__(self) -> str:
        registries = sorted({registry for registry, _ in self._where.values()})
        return ", ".join(registries) or "registries"

    def reuse(self, store: LayoutStore | None) -> None:
        """Read the manifests ``store`` already holds from it (digest-checked) instead of
        fetching them; a tag is then resolved with one ``HEAD`` first (a ``GET`` only
        when the answer has no ``Docker-Content-Digest``). None: fetch every manifest.
        """
        self._reuse = store

    def _stored(self, digest: Digest) -> tuple[bytes, str] | None:
        """A manifest's (raw bytes, media type) from the :meth:`reuse` layout, or None.

        Raises:
            BundleError, ManifestError, IntegrityError: held but unreadable or damaged.
        """
        store = self._reuse
        if store is None or not store.has_blob(digest):
            return None
        size = store.blob_path(digest).stat().st_size
        item = store.get_manifest(Descriptor(media_type="", digest=digest, size=size))
        return item.raw, item.media_type

    # -- resolving ------------------------------------------------------------------
    def resolve_one(self, reference: Reference) -> Descriptor:
        """Fetch a reference's top manifest or index and name it after the reference
        (read from the :meth:`reuse` layout instead when it holds it).

        Returns:
            Its descriptor (media type, digest, size, artifact type), annotated with
            ``org.opencontainers.image.ref.name`` and ``io.containerd.image.name`` = the
            full normalized reference, as an export names a bundle entry.

        Raises:
            RegistryError (NotFoundError, AuthenticationError, ...), DigestMismatchError
            (a reference by digest served other bytes), ManifestError.
        """
        client = self.clients.get(reference.registry)
        digest, held = reference.digest, None
        if self._reuse is not None:
            if digest is None:
                digest = client.resolve(reference.repository, reference.identifier)
            held = self._stored(digest) if digest is not None else None
        if held is None:
            raw, media_type, digest = client.get_manifest(reference.repository,
                                                          reference.identifier)
        else:
            raw, media_type = held
        item = parse_manifest(raw, media_type, digest=digest)
        name = str(reference)
        entry = Descriptor(media_type=item.media_type, digest=digest, size=len(raw),
                           artifact_type=item.artifact_type,
                           annotations={REF_NAME: name, CONTAINERD_NAME: name})
        with self._lock:
            self._raw.setdefault(digest, (raw, item.media_type))
            self._where.setdefault(digest, (reference.registry, reference.repository))
            self._entries[name] = entry
        return entry

    def resolve(self, references: Sequence[Reference], *, jobs: int = 8,
                stop: threading.Event | None = None,
                keep_going: bool = False) -> dict[Reference, BaseException]:
        """Resolve every reference (``jobs`` at a time); see :meth:`resolve_one`.

        Args:
            references: parsed references, each once.
            jobs: concurrent manifest requests.
            stop: set to cancel.
            keep_going: resolve every reference even after a failure.

        Returns:
            The failures, reference -> exception (without ``keep_going``, at most the
            first ones; the resolved images are in :meth:`read_index`).
        """
        stop = stop or threading.Event()
        failures: dict[Reference, BaseException] = {}
        with self._lock:  # read_index keeps the order asked, not the order of arrival
            for reference in references:
                self._rank.setdefault(str(reference), len(self._rank))

        def one(reference: Reference) -> None:
            if stop.is_set():
                return
            try:
                self.resolve_one(reference)
            except Exception as exc:
                with self._lock:
                    failures[reference] = exc
                if not keep_going:
                    stop.set()

        with worker_pool(jobs, "bundler-resolve") as pool:
            list(pool.map(one, references))
        return {r: failures[r] for r in references if r in failures}

    # -- the Store protocol -----------------------------------------------------------
    def read_index(self) -> list[Descriptor]:
        """The resolved images, in the order they were asked for."""
        with self._lock:
            names = sorted(self._entries, key=lambda n: self._rank.get(n, len(self._rank)))
            return [self._entries[n] for n in names]

    def get_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        """The manifest or index ``descriptor`` points at, digest- and size-checked.

        Fetched once from the repository its parent (or its reference) was found in
        (unless the :meth:`reuse` layout holds it), then kept as raw bytes. Reading it
        records where its children and blobs are.

        Raises:
            KeyError: a digest no resolved image reaches (a caller's error).
            RegistryError, DigestMismatchError, SizeMismatchError, ManifestError.
        """
        digest = descriptor.digest
        with self._lock:
            held = self._raw.get(digest)
            registry, repository = self._where[digest]
        if held is None:
            held = self._stored(digest)
        if held is None:
            client = self.clients.get(registry)
            raw, served_type, _ = client.get_manifest(repository, str(digest))  # checked
            held = (raw, descriptor.media_type or served_type)
            with self._lock:
                self._raw.setdefault(digest, held)
        raw, media_type = held
        if len(raw) != descriptor.size:
            raise SizeMismatchError(digest=str(digest), expected=descriptor.size,
                                    actual=len(raw),
                                    where=f"manifest {registry}/{repository}@{digest}")
        item = parse_manifest(raw, descriptor.media_type or media_type, digest=digest)
        with self._lock:
            for child in (*item.manifests, *item.blobs):
                self._where.setdefault(child.digest, (registry, repository))
                if is_non_distributable(child):
                    self._foreign.setdefault(child.digest, child)
        return item

    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        """True: a registry source is read on demand. A non-distributable (foreign)
        layer is asked for (``HEAD``), since registries need not serve one.

        Raises:
            RegistryError: the source cannot be asked.
        """
        with self._lock:
            foreign = digest in self._foreign
            where = self._where.get(digest)
        if not foreign or where is None:
            return True
        return self.clients.get(where[0]).has_blob(where[1], digest)

    def check_blob(self, descriptor: Descriptor) -> bool:
        """True: the blob is checked while it streams (see :meth:`open_blob`)."""
        return True

    def mount_source(self, registry: str, digest: Digest) -> str | None:
        """The repository of ``registry`` this source reads the blob from, if it is that
        registry: a push there mounts the blob from it instead of copying its bytes (the
        :class:`~bundler.stores.MountSource` ability).

        Spec: distribution-spec "Mounting a blob from another repository".
        """
        with self._lock:
            where = self._where.get(digest)
        return where[1] if where is not None and where[0] == registry else None

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        """Stream the blob from the repository it was found in, through the verifying
        reader (size and digest checked while streaming; a cut download resumes with
        ``Range``, see :meth:`RegistryClient.iter_blob`).

        Raises:
            KeyError: a digest no walked manifest references (a caller's error).
            NotFoundError, RegistryError: cannot be fetched. IntegrityError (while
            reading): wrong bytes.
        """
        digest = descriptor.digest
        registry, repository = self._location(digest, None)
        chunks = self.iter_blob(descriptor)
        try:
            yield VerifyingReader(chunks, digest, descriptor.size,
                                  where=f"{registry}/{repository}@{digest}")
        finally:
            chunks.close()  # a transfer cut short gives its connection back at once

    def _location(self, digest: Digest, reference: Reference | None) -> tuple[str, str]:
        """(registry, repository) to read ``digest`` from: ``reference``'s, else where a
        walked manifest referenced it first."""
        if reference is not None:
            return reference.registry, reference.repository
        with self._lock:
            return self._where[digest]

    def iter_blob(self, descriptor: Descriptor, offset: int = 0, *,
                  reference: Reference | None = None) -> Generator[bytes, None, None]:
        """The blob's bytes from byte ``offset``, unverified: for a writer that checks
        them itself (an export's :meth:`~bundler.stores.BundleStore.put_blob`, which
        holds the first ``offset`` bytes). A cut download resumes with ``Range``.

        Args:
            descriptor: the blob's descriptor (digest).
            offset: bytes to leave out at the start.
            reference: an image that references the blob: read from its repository
                (default: the repository a walked manifest first referenced it from).

        Raises:
            KeyError: no ``reference`` and no walked manifest references the blob (a
            caller's error). When read: NotFoundError, RegistryError, TransportError.

        Spec: distribution-spec "Pulling blobs"; RFC 9110 Range.
        """
        registry, repository = self._location(descriptor.digest, reference)
        return self.clients.get(registry).iter_blob(repository, descriptor.digest,
                                                    offset=offset)

    def foreign_source(self, descriptor: Descriptor, *,
                       reference: Reference | None = None) -> ForeignSource:
        """The sources of a non-distributable layer: the registry (as
        :meth:`iter_blob`), then the descriptor's ``urls`` in order, with no
        credentials (see :mod:`bundler.registry.foreign`).

        Spec: image-spec ``layer.md`` "Non-Distributable Layers", ``descriptor.md``.
        """
        registry, _ = self._location(descriptor.digest, reference)

        def from_registry(offset: int) -> Iterator[bytes]:
            return self.iter_blob(descriptor, offset, reference=reference)

        return ForeignSource(descriptor, registry, from_registry, self.clients.options)

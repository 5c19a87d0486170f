"""What an export reads images from: any :class:`~bundler.stores.Store`, seen the way
the export driver (:mod:`bundler.engine.exporting`) and the transfer engine ask for it.

They ask a source for an image's top descriptor (a reference resolved), its manifests
(digest-checked), and the bytes of one blob from a byte offset (:class:`ImageBlobs`, for
the bundle that checks them while writing them).
:class:`StoreSource` answers from a store's read verbs: a layout directory
(``get_manifest``, ``open_blob``, every blob read through the verifying reader), or
registries through :class:`~bundler.stores.registry.RegistrySource` (references resolved
on demand, manifests the bundle already holds read from it, a cut blob continued with
``Range``, a non-distributable layer also from its ``urls`` when asked).

Spec: image-spec ``image-layout.md``, ``descriptor.md``; distribution-spec "Pull".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import NotFoundError
from ..oci.content import Descriptor, Index, Manifest, is_non_distributable
from ..oci.digest import Digest, VerifyingReader
from ..oci.graph import ImagePlan, walk
from ..oci.platforms import sparse_annotations
from ..oci.reference import Reference
from ..stores import Store
from ..stores.layout import LayoutStore
from ..stores.registry import RegistrySource

__all__ = ["BlobOpener", "ImageBlobs", "StoreImage", "StoreSource"]


@dataclass
class BlobOpener:
    """Opens one blob from a byte offset for a store's ``put_blob``.

    Attributes:
        open: ``open(offset)`` -> chunks of the blob from ``offset`` (bytes).
        explain: turns a failure of the store into the error to raise (a foreign layer
            names the URL that served wrong bytes); the identity elsewhere.
        foreign: the blob is a non-distributable layer fetched on purpose
            (``--include-foreign-layers``).
    """

    open: Callable[[int], Iterator[bytes]]
    explain: Callable[[BaseException], BaseException] = lambda exc: exc
    foreign: bool = False


@dataclass(frozen=True, eq=False)
class StoreImage:
    """One image to export (``str()`` gives its name, for plans and messages).

    Attributes:
        name: the image's name.
        descriptor: its ``index.json`` descriptor in the store; None: resolve
            ``reference`` (a :class:`~bundler.stores.registry.RegistrySource`).
        reference: the reference it was asked by (registries), or None.
    """

    name: str
    descriptor: Descriptor | None = None
    reference: Reference | None = None

    @classmethod
    def of(cls, reference: Reference) -> StoreImage:
        """The image a reference names, resolved when planned."""
        return cls(str(reference), None, reference)

    def __str__(self) -> str:
        return self.name


class StoreSource:
    """Images read from a :class:`~bundler.stores.Store` for an export.

    Every manifest comes through ``get_manifest`` (digest- and size-checked). A layout's
    blobs come through ``open_blob`` (checked while read); a registry's stream from
    their offset (:meth:`RegistrySource.iter_blob`) and are checked by the bundle store
    that writes them.

    Args:
        store: the source store.
        include_foreign: fetch non-distributable layers from a registry source, or
            from their ``urls`` (``--include-foreign-layers``).
    """

    def __init__(self, store: Store, *, include_foreign: bool = False) -> None:
        self.store = store
        self.include_foreign = include_foreign
        self._openers: dict[Digest, BlobOpener] = {}
        self._lock = threading.Lock()

    def reuse(self, bundle: LayoutStore | None) -> None:
        """Read manifests ``bundle`` already holds from it rather than from a registry
        source (a re-export spends no manifest ``GET``, which registries count as
        pulls); a layout source needs nothing (reading it costs no pulls)."""
        if isinstance(self.store, RegistrySource):
            self.store.reuse(bundle)

    def top(self, image: StoreImage) -> Descriptor:
        """The descriptor of the image's top manifest or index: its reference resolved
        (a registry source; without annotations but a sparse index's
        ``dev.bundler.platforms.sparse``), or the one it came with.

        Raises:
            RegistryError, ManifestError, IntegrityError: the reference cannot be
            resolved.
        """
        if image.descriptor is not None:
            return image.descriptor
        if not isinstance(self.store, RegistrySource) or image.reference is None:
            raise TypeError(f"{image}: no descriptor, and no registry to resolve it")
        top = self.store.resolve_one(image.reference)
        return top.with_annotations(sparse_annotations(top))

    def plan(self, image: StoreImage, pool: ThreadPoolExecutor | None = None) -> ImagePlan:
        """The image's manifests, read from the store (its reference resolved first).

        Raises:
            RegistryError, BundleError, ManifestError, IntegrityError: a manifest is
            missing, cannot be fetched, or is damaged.
        """
        return walk(self.top(image), self.get_manifest, name=image.name, pool=pool)

    def get_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        """The store's manifest or index (digest- and size-checked); see
        :meth:`bundler.stores.Store.get_manifest`."""
        return self.store.get_manifest(descriptor)

    def for_image(self, image: StoreImage) -> ImageBlobs:
        """The blobs of ``image``, as the push engine reads them (see :class:`ImageBlobs`)."""
        return ImageBlobs(self, image)

    def opener(self, image: StoreImage, descriptor: Descriptor) -> BlobOpener:
        """The one :class:`BlobOpener` of a blob in this export (made by :meth:`blob`
        for ``image``, the first to ask), so that a failure is explained by the source
        that served the bytes."""
        with self._lock:
            opener = self._openers.get(descriptor.digest)
            if opener is None:
                opener = self._openers[descriptor.digest] = self.blob(image, descriptor)
            return opener

    def foreign(self, digest: Digest) -> bool:
        """Whether the blob is a non-distributable layer fetched on purpose
        (``include_foreign``)."""
        with self._lock:
            opener = self._openers.get(digest)
        return opener is not None and opener.foreign

    def blob(self, image: StoreImage, descriptor: Descriptor) -> BlobOpener:
        """The blob ``descriptor`` of ``image``, from a byte offset.

        From a registry: streamed from the image's repository (with ``include_foreign``
        a non-distributable layer also from its ``urls``). From a layout: read through
        the verifying reader, the bytes before the offset read and hashed too.

        Raises (when opened or read):
            NotFoundError: a non-distributable layer the source does not serve (left
            out). RegistryError, TransportError, BundleError, IntegrityError.
        """
        store = self.store
        if isinstance(store, RegistrySource):
            reference = image.reference
            if self.include_foreign and is_non_distributable(descriptor):
                foreign = store.foreign_source(descriptor, reference=reference)
                return BlobOpener(foreign.open, foreign.explain, foreign=True)
            return BlobOpener(lambda offset: store.iter_blob(descriptor, offset,
                                                             reference=reference))

        def open_at(offset: int) -> Iterator[bytes]:
            if is_non_distributable(descriptor) and not store.has_blob(descriptor.digest):
                raise NotFoundError(f"non-distributable layer {descriptor.digest} is not "
                                    f"in {store}")
            with store.open_blob(descriptor) as reader:
                skip = offset
                for chunk in reader:
                    if skip >= len(chunk):
                        skip -= len(chunk)
                        continue
                    yield chunk[skip:] if skip else chunk
                    skip = 0

        return BlobOpener(open_at)


class ImageBlobs:
    """The blobs of one image of a :class:`StoreSource`, as the push engine reads them
    (a :class:`~bundler.engine.ladder.BlobSource` with the
    :class:`~bundler.engine.destination.BlobStream` ability): from the image's own
    repository, from a byte offset, the bytes checked by the bundle that writes them.

    Args:
        source: the export's source. image: the image (the first that references the
            blobs read through this object).
    """

    def __init__(self, source: StoreSource, image: StoreImage) -> None:
        self.source, self.image = source, image

    def stream_blob(self, descriptor: Descriptor, offset: int) -> Iterator[bytes]:
        """Chunks of the blob from byte ``offset``, unverified (see
        :meth:`StoreSource.blob`)."""
        return self.source.opener(self.image, descriptor).open(offset)

    def explain(self, descriptor: Descriptor, exc: BaseException) -> BaseException:
        """``exc`` as the error to report (wrong bytes of a foreign layer name the URL)."""
        return self.source.opener(self.image, descriptor).explain(exc)

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Generator[VerifyingReader, None, None]:
        """The blob from its start through the verifying reader.

        Raises:
            as :meth:`stream_blob`; IntegrityError (while reading).
        """
        chunks = self.stream_blob(descriptor, 0)
        try:
            yield VerifyingReader(chunks, descriptor.digest, descriptor.size,
                                  where=f"{self.source.store}: {descriptor.digest}")
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

"""Where an export reads images from: registries, or a :class:`~bundler.stores.Store`
(an OCI image layout directory).

The export engine (:mod:`bundler.engine.exporting`) asks a source two things: the
plan of one image (its manifests, digest-checked, and its blobs), and the bytes of one
blob from a byte offset. :class:`RegistrySource` answers from the registries
(distribution-spec "Pulling manifests", "Pulling blobs"); :class:`StoreSource` from a
store's read verbs (``get_manifest``, ``has_blob``, ``open_blob``), every blob read
through the verifying reader.

Spec: image-spec ``image-layout.md``, ``descriptor.md``; distribution-spec "Pull".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import NotFoundError, SizeMismatchError
from ..oci.content import Descriptor, Index, Manifest, is_non_distributable, parse_manifest
from ..oci.digest import Digest
from ..oci.graph import ImagePlan, walk
from ..oci.reference import Reference
from ..registry.client import TransportOptions
from ..registry.foreign import ForeignSource
from ..stores import Store
from ..stores.layout import LayoutStore
from .parallel import ClientPool

__all__ = ["BlobOpener", "RegistrySource", "StoreImage", "StoreSource", "plan_image"]


def plan_image(
    ref: Reference, clients: ClientPool, pool: ThreadPoolExecutor, store: LayoutStore | None
) -> ImagePlan:
    """Resolve one reference and load its manifests.

    Manifests the bundle already holds are read from it (digest-checked) after one HEAD
    for a tag, so a re-export spends no manifest GETs (which registries count as pulls).
    With ``store`` None (a new bundle) the manifests are fetched at once.

    Raises:
        RegistryError, ManifestError, IntegrityError: naming the manifest.
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


class RegistrySource:
    """Images read from registries, named by references.

    Args:
        options: the transport options of the source registries.

    Use as a context manager (the registry clients are closed on leaving).
    """

    def __init__(self, options: TransportOptions | None) -> None:
        self.options = options
        self.clients = ClientPool(options)

    def __enter__(self) -> RegistrySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.clients.close()

    def plan(self, ref: Reference, pool: ThreadPoolExecutor,
             cache: LayoutStore | None) -> ImagePlan:
        """See :func:`plan_image`."""
        return plan_image(ref, self.clients, pool, cache)

    def blob(self, ref: Reference, descriptor: Descriptor, include_foreign: bool) -> BlobOpener:
        """The blob ``descriptor`` of image ``ref``, from its registry (a
        non-distributable layer also from its ``urls`` with ``include_foreign``).

        Raises (when opened or read):
            NotFoundError: the registry does not serve it. RegistryError, TransportError.
        """
        client = self.clients.get(ref.registry)

        def from_registry(offset: int) -> Iterator[bytes]:
            return client.iter_blob(ref.repository, descriptor.digest, offset=offset)

        if include_foreign and is_non_distributable(descriptor):
            foreign = ForeignSource(descriptor, ref.registry, from_registry,
                                    self.options or TransportOptions())
            return BlobOpener(foreign.open, foreign.explain, foreign=True)
        return BlobOpener(from_registry)


@dataclass(frozen=True, eq=False)
class StoreImage:
    """One image of a store to export: its ``index.json`` descriptor and a name for
    messages (``str()`` gives the name)."""

    name: str
    descriptor: Descriptor

    def __str__(self) -> str:
        return self.name


class StoreSource:
    """Images read from a :class:`~bundler.stores.Store` (a layout directory).

    Every manifest comes through ``get_manifest`` and every blob through ``open_blob``,
    both checked against their descriptors (size and digest) while they are read.

    Args:
        store: the source store.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> StoreSource:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def plan(self, image: StoreImage, pool: ThreadPoolExecutor,
             cache: LayoutStore | None) -> ImagePlan:
        """The image's manifests, read from the store (``cache`` is not needed: reading
        the source costs no registry pulls).

        Raises:
            BundleError, ManifestError, IntegrityError: a manifest is missing or damaged.
        """
        return walk(image.descriptor, self.store.get_manifest, name=image.name, pool=pool)

    def blob(self, image: StoreImage, descriptor: Descriptor,
             include_foreign: bool) -> BlobOpener:
        """The blob ``descriptor`` read from the store from a byte offset (the bytes
        before it are read and hashed, so the digest is still checked at the end).

        Raises (when opened):
            NotFoundError: a non-distributable layer the store does not hold (left out,
            as an export leaves out one the registry does not serve).
            BundleError, IntegrityError: missing or damaged.
        """
        store = self.store

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

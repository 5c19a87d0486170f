"""Stores: where content lives, with the same verbs on every kind.

The verbs (DESIGN convention 1) are ``has_blob``, ``open_blob``, ``put_blob``,
``get_manifest``, ``put_manifest`` and ``resolve``:

- :class:`bundler.registry.RegistryClient` (a registry; every verb takes the repository);
- :class:`bundler.stores.layout.LayoutStore` (an OCI image layout directory);
- :class:`bundler.stores.archive_export.ArchiveExport` (an archive being written);
- :class:`bundler.stores.archive.ArchiveReader` (an archive read in one pass).

:class:`BundleStore` is what an export writes into: a layout directory or an archive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from ..oci.content import Descriptor
from ..oci.digest import Digest
from .layout import LayoutStore

__all__ = ["BundleStore", "LayoutStore"]


class BundleStore(Protocol):
    """The store an export writes into (image-spec ``image-layout.md``).

    Blobs and manifests first, in any order; ``sync`` makes them durable; ``write_index``
    comes last and names the images.
    """

    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        """True if the blob is stored (with ``size`` bytes when given)."""
        ...

    def put_blob(self, digest: Digest, size: int, open_source: Callable[[int], Iterable[bytes]],
                 *, on_bytes: Callable[[int], None] | None = None) -> int:
        """Store a blob streamed from ``open_source(offset)``; returns bytes fetched."""
        ...

    def put_manifest(self, digest: Digest, data: bytes) -> None:
        """Store a manifest's exact bytes under its digest."""
        ...

    def read_index(self) -> list[Descriptor]:
        """The images already named by the bundle."""
        ...

    def write_index(self, descriptors: Iterable[Descriptor]) -> None:
        """Name the images: written last."""
        ...

    def sync(self) -> None:
        """Make what was stored so far durable."""
        ...

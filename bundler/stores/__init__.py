"""Stores: where content lives, with the same verbs on every kind.

The verbs (DESIGN convention 1) are ``read_index``, ``get_manifest``, ``has_blob``,
``check_blob`` and ``open_blob`` to read (:class:`Store`), and ``put_blob``,
``put_manifest``, ``write_index`` and ``sync`` to write (:class:`BundleStore`):

- :class:`bundler.stores.layout.LayoutStore`: an OCI image layout directory (both);
- :class:`bundler.stores.archive_export.ArchiveExport`: an archive being written;
- :class:`bundler.stores.docker_archive_writer.DockerArchiveExport`: a docker archive
  being written (the dual form ``docker load`` reads);
- :class:`bundler.stores.archive.ArchiveReader`: an archive read in one pass (its
  members come in order; :mod:`bundler.engine.archive_import` reads it);
- :class:`bundler.stores.registry.RegistrySource`: images read on demand from source
  registries (the source of a mirror and of an export; read verbs only);
- :class:`bundler.registry.client.RegistryClient`: a registry, whose verbs also take
  the repository.

The one transfer engine (:class:`bundler.engine.push.PushRun`) reads images from a
:class:`Store` and puts them into a destination: registries, or a :class:`BundleStore`
(seen by the engine through :mod:`bundler.engine.bundle_destination`); a new kind of
source or destination is one new module here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from ..oci.content import Descriptor, Index, Manifest
from ..oci.digest import Digest, VerifyingReader
from .layout import LayoutStore

__all__ = ["BundleStore", "LayoutStore", "MountSource", "Store"]


class Store(Protocol):
    """Where images can be read from: a layout directory, a registry, ...

    Every manifest and blob comes back checked against its descriptor (size, digest).
    Spec: image-spec ``image-layout.md``, ``descriptor.md``.
    """

    def read_index(self) -> list[Descriptor]:
        """The images the store holds, each a descriptor named by its annotations
        (``org.opencontainers.image.ref.name``, ``io.containerd.image.name``)."""
        ...

    def get_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        """The manifest or index a descriptor points at, digest-checked and parsed.

        Raises:
            ManifestError, IntegrityError, BundleError, RegistryError.
        """
        ...

    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        """True if the store holds the blob (of ``size`` bytes when given)."""
        ...

    def check_blob(self, descriptor: Descriptor) -> bool:
        """Whether the blob can be read as described, without reading it (False:
        missing).

        Raises:
            UnsafeBundleError, SizeMismatchError: present, but not as described.
        """
        ...

    def open_blob(self, descriptor: Descriptor) -> AbstractContextManager[VerifyingReader]:
        """A verifying reader over the blob's bytes (iterable in chunks; the digest is
        checked at the end).

        Raises:
            BundleError, RegistryError: cannot be opened. IntegrityError (while reading).
        """
        ...


@runtime_checkable
class MountSource(Protocol):
    """An optional ability of a :class:`Store` whose blobs live in a registry: where a
    push into that registry can mount a blob from instead of uploading it."""

    def mount_source(self, registry: str, digest: Digest) -> str | None:
        """A repository of ``registry`` that holds the blob, or None."""
        ...


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

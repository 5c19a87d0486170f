"""An OCI image layout in a plain tar file, read as a random-access :class:`Store`, in any
member order.

skopeo (``oci-archive:``), podman and buildah, ``ctr images export``, Docker 25+
``docker save`` and ``tar -C layout .`` write the blobs first and ``index.json`` last;
bundler writes ``index.json`` and the manifests first. From a file the order does not
matter: :class:`~bundler.stores.tar_index.TarIndex` finds every member's offset in one
pass over the headers, then ``index.json``, the manifests and the blobs are read where
they are, each blob through the verifying reader, nothing unpacked to disk. (A pipe is
read once and needs bundler's order: :mod:`bundler.stores.archive`.)

Members accepted (any other name is refused with :class:`UnsafeArchiveError`):
``oci-layout``, ``index.json``, ``blobs/<algorithm>/<hex>``, the ``blobs`` directories,
and the metadata ``docker save`` writes beside a layout (``manifest.json``,
``repositories``, the legacy ``<id>.json`` and ``<id>/{VERSION,json,layer.tar}``;
:mod:`bundler.stores.docker_archive` reads those). Links are refused, except a legacy
``<id>/layer.tar`` that links to another member of the archive (``docker save`` writes
a layer shared by two layer ids that way).

Spec: image-spec ``image-layout.md``, ``descriptor.md``; POSIX.1-2001 pax.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import BundleError, ManifestError, SizeMismatchError, UnsafeArchiveError
from ..oci.content import Descriptor, Index, Manifest, parse_layout_index, parse_manifest
from ..oci.digest import Digest, VerifyingReader
from ..oci.limits import INDEX_LIMIT, MANIFEST_LIMIT, describe
from .archive import (
    ACCEPTED,
    DOCKER_DIRECTORY,
    DOCKER_MEMBER,
    LAYOUT_DIRECTORY,
    METADATA,
    RECEIPT_MEMBER,
    blob_digest,
)
from .layout import check_layout_file
from .tar_index import Segment, TarEntry, TarIndex, tar_files

__all__ = ["ArchiveStore", "blob_name", "open_layout_archive", "scan_archive"]


def blob_name(digest: Digest) -> str:
    """``blobs/<algorithm>/<hex>``: where a layout keeps a blob."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


def _is_link_name(name: str) -> bool:
    """Links are kept only for a legacy docker layer (``<id>/layer.tar``)."""
    return name.endswith("/layer.tar") and DOCKER_MEMBER.match(name) is not None


def scan_archive(path: str | os.PathLike[str] | list[Path],
                 where: str | None = None) -> TarIndex:
    """Index a tar file's members (one pass, nothing unpacked) and check their names.

    Args:
        path: a plain tar file, or its volumes in order.
        where: the archive's name for messages (default: ``path``).

    Returns:
        The :class:`TarIndex` (close it when done).

    Raises:
        UnsafeArchiveError: a member that is unsafe or belongs to neither an OCI layout
        nor a docker archive (the first one, by name). BundleError: not a tar file, or
        truncated.
    """
    where = where or os.fspath(path if not isinstance(path, list) else path[0])
    index = TarIndex(path, where, links_allowed=_is_link_name)
    try:
        for name in index.directories:
            if not LAYOUT_DIRECTORY.match(name) and not DOCKER_DIRECTORY.match(name):
                raise UnsafeArchiveError(f"{where}: unsafe archive member {name!r}: only "
                                         "the directories blobs/ and blobs/<algorithm>/ "
                                         "belong in a bundle")
        for name in index.entries:
            if name in ("oci-layout", "index.json", RECEIPT_MEMBER) or name in METADATA \
                    or DOCKER_MEMBER.match(name):
                continue
            if blob_digest(name, where) is None:
                raise UnsafeArchiveError(f"{where}: unsafe archive member {name!r}: not "
                                         f"part of an OCI image layout or docker archive "
                                         f"({ACCEPTED})")
    except BaseException:
        index.close()
        raise
    return index


def open_layout_archive(bundle: str | os.PathLike[str]) -> ArchiveStore:
    """Open a plain tar bundle (or its split volumes) as an :class:`ArchiveStore`, read
    in place by member offsets (``bundler serve``); no volume is read through first.

    Args:
        bundle: ``NAME.tar``, or split volumes (the base name or any volume).

    Raises:
        BundleError: no such file; a volume missing from the numbering; a zstd-compressed
        archive (no member offsets); not a tar, truncated; no OCI image layout.
        UnsafeArchiveError: an unsafe member (see :func:`scan_archive`).
    """
    where, files = tar_files(bundle)
    index = scan_archive(files, where)
    try:
        return ArchiveStore(index)
    except BaseException:
        index.close()
        raise


def read_small(index: TarIndex, name: str, limit: int, what: str) -> bytes | None:
    """A small member's bytes (index.json, a manifest, manifest.json), or None if absent.

    Raises:
        BundleError: larger than ``limit`` bytes (naming ``what`` and the limit).
    """
    entry = index.get(name)
    if entry is None:
        return None
    if entry.size > limit:
        raise BundleError(f"{index.where}: {name} has {entry.size} bytes, more than the "
                          f"limit of {describe(limit)} on {what}")
    return index.read(entry)


class ArchiveStore:
    """A :class:`~bundler.stores.Store` over an OCI image layout in a tar file.

    Args:
        index: the archive's members (from :func:`scan_archive`); closed by
            :meth:`close`.

    Raises:
        BundleError: no ``oci-layout`` or ``index.json``, or they do not parse; an
        ``index.json`` over :data:`INDEX_LIMIT`.
    """

    def __init__(self, index: TarIndex) -> None:
        self.index = index
        self.where = index.where
        layout = read_small(index, "oci-layout", INDEX_LIMIT, "oci-layout")
        data = read_small(index, "index.json", INDEX_LIMIT, "index.json")
        if data is None:
            raise BundleError(f"{self.where}: the archive has no index.json")
        if layout is None:
            raise BundleError(f"{self.where}: no oci-layout in the archive (an OCI image "
                              "layout must have one)")
        check_layout_file(layout, self.where)
        self.entries = parse_layout_index(data, self.where)

    def __str__(self) -> str:
        return self.where

    def read_index(self) -> list[Descriptor]:
        """The ``index.json`` descriptors, in order."""
        return list(self.entries)

    def entry(self, digest: Digest) -> TarEntry | None:
        """The member holding a blob, or None."""
        return self.index.get(blob_name(digest))

    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        """True if the archive holds the blob (of ``size`` bytes when given)."""
        held = self.blob_size(digest)
        return held is not None and (size is None or held == size)

    def blob_size(self, digest: Digest) -> int | None:
        """The size in bytes of the blob the archive holds, or None."""
        entry = self.entry(digest)
        return None if entry is None else entry.size

    def check_blob(self, descriptor: Descriptor) -> bool:
        """Whether the blob is there with the descriptor's size (False: missing).

        Raises:
            SizeMismatchError: present with another size.
        """
        entry = self.entry(descriptor.digest)
        if entry is not None and entry.size != descriptor.size:
            raise SizeMismatchError(digest=str(descriptor.digest), expected=descriptor.size,
                                    actual=entry.size,
                                    where=f"{self.where}: {blob_name(descriptor.digest)}")
        return entry is not None

    def blob_segments(self, digest: Digest) -> list[Segment]:
        """Where a blob's bytes lie in the archive's files (one :class:`Segment` per
        volume it crosses), to send them with ``sendfile``.

        Raises:
            BundleError: missing from the archive.
        """
        entry = self.entry(digest)
        if entry is None:
            raise BundleError(f"{self.where}: blob {digest} is missing from the archive")
        return self.index.segments(entry)

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        """A verifying reader over the blob's member.

        Raises:
            BundleError: missing from the archive. SizeMismatchError: another size (before
            reading). IntegrityError (while reading): wrong digest.
        """
        if not self.check_blob(descriptor):
            raise BundleError(f"{self.where}: blob {descriptor.digest} is missing from the "
                              "archive")
        entry = self.entry(descriptor.digest)
        assert entry is not None
        yield VerifyingReader(self.index.open(entry), descriptor.digest, descriptor.size,
                              where=blob_name(descriptor.digest))

    def get_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        """The manifest or index a descriptor points at, digest-checked and parsed.

        Raises:
            BundleError: missing from the archive. ManifestError: over
            :data:`MANIFEST_LIMIT`, or not a manifest. IntegrityError: wrong size or digest.
        """
        name = blob_name(descriptor.digest)
        if self.entry(descriptor.digest) is None:
            raise BundleError(f"{self.where}: manifest {descriptor.digest} is missing from "
                              "the archive")
        if descriptor.size > MANIFEST_LIMIT:
            raise ManifestError(f"{self.where}: {name}: manifest of {descriptor.size} bytes, "
                                f"larger than the limit of {describe(MANIFEST_LIMIT)}")
        with self.open_blob(descriptor) as reader:
            raw = reader.read()
        try:
            return parse_manifest(raw, descriptor.media_type, digest=descriptor.digest)
        except ManifestError as exc:
            raise ManifestError(f"{self.where}: {name}: {exc}") from exc

    def blob_names(self) -> list[str]:
        """The ``blobs/<algorithm>/<hex>`` members, in archive order."""
        return [n for n in self.index.entries if n.startswith("blobs/")]

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> ArchiveStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

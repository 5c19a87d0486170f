"""The read-only namespace that ``bundler serve`` answers from, built from bundles.

Each bundle is read in place: a directory through :class:`LayoutStore` (every file
opened inside it, no symbolic link followed), a plain ``.tar`` or its volumes through
:class:`~bundler.stores.seekable_archive.ArchiveStore` (member offsets, in any member
order; a blob is sent from the archive's files where it lies). Every image of every bundle is walked once at
startup: its manifests are read, digest-checked and kept in memory (exact bytes), and
each of its blobs is checked to be in the bundle with the descriptor's size. The
images are named as ``bundler import`` names them (:mod:`bundler.engine.naming`): under
their source repository paths, under ``--prefix``, or as a ``--mapping`` file says.

A :class:`Namespace` is never changed once built; a bundle that changes on disk is read
again into a new one (:class:`Bundles`), which replaces the old one only when it reads
whole.

Spec: distribution-spec v1.1 "Pulling manifests", "Pulling blobs", "Listing tags",
"Listing referrers" (and the referrers tag schema); image-spec ``image-layout.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.naming import resolve_targets
from ..engine.receipts import read_receipt
from ..errors import BundleError, BundlerError, ManifestError, MappingError
from ..oci.content import OCI_INDEX, Descriptor, Index, Manifest, is_non_distributable
from ..oci.digest import Digest
from ..oci.graph import walk
from ..stores.contained import open_inside, stat_inside
from ..stores.layout import LayoutStore
from ..stores.seekable_archive import ArchiveStore, open_layout_archive
from ..stores.tar_index import Segment, file_identity

__all__ = ["BlobFile", "BundleSource", "Namespace", "Repository", "StaleBundleError",
           "build_namespace", "open_source", "referrers_index"]


class StaleBundleError(BundleError):
    """An archive written over in place while served: its offsets no longer hold."""


@dataclass
class BlobFile:
    """Where a blob's bytes are: segments of open files, and what to close after."""

    segments: list[Segment]
    close: Callable[[], None]


class BundleSource:
    """One bundle read in place: a layout directory or a plain tar (or its volumes).

    Args:
        path: the bundle as the user named it.

    Raises:
        BundleError: not a bundle; a ``.tar.zst`` (see :func:`open_layout_archive`).
        UnsafeArchiveError: an unsafe archive member.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.store: LayoutStore | ArchiveStore
        if self.path.is_dir():
            self.store = LayoutStore(self.path)
        else:
            self.store = open_layout_archive(self.path)
        self._identity = self._files()

    def _files(self) -> list[tuple[int, int, int, int]]:
        if isinstance(self.store, LayoutStore):
            return [file_identity(self.path / name) for name in ("oci-layout", "index.json")]
        return []

    def changed(self) -> bool:
        """Whether the bundle changed on disk since it was read (a directory's
        ``index.json`` or ``oci-layout`` replaced; any file of an archive)."""
        if isinstance(self.store, ArchiveStore):
            return self.store.index.changed()
        return self._files() != self._identity

    def blob_size(self, digest: Digest) -> int | None:
        """The size in bytes of the blob in the bundle, or None when it is not there.

        Raises:
            UnsafeBundleError: a directory bundle's blob that is no regular file inside it.
        """
        if isinstance(self.store, ArchiveStore):
            return self.store.blob_size(digest)
        status = stat_inside(*self.store.blob_location(digest), what=f"blob {digest}")
        return None if status is None else status.st_size

    def open_blob(self, digest: Digest, size: int) -> BlobFile:
        """The blob's bytes as file segments (the caller closes the returned value).

        Raises:
            FileNotFoundError: it is gone. UnsafeBundleError: no regular file inside the
            bundle. SizeMismatchError: another size than ``size``.
            StaleBundleError: an archive written over in place since it was read.
        """
        if isinstance(self.store, ArchiveStore):
            if self.store.index.written_over():
                raise StaleBundleError(f"{self.path}: the archive was written over since "
                                       "it was read; its blobs are not served until it "
                                       "is read again")
            return BlobFile(self.store.blob_segments(digest), lambda: None)
        root, relative = self.store.blob_location(digest)
        f = open_inside(root, relative, size=size, digest=str(digest), what=f"blob {digest}")
        return BlobFile([Segment(f, 0, size)], f.close)

    def close(self) -> None:
        """Release the files an archive holds open."""
        if isinstance(self.store, ArchiveStore):
            self.store.close()

    def __str__(self) -> str:
        return str(self.path)


@dataclass
class Repository:
    """What one repository serves.

    Attributes:
        tags: tag -> manifest digest.
        manifests: digests of every manifest and index of its images.
        blobs: digests of every config and layer its images use.
        referrers: subject digest -> {referrer digest: descriptor JSON object}.
    """

    tags: dict[str, Digest] = field(default_factory=dict)
    manifests: set[Digest] = field(default_factory=set)
    blobs: set[Digest] = field(default_factory=set)
    referrers: dict[Digest, dict[Digest, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Namespace:
    """Everything served, read-only once built.

    Attributes:
        repositories: repository name -> :class:`Repository`.
        manifests: digest -> (media type, exact bytes) of every manifest and index.
        blobs: digest -> (the bundle that holds it, size in bytes).
        sources: the bundles, in the order given.
        images: how many named images were read.
    """

    repositories: dict[str, Repository] = field(default_factory=dict)
    manifests: dict[Digest, tuple[str, bytes]] = field(default_factory=dict)
    blobs: dict[Digest, tuple[BundleSource, int]] = field(default_factory=dict)
    sources: list[BundleSource] = field(default_factory=list)
    images: int = 0

    def describe(self) -> str:
        """``N images in M repositories`` (``1 image``, ``1 repository``)."""
        count = len(self.repositories)
        return (f"{self.images} image{'' if self.images == 1 else 's'} in {count} "
                f"repositor{'y' if count == 1 else 'ies'}")

    def close(self) -> None:
        """Release the bundles' open files."""
        for source in self.sources:
            source.close()


def open_source(path: str | os.PathLike[str]) -> BundleSource:
    """Open one bundle for serving (see :class:`BundleSource`)."""
    return BundleSource(path)


def _names(entries: list[Descriptor], prefix: str | None,
           mapping: list[tuple[str, str]] | None) -> list[tuple[Descriptor, str, str | None]]:
    """(entry, repository, tag or None) of each image served, by import's naming rules."""
    to = None
    if mapping is None:
        to = f"localhost/{prefix.strip('/')}" if prefix else "localhost"
    try:
        targets = resolve_targets(entries, to=to, mapping=mapping)
    except MappingError as exc:
        text = str(exc)
        if to is not None:  # import's words, said of serve's options and names
            text = text.replace(f"--to {to!r}", f"--prefix {prefix!r}").replace(
                "give --to with the full repository (REGISTRY/REPOSITORY)",
                "give --prefix with the full repository").replace(" go to localhost/", " go to ")
        raise MappingError(text) from None
    return [(t.descriptor, t.destination.repository, t.destination.tag) for t in targets]


def _referrer(descriptor: Descriptor, item: Manifest | Index) -> dict[str, Any]:
    """The descriptor a referrers list holds for ``item`` (distribution-spec "Listing
    referrers": ``artifactType`` is the manifest's, else its config's media type)."""
    out: dict[str, Any] = {"mediaType": item.media_type, "digest": str(descriptor.digest),
                           "size": descriptor.size}
    artifact_type = item.artifact_type
    if artifact_type is None and isinstance(item, Manifest) and item.config is not None:
        artifact_type = item.config.media_type
    if artifact_type:
        out["artifactType"] = artifact_type
    if item.annotations:
        out["annotations"] = dict(item.annotations)
    return out


def referrers_index(descriptors: Iterable[dict[str, Any]]) -> bytes:
    """The bytes of an image index listing ``descriptors`` (the referrers response and
    the referrers tag schema's index)."""
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(descriptors)}
    return json.dumps(doc, separators=(",", ":")).encode()


def build_namespace(paths: Iterable[str | os.PathLike[str]], *, prefix: str | None = None,
                    mapping: list[tuple[str, str]] | None = None) -> Namespace:
    """Read bundles into one namespace.

    Args:
        paths: bundle directories, ``.tar`` files or volumes, in order (a digest found
            in two bundles is served from the first).
        prefix: a repository path every image is served under (``--prefix``).
        mapping: ``SOURCE=DESTINATION`` pairs (``--mapping``); only the images named are
            served, under the destination's repository and tag (its host is ignored).

    Returns:
        The :class:`Namespace`.

    Raises:
        BundleError: a bundle that cannot be read, or an image whose manifest or blob is
        missing from it (or of another size).
        UnsafeBundleError, UnsafeArchiveError: content that is not safely inside it.
        MappingError: two images under one repository and tag; an unnamed image
        without ``--prefix``; a mapping source in no bundle.
        IntegrityError: a manifest whose bytes are not its digest's.
    """
    namespace = Namespace()
    try:
        entries: list[Descriptor] = []
        owner: dict[int, BundleSource] = {}
        for path in paths:
            source = open_source(path)
            namespace.sources.append(source)
            for entry in source.store.read_index():
                entries.append(entry)
                owner[id(entry)] = source
        for entry, repository, tag in _names(entries, prefix, mapping):
            _add_image(namespace, owner[id(entry)], entry, repository, tag)
        _add_referrer_tags(namespace)
    except BaseException:
        namespace.close()
        raise
    return namespace


def _add_image(namespace: Namespace, source: BundleSource, entry: Descriptor,
               repository: str, tag: str | None) -> None:
    """Walk one image of ``source`` into ``repository`` (tagged ``tag``)."""
    name = f"{repository}:{tag}" if tag else f"{repository}@{entry.digest}"
    try:
        plan = walk(entry, source.store.get_manifest, name=f"{source}: {name}")
    except ManifestError as exc:  # its words name neither the bundle nor the image
        raise BundleError(f"{source}: image {name}: {exc}") from exc
    repo = namespace.repositories.setdefault(repository, Repository())
    for descriptor, item in plan.manifests:
        namespace.manifests.setdefault(descriptor.digest, (item.media_type, item.raw))
        repo.manifests.add(descriptor.digest)
        if item.subject is not None:
            repo.referrers.setdefault(item.subject.digest, {})[descriptor.digest] = (
                _referrer(descriptor, item))
    for digest, blob in plan.blobs.items():
        if digest not in namespace.blobs:
            holder, size = _find_blob(namespace, source, digest)
            if size is None and is_non_distributable(blob):
                continue  # a foreign layer the bundle does not carry: clients fetch its urls
            if size is None:
                raise BundleError(f"{source}: image {name}: blob {digest} is missing"
                                  f"{_left_to_base(source)}")
            if size != blob.size:
                raise BundleError(f"{holder}: image {name}: blob {digest} has {size} bytes, "
                                  f"its descriptor says {blob.size}")
            namespace.blobs[digest] = (holder, size)
        repo.blobs.add(digest)
    if tag is not None:
        repo.tags[tag] = entry.digest
    namespace.images += 1


def _find_blob(namespace: Namespace, source: BundleSource,
               digest: Digest) -> tuple[BundleSource, int | None]:
    """The bundle holding ``digest`` and its size: ``source`` first, then the other
    bundles served (a differential bundle's base may be named after it)."""
    size = source.blob_size(digest)
    if size is not None:
        return source, size
    for other in namespace.sources:
        if other is not source and (size := other.blob_size(digest)) is not None:
            return other, size
    return source, None


def _left_to_base(source: BundleSource) -> str:
    """For a differential bundle, the words that say a missing blob is its base's."""
    try:
        receipt = read_receipt(source.path)
    except BundlerError:
        return ""
    if receipt.base is None:
        return ""
    return (f" (a differential bundle leaves it to its base {receipt.base.bundle_id}: "
            "serve the base too, or merge them first with bundler merge)")


def _add_referrer_tags(namespace: Namespace) -> None:
    """Tag each subject's referrers index ``<alg>-<hex>`` where no such tag is taken
    (distribution-spec "Referrers Tag Schema"), for clients that do not ask the API."""
    for repo in namespace.repositories.values():
        for subject, found in repo.referrers.items():
            tag = f"{subject.algorithm}-{subject.hex}"[:128]
            if tag in repo.tags:
                continue
            data = referrers_index(found[d] for d in sorted(found, key=str))
            digest = Digest.of(data)
            namespace.manifests.setdefault(digest, (OCI_INDEX, data))
            repo.manifests.add(digest)
            repo.tags[tag] = digest

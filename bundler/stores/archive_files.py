"""Open an archive file as a random-access :class:`~bundler.stores.Store`, whichever tool
wrote it: an OCI image layout in any member order (skopeo, podman, buildah, ``ctr``,
``tar``, bundler) or a ``docker save`` / ``podman save`` docker archive.

Spec: image-spec ``image-layout.md``; the docker save format (``manifest.json``).
"""

from __future__ import annotations

import os

from ..errors import BundleError, BundlerError
from ..oci.graph import walk
from .docker_archive import DockerArchive
from .seekable_archive import ArchiveStore, scan_archive
from .tar_index import is_plain_tar_file

__all__ = ["ArchiveStore", "DockerArchive", "is_plain_tar_file", "open_archive"]


def open_archive(path: str | os.PathLike[str]) -> ArchiveStore | DockerArchive:
    """Index a plain tar file in one pass and open it as a store.

    Args:
        path: a ``.tar`` file (not compressed: see :func:`is_plain_tar_file`).

    Which reader (:mod:`bundler.stores.docker_archive` has the docker forms):

    - ``index.json`` and no ``manifest.json`` (skopeo, podman's oci-archive, bundler):
      the layout, :class:`ArchiveStore`;
    - both, and ``index.json`` names images whose manifests are all there (Docker 25+
      tagged, ``ctr images export``): the layout too, digests and names as recorded;
    - both, and ``index.json`` names nothing or not all of it is there (Docker 25.0
      saving by ID, the containerd store's partial index): :class:`DockerArchive` over
      the layout, one image manifest per ``manifest.json`` image;
    - ``manifest.json`` alone (legacy ``docker save``, ``podman save``):
      :class:`DockerArchive`, which builds each image's manifest.

    Returns:
        An :class:`ArchiveStore` or :class:`DockerArchive` (close it when done).

    Raises:
        UnsafeArchiveError: an unsafe member or one of neither format.
        BundleError: not a tar file, truncated; neither an OCI layout (``index.json``)
        nor a docker archive (``manifest.json``).
    """
    index = scan_archive(path)
    try:
        docker = index.get("manifest.json") is not None
        if index.get("index.json") is None:
            if docker:
                return DockerArchive(index)
            raise BundleError(f"{index.where}: the archive has no index.json (it is no OCI "
                              "image layout) and no manifest.json (it is no docker save "
                              "archive)")
        layout = ArchiveStore(index)
        if docker and not _complete(layout):
            return DockerArchive(index, layout)
        return layout
    except BaseException:
        index.close()
        raise


def _complete(layout: ArchiveStore) -> bool:
    """Whether ``index.json`` names images and holds every manifest they reach."""
    entries = layout.read_index()
    try:
        for entry in entries:
            walk(entry, layout.get_manifest, name=str(entry.digest))
    except BundlerError:
        return False
    return bool(entries)

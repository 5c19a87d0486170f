"""Open an archive file as a random-access :class:`~bundler.stores.Store`, whichever tool
wrote it: an OCI image layout in any member order (skopeo, podman, buildah, ``ctr``,
``tar``, bundler) or a ``docker save`` / ``podman save`` docker archive.

Spec: image-spec ``image-layout.md``; the docker save format (``manifest.json``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import BundleError, BundlerError
from ..oci.graph import walk
from .docker_archive import DockerArchive
from .seekable_archive import ArchiveStore, scan_archive
from .tar_index import TarIndex, is_plain_tar_file
from .volumes import VolumeReader, find_volumes, read_checksums
from .zstd import ZSTD_MAGIC, is_skippable

__all__ = ["ArchiveStore", "DockerArchive", "is_plain_tar_file", "open_archive",
           "reads_at_random", "reads_by_offsets"]


def _plain_volumes(path: str | os.PathLike[str]) -> tuple[Path, list[Path]] | None:
    """(base, volumes) of an uncompressed volume set, else None."""
    if os.fspath(path) == "-":
        return None
    try:
        found = find_volumes(Path(path))
    except BundleError:
        return None  # reported by the reader that takes the set
    if found is None or not found[1]:
        return None
    try:
        with open(found[1][0], "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    return None if head == ZSTD_MAGIC or is_skippable(head) else found


def reads_by_offsets(path: str | os.PathLike[str]) -> bool:
    """Whether ``import``, ``list`` and ``verify`` read ``path`` as a random-access store
    (:func:`open_archive`) rather than once, in order
    (:class:`~bundler.stores.archive.ArchiveReader`).

    True for a plain ``.tar`` file, and for an uncompressed volume set that is not in
    bundler's order (a blob or docker member before ``index.json``): a volume set in
    bundler's order keeps the one-pass reader. False for ``-``, ``.tar.zst``, a
    directory.
    """
    if is_plain_tar_file(path):
        return True
    found = _plain_volumes(path)
    if found is None:
        return False
    try:
        index = TarIndex(found[1], str(found[0]))
    except BundlerError:
        return False  # the one-pass reader says what is wrong
    try:
        order = [n for n in index.order if n not in index.directories]
        return "index.json" not in order or any(
            n != "oci-layout" for n in order[:order.index("index.json")])
    finally:
        index.close()


def reads_at_random(path: str | os.PathLike[str]) -> bool:
    """Whether :func:`open_archive` can open ``path`` to be read at random (a ``--base``,
    a bundle to merge): a plain ``.tar`` file or an uncompressed volume set, in any
    member order. False for ``-``, a ``.tar.zst`` or its volumes, a directory."""
    return is_plain_tar_file(path) or _plain_volumes(path) is not None


def open_archive(path: str | os.PathLike[str], *,
                 on_volume_problem: Callable[[str], None] | None = None
                 ) -> ArchiveStore | DockerArchive:
    """Index a plain tar file (or volume set) in one pass and open it as a store.

    Args:
        path: a ``.tar`` file (not compressed: see :func:`is_plain_tar_file`), or an
            uncompressed volume set (base name or any volume). Each volume is checked
            against ``NAME.sha256`` (read through once) before it is used.
        on_volume_problem: receives volume problems (verify); when None they raise.

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
        nor a docker archive (``manifest.json``); a volume missing, or whose size or
        sha256 is not the checksum file's.
    """
    found = None if is_plain_tar_file(path) else _plain_volumes(path)
    if found is not None:
        base, volumes = found
        checking = VolumeReader(volumes, read_checksums(base), on_volume_problem)
        try:
            checking.drain()
        finally:
            checking.close()
        index = scan_archive(volumes, str(base))
    else:
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

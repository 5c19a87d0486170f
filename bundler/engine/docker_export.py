"""docker-archive out: ``bundler export --format docker-archive`` and ``bundler copy ...
docker-archive:FILE[:NAME]``, written by
:func:`bundler.stores.docker_archive_writer.write_docker_archive` straight from the
source store (registries, a layout, an archive file): no bundle is written first, the
export engine is not involved, every blob streams from the source into the archive.

Spec: image-spec ``image-layout.md``; the docker save format (``manifest.json``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from ..errors import LocationError, TransferError
from ..events import Reporter
from ..oci.content import entry_name
from ..oci.reference import Location, Reference
from ..registry.client import TransportOptions
from ..stores.archive_files import ArchiveStore, DockerArchive, open_archive, reads_by_offsets
from ..stores.docker_archive_writer import DockerArchiveResult, write_docker_archive
from ..stores.layout import LayoutStore
from .copy_locations import select_entry
from .parallel import ClientPool

__all__ = ["copy_to_docker_archive", "export_docker_archive"]


def export_docker_archive(
    references: Sequence[Reference],
    output: str | os.PathLike[str],
    *,
    options: TransportOptions | None = None,
    platform: str | None = None,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    names: dict[str, str] | None = None,
) -> DockerArchiveResult:
    """Pull images from registries into a new docker archive (the dual form: ``docker
    load`` reads it, and it is an OCI layout bundler and skopeo read).

    Args:
        references: the images; each is named in the archive by its full reference.
        output: the archive file (must not exist).
        options: transport options of the source registries.
        platform: ``os/arch[/variant]`` taken from an index (default linux/amd64).
        jobs: concurrent manifest requests.
        reporter: receives blob events. stop: set to cancel.
        names: reference -> the name to record instead (``copy ... docker-archive:F:NAME``).

    Returns:
        A :class:`DockerArchiveResult`.

    Raises:
        TransferError: a reference cannot be resolved or a blob fetched. BundleError:
        the output exists or cannot be written; an index without the platform.
    """
    from ..stores.registry import RegistrySource

    with ClientPool(options) as clients:
        source = RegistrySource(clients)
        for ref, exc in source.resolve(list(dict.fromkeys(references)), jobs=jobs,
                                       stop=stop).items():
            raise TransferError(str(ref), exc) from exc
        images = []
        for entry in source.read_index():
            name = entry_name(entry)
            images.append(((names or {}).get(name, name), entry))
        return write_docker_archive(source, images, output, platform=platform,
                                    reporter=reporter, stop=stop)


def copy_to_docker_archive(
    src: Location,
    dst: Location,
    text: str,
    *,
    options: TransportOptions | None = None,
    platform: str | None = None,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
) -> DockerArchiveResult:
    """``bundler copy SRC docker-archive:FILE[:NAME]``: the one image SRC names, named
    NAME (else as in the source).

    Args:
        src, dst: checked locations (:func:`~bundler.engine.copy_locations.check_locations`).
        text: the source as given, for messages.
        options: transport options of a source registry.
        platform, jobs, reporter, stop: as :func:`export_docker_archive`.

    Raises:
        LocationError: a source that is not a plain .tar file or a layout; no such image.
        BundleError, TransferError: as :func:`export_docker_archive`.
    """
    if src.transport == "docker":
        assert src.reference is not None
        name = str(src.reference)
        return export_docker_archive([src.reference], dst.path, options=options,
                                     platform=platform, jobs=jobs, reporter=reporter,
                                     stop=stop, names={name: dst.ref_name or name})
    store: LayoutStore | ArchiveStore | DockerArchive
    if src.transport == "oci":
        store = LayoutStore(src.path)
    elif reads_by_offsets(src.path):
        store = open_archive(src.path)
    else:
        raise LocationError(text, "a docker-archive: destination reads its source by "
                                  "offsets: give an uncompressed .tar file (zstd -d)")
    try:
        entry = select_entry(src, store.read_index(), text)
        written = write_docker_archive(store, [(dst.ref_name or entry_name(entry), entry)],
                                       dst.path, platform=platform, reporter=reporter,
                                       stop=stop)
        written.notes[:0] = getattr(store, "notes", ())  # a manifest built on the way
        return written
    finally:
        if not isinstance(store, LayoutStore):
            store.close()

"""docker-archive out: ``bundler export --format docker-archive`` and ``bundler copy ...
docker-archive:FILE[:NAME]``, straight from the source store (registries, a layout, an
archive file): no bundle is written first.

The driver chooses what ``docker load`` gets (one image manifest per image: of an index,
the platform asked for, else ``linux/amd64``, else the only one; the choice is
reported), then runs the one transfer engine (:class:`~bundler.engine.push.PushRun`)
into a :class:`~bundler.engine.bundle_destination.BundleDestination` over a
:class:`~bundler.stores.docker_archive_writer.DockerArchiveExport`, as an export does
into an OCI archive: every blob climbs the same ladder and streams from the source into
the archive, one at a time in the archive's order (a docker archive has no spool).

Spec: image-spec ``image-layout.md``; the docker save format (``manifest.json``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BundleError, Cancelled, LocationError, TransferError
from ..events import NullReporter, Reporter
from ..oci.content import Descriptor, Index, Manifest, entry_name, is_non_distributable
from ..oci.digest import Digest
from ..oci.platforms import kept_children
from ..oci.reference import Location, Reference
from ..registry.client import TransportOptions
from ..stores import Store
from ..stores.archive_files import ArchiveStore, DockerArchive, open_archive, reads_by_offsets
from ..stores.docker_archive_writer import DockerArchiveExport, SavedImage, refuse_taken
from ..stores.layout import LayoutStore
from .bundle_destination import BundleDestination
from .copy_locations import select_entry
from .destination import BundleEntry
from .importing import transfer
from .naming import Target
from .parallel import ClientPool
from .push import PushRun

__all__ = ["DockerArchiveResult", "choose_platform", "copy_to_docker_archive",
           "export_docker_archive", "write_docker_archive", "zstd_layers"]

DEFAULT_PLATFORM = "linux/amd64"


@dataclass
class DockerArchiveResult:
    """What a docker archive export wrote.

    Attributes:
        images: one per image. blobs, bytes: blobs written (configs and layers) and
        their bytes. notes: the platform chosen from each index, one line each.
    """

    images: list[SavedImage] = field(default_factory=list)
    blobs: int = 0
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


def choose_platform(name: str, index: Index, platform: str | None,
                    kept: Sequence[Descriptor] | None = None) -> tuple[Descriptor, str]:
    """The child of an index that ``docker load`` gets: ``platform`` (``os/arch[/variant]``)
    if given, else ``linux/amd64``, else the only image manifest.

    Args:
        kept: the children to choose from (a sparse index's kept ones), else all.

    Returns:
        (the child descriptor, its platform as text).

    Raises:
        BundleError: no child of that platform, or several and none is linux/amd64
        (listing the platforms).
    """
    children = [c for c in (index.manifests if kept is None else kept)
                if c.platform is not None and c.is_manifest
                and c.platform.os != "unknown"]  # attestation manifests are unknown/unknown
    held = [str(c.platform) for c in children]
    wanted = platform or DEFAULT_PLATFORM
    matches = [c for c in children if str(c.platform) == wanted
               or (c.platform is not None and "/".join(wanted.split("/")[:2]) == str(c.platform)
                   and wanted.count("/") == 1)]
    if not matches and platform is None and len(children) == 1:
        matches = children
    if not matches:
        asked = f"platform {platform}" if platform else f"{DEFAULT_PLATFORM} (the default)"
        raise BundleError(f"{name}: the index has no image for {asked}; it has "
                          f"{', '.join(held) or 'no platform images'}: choose one with "
                          "--platform OS/ARCH[/VARIANT]")
    return matches[0], str(matches[0].platform)


def saved_images(store: Store, images: list[tuple[str, Descriptor]], platform: str | None,
                 notes: list[str]) -> list[tuple[SavedImage, Manifest]]:
    """The image manifest each of ``images`` is written as (an index: one platform's,
    see :func:`choose_platform`, the choice added to ``notes``).

    Args:
        store: where the images are read (a layout, an archive, a registry source).
        images: (name, descriptor) pairs; the name (a full reference with a tag) becomes
            the ``RepoTags`` entry; "" or a digest reference writes ``RepoTags: null``.
        platform: ``os/arch[/variant]`` to take from an index.
        notes: receives one line per index.

    Raises:
        BundleError: an index without the platform; not an image manifest with a
        config; a non-distributable layer the store does not hold. What the store
        raises (ManifestError, IntegrityError, RegistryError, ...).
    """
    chosen: list[tuple[SavedImage, Manifest]] = []
    for name, descriptor in images:
        item = store.get_manifest(descriptor)
        platform_of = None
        if isinstance(item, Index):
            kept = kept_children(descriptor, item.manifests)  # a sparse index: its platforms
            descriptor, platform_of = choose_platform(name or str(descriptor.digest), item,
                                                      platform, kept)
            notes.append(f"{name or descriptor.digest}: an index; docker load takes "
                         f"one platform: {platform_of} was written")
            item = store.get_manifest(descriptor)
        if not isinstance(item, Manifest) or item.config is None:
            raise BundleError(f"{name or descriptor.digest}: not an image manifest with a "
                              "config; docker load cannot take it")
        for layer in item.layers:
            if is_non_distributable(layer) and not store.has_blob(layer.digest):
                raise BundleError(f"{name or descriptor.digest}: non-distributable layer "
                                  f"{layer.digest} is not in the source; docker load needs "
                                  "every layer")
        chosen.append((SavedImage(name, Descriptor(item.media_type, descriptor.digest,
                                                   descriptor.size), platform_of), item))
    return chosen


def zstd_layers(store: Store, manifest: Manifest) -> dict[int, Digest]:
    """The zstd layers of an image (position -> diff_id from its config, read from
    ``store``): ``docker load`` (Docker 28's graph drivers) fails on them with
    ``unexpected EOF``, so the archive holds their tars too.

    Raises:
        BundleError: the config gives no diff_id for one.
    """
    positions = [n for n, layer in enumerate(manifest.layers)
                 if layer.media_type.endswith("+zstd")]
    if not positions or manifest.config is None:
        return {}
    with store.open_blob(manifest.config) as reader:
        raw = reader.read()
    try:
        diff_ids = json.loads(raw)["rootfs"]["diff_ids"]
        return {n: Digest.parse(diff_ids[n]) for n in positions}
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BundleError(f"config {manifest.config.digest}: no diff_id for its zstd "
                          f"layers ({exc}); docker load needs the layers' tars") from None


def write_docker_archive(
    store: Store,
    images: list[tuple[str, Descriptor]],
    output: str | os.PathLike[str],
    *,
    platform: str | None = None,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
) -> DockerArchiveResult:
    """Write ``images`` of ``store`` as a new docker archive (see the module docstring).

    Args:
        store: where the images are read (a layout, an archive, a registry source).
        images: (name, descriptor) pairs; the name (a full reference with a tag) becomes
            the ``RepoTags`` entry; "" or a digest reference writes ``RepoTags: null``.
        output: the archive file to create (it must not exist).
        platform: ``os/arch[/variant]`` to take from an index.
        jobs: images planned at once (the blobs go one at a time, in archive order).
        reporter: receives the events of the run. stop: set to cancel.

    Returns:
        A :class:`DockerArchiveResult`.

    Raises:
        BundleError: the output exists or cannot be written; an index without the
        platform; an image whose layer is not in the store (before anything is written).
        TransferError: an image could not be read (naming it, wrapping the cause).
        Cancelled: ``stop`` was set (nothing is left behind).
    """
    report = reporter or NullReporter()
    stop = stop or threading.Event()
    refuse_taken(Path(output))
    result = DockerArchiveResult()
    chosen = saved_images(store, images, platform, result.notes)
    zstd = [zstd_layers(store, manifest) for _, manifest in chosen]
    manifests = {image.descriptor.digest: manifest for image, manifest in chosen}
    targets = [Target(image.name or str(image.descriptor.digest), image.descriptor,
                      BundleEntry(image.name or None, image.descriptor.digest))
               for image, _ in chosen]
    with DockerArchiveExport(output) as archive:
        bundle = BundleDestination(archive, report, refetch=False)
        run = PushRun(bundle, report=report, stop=stop, tags_last=True)
        run.plan(targets, lambda d: manifests[d.digest], jobs=jobs)
        run.check_destinations(jobs=jobs, head_blobs=True)
        archive.start([(image, manifest, layers)
                       for (image, manifest), layers in zip(chosen, zstd, strict=True)])
        order = sorted(run.pending, key=lambda blob: archive.position(blob.digest))
        transfer(run, order, lambda blob: store, jobs=1)  # one member after the other
        if stop.is_set():
            raise Cancelled("cancelled")
        bundle.store_manifests([run.plans[t] for t in targets], jobs=1)
        for target in targets:
            run.tag(target)
        run.finish()
    result.images = [image for image, _ in chosen]
    result.blobs = len(bundle.fetched) + archive.tars[0]
    result.bytes = bundle.bytes_fetched + archive.tars[1]
    return result



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
        return write_docker_archive(source, images, output, platform=platform, jobs=jobs,
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
                                       dst.path, platform=platform, jobs=jobs,
                                       reporter=reporter, stop=stop)
        written.notes[:0] = getattr(store, "notes", ())  # a manifest built on the way
        return written
    finally:
        if not isinstance(store, LayoutStore):
            store.close()

"""Write images as a docker archive that ``docker load`` and ``podman load`` accept and
that is also an OCI image layout: the Docker 25+ dual form.

Members, in bundler's one-pass order (so ``bundler import -`` reads it from a pipe too):
``oci-layout``, ``index.json`` (one descriptor per image, named by
``org.opencontainers.image.ref.name`` and ``io.containerd.image.name``),
``manifest.json`` (docker's list of ``Config``, ``RepoTags``, ``Layers``, each a path
``blobs/sha256/<hex>``), then the manifests, the configs and the layers under
``blobs/sha256/``. Digests are kept: the manifest, config and layers are the source's
bytes, streamed through the verifying reader into the tar, never whole in memory.

``docker load`` reads no zstd layer: for one, ``manifest.json`` names the layer's tar
(``blobs/sha256/<diff_id>``, checked against the config), written after the blobs; the
OCI side keeps the zstd layer.

``docker load`` takes one platform per image: an index is written as one of its image
manifests, the one of the platform asked for, else ``linux/amd64``, else the only one;
the choice is reported. The archive is written under a temp name beside the output,
fsynced, and renamed when complete.

Spec: image-spec ``image-layout.md``; the docker save format (``manifest.json``); Docker
Image Specification v1.2.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from ..errors import BundleError, Cancelled
from ..events import Event, NullReporter, Reporter
from ..oci.content import (
    CONTAINERD_NAME,
    OCI_INDEX,
    REF_NAME,
    Descriptor,
    Index,
    Manifest,
    is_non_distributable,
)
from ..oci.digest import Digest
from ..oci.platforms import kept_children
from ..oci.reference import Reference
from . import Store
from .layout import fsync_dir

__all__ = ["DockerArchiveResult", "SavedImage", "choose_platform", "write_docker_archive"]

DEFAULT_PLATFORM = "linux/amd64"


@dataclass
class SavedImage:
    """One image written: its name (or ""), the manifest written and its platform."""

    name: str
    descriptor: Descriptor
    platform: str | None = None


@dataclass
class DockerArchiveResult:
    """What :func:`write_docker_archive` wrote.

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


def _repo_tag(name: str) -> str | None:
    """The ``RepoTags`` entry of a name: a full reference with a tag, else None (a bare
    tag or digest names no repository)."""
    if not any(c in name for c in "/:") or name.startswith("sha256:"):
        return None
    try:
        ref = Reference.parse(name, default_tag=None)
    except ValueError:
        return None
    return f"{ref.registry}/{ref.repository}:{ref.tag}" if ref.tag else None


def write_docker_archive(
    store: Store,
    images: list[tuple[str, Descriptor]],
    output: str | os.PathLike[str],
    *,
    platform: str | None = None,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
) -> DockerArchiveResult:
    """Write ``images`` of ``store`` as a docker archive (see the module docstring).

    Args:
        store: where the images are read (a layout, an archive, a registry source).
        images: (name, descriptor) pairs; the name (a full reference with a tag) becomes
            the ``RepoTags`` entry; "" or a digest reference writes ``RepoTags: null``.
        output: the archive file to create (it must not exist).
        platform: ``os/arch[/variant]`` to take from an index.
        reporter: receives blob events. stop: set to cancel.

    Returns:
        A :class:`DockerArchiveResult`.

    Raises:
        BundleError: the output exists or cannot be written; an index without the
        platform; an image whose layer is not in the store. What the store raises
        (IntegrityError, TransferError, ...). Cancelled.
    """
    report = reporter or NullReporter()
    stop = stop or threading.Event()
    path = Path(output)
    if path.exists() or path.is_symlink():
        raise BundleError(f"{path} already exists; a docker archive is written whole: "
                          "remove it or choose another output name")
    result = DockerArchiveResult()
    plans: list[tuple[SavedImage, Manifest]] = []
    for name, descriptor in images:
        item = store.get_manifest(descriptor)
        chosen = None
        if isinstance(item, Index):
            kept = kept_children(descriptor, item.manifests)  # a sparse index: its platforms
            descriptor, chosen = choose_platform(name or str(descriptor.digest), item, platform,
                                                 kept)
            result.notes.append(f"{name or descriptor.digest}: an index; docker load takes "
                                f"one platform: {chosen} was written")
            item = store.get_manifest(descriptor)
        if not isinstance(item, Manifest) or item.config is None:
            raise BundleError(f"{name or descriptor.digest}: not an image manifest with a "
                              "config; docker load cannot take it")
        for layer in item.layers:
            if is_non_distributable(layer) and not store.has_blob(layer.digest):
                raise BundleError(f"{name or descriptor.digest}: non-distributable layer "
                                  f"{layer.digest} is not in the source; docker load needs "
                                  "every layer")
        plans.append((SavedImage(name, Descriptor(item.media_type, descriptor.digest,
                                                  descriptor.size), chosen), item))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _write(tar, store, plans, result, report, stop)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise BundleError(f"{path}: cannot write the docker archive: "
                          f"{exc.strerror or exc}") from exc
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return result


def _member(tar: tarfile.TarFile, name: str, size: int, source: Any) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    tar.addfile(info, source)


def _write(tar: tarfile.TarFile, store: Store, plans: list[tuple[SavedImage, Manifest]],
           result: DockerArchiveResult, report: Reporter, stop: threading.Event) -> None:
    def blob(d: Descriptor | Digest) -> str:
        digest = d if isinstance(d, Digest) else d.digest
        return f"blobs/{digest.algorithm}/{digest.hex}"

    entries, saved = [], []
    tars: dict[Digest, Descriptor] = {}  # diff_id -> its zstd layer
    for image, manifest in plans:
        tag = _repo_tag(image.name)
        annotations = {REF_NAME: image.name, CONTAINERD_NAME: image.name} if image.name else {}
        entries.append(image.descriptor.with_annotations(annotations).to_dict())
        assert manifest.config is not None
        layers = [blob(layer) for layer in manifest.layers]
        for position, diff_id in _zstd_layers(store, manifest).items():
            layers[position] = blob(diff_id)  # docker load reads no zstd: the layer's tar
            tars.setdefault(diff_id, manifest.layers[position])
        saved.append({"Config": blob(manifest.config), "RepoTags": [tag] if tag else None,
                      "Layers": layers})
        result.images.append(image)
    small = [(b'{"imageLayoutVersion":"1.0.0"}', "oci-layout"),
             (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                          "manifests": entries}).encode(), "index.json"),
             (json.dumps(saved).encode() + b"\n", "manifest.json")]
    written: set[Digest] = set()
    for data, name in small:
        _member(tar, name, len(data), io.BytesIO(data))
    for image, manifest in plans:
        if image.descriptor.digest not in written:
            written.add(image.descriptor.digest)
            _member(tar, blob(image.descriptor), len(manifest.raw), io.BytesIO(manifest.raw))
    blobs = [m.config for _, m in plans if m.config is not None]
    blobs += [layer for _, m in plans for layer in m.layers]
    for descriptor in blobs:
        if descriptor.digest in written:
            continue
        if stop.is_set():
            raise Cancelled("cancelled")
        written.add(descriptor.digest)
        name = str(descriptor.digest)
        report(Event("blob", name, "start", total=descriptor.size))
        with store.open_blob(descriptor) as reader:
            _member(tar, blob(descriptor), descriptor.size, _Counted(reader, _progress(
                report, name, descriptor.size, stop)))
        report(Event("blob", name, "done", descriptor.size, descriptor.size))
        result.blobs += 1
        result.bytes += descriptor.size
    for diff_id, layer in tars.items():
        if diff_id not in written:
            written.add(diff_id)
            result.bytes += _write_tar_of(tar, store, layer, diff_id, blob(diff_id), stop)
            result.blobs += 1


def _zstd_layers(store: Store, manifest: Manifest) -> dict[int, Digest]:
    """The zstd layers of an image (position -> diff_id from its config): ``docker load``
    (Docker 28's graph drivers) fails on them with ``unexpected EOF``."""
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


def _write_tar_of(tar: tarfile.TarFile, store: Store, layer: Descriptor, diff_id: Digest,
                  name: str, stop: threading.Event) -> int:
    """Add the uncompressed tar of a zstd ``layer`` as ``name``, spooled to a temporary
    file (its size goes first in the tar header) and checked against ``diff_id``."""
    decompressor = zstandard.ZstdDecompressor()
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as spool:
        with store.open_blob(layer) as reader, \
                decompressor.stream_reader(reader, read_across_frames=True) as plain:
            while chunk := plain.read(1 << 20):
                if stop.is_set():
                    raise Cancelled("cancelled")
                digest.update(chunk)
                spool.write(chunk)
        if f"sha256:{digest.hexdigest()}" != str(diff_id):
            raise BundleError(f"layer {layer.digest}: its tar has sha256 "
                              f"{digest.hexdigest()}, not the diff_id {diff_id} of the config")
        size = spool.tell()
        spool.seek(0)
        _member(tar, name, size, spool)
    return size


def _progress(report: Reporter, name: str, size: int,
              stop: threading.Event) -> Callable[[int], None]:
    def on_bytes(done: int) -> None:
        if stop.is_set():
            raise Cancelled("cancelled")
        report(Event("blob", name, "progress", done, size))
    return on_bytes


class _Counted:
    """A reader that reports the bytes read so far."""

    def __init__(self, reader: Any, on_bytes: Callable[[int], None]) -> None:
        self._reader, self._on_bytes, self._done = reader, on_bytes, 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._reader.read(n)
        self._done += len(data)
        self._on_bytes(self._done)
        return data

"""A docker archive being written, that ``docker load`` and ``podman load`` accept and
that is also an OCI image layout (the Docker 25+ dual form): the
:class:`~bundler.stores.BundleStore` the transfer engine puts images into for
``export --format docker-archive`` and ``copy ... docker-archive:`` (driven by
:mod:`bundler.engine.docker_export`, as :mod:`bundler.engine.bundle_destination` drives
every bundle store).

Members, in bundler's one-pass order (so ``bundler import -`` reads it from a pipe too):
``oci-layout``, ``index.json`` (one descriptor per image, named by
``org.opencontainers.image.ref.name`` and ``io.containerd.image.name``),
``manifest.json`` (docker's list of ``Config``, ``RepoTags``, ``Layers``, each a path
``blobs/sha256/<hex>``), then the manifests (all written by
:meth:`DockerArchiveExport.start`), the configs and the layers under ``blobs/sha256/``
(:meth:`DockerArchiveExport.put_blob`, one at a time in that order). Digests are kept:
the manifest, config and layers are the source's bytes, streamed through the verifying
reader into the tar, never whole in memory.

``docker load`` reads no zstd layer: for one, ``manifest.json`` names the layer's tar
(``blobs/sha256/<diff_id>``, from the config:
:func:`bundler.engine.docker_export.zstd_layers`), which
:meth:`DockerArchiveExport.commit` decompresses from the member just written, checks
against the diff_id and appends after the blobs; the OCI side keeps the zstd layer.

``docker load`` takes one platform per image: the driver gives each image as one image
manifest (of an index, the platform chosen). The archive is written under a temp name
beside the output, fsynced, and renamed when complete.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from ..errors import BundleError
from ..oci.content import (
    CONTAINERD_NAME,
    OCI_INDEX,
    REF_NAME,
    Descriptor,
    Manifest,
)
from ..oci.digest import Digest, VerifyingReader
from ..oci.reference import Reference
from .layout import fsync_dir

__all__ = ["DockerArchiveExport", "SavedImage", "refuse_taken"]


@dataclass
class SavedImage:
    """One image written: its name (or ""), the manifest written and its platform."""

    name: str
    descriptor: Descriptor
    platform: str | None = None


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


def refuse_taken(path: Path) -> None:
    """Refuse a docker archive output that exists.

    Raises:
        BundleError: ``path`` exists (or is a dangling symbolic link).
    """
    if path.exists() or path.is_symlink():
        raise BundleError(f"{path} already exists; a docker archive is written whole: "
                          "remove it or choose another output name")


def _blob(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


def _member(tar: tarfile.TarFile, name: str, size: int, source: Any) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    tar.addfile(info, source)


class DockerArchiveExport:
    """A new docker archive, as the :class:`~bundler.stores.BundleStore` of an export
    (see the module docstring): :meth:`start` writes the head and the manifests, then
    :meth:`put_blob` takes the configs and layers one at a time, in :meth:`position`
    order. Use as a context manager: the archive is committed (fsynced, renamed) on
    success, its temp file removed on error.

    Args:
        output: the archive file to create (it must not exist).

    Attributes:
        tars: the tar members written for zstd layers (count, bytes), after commit.

    Raises:
        BundleError: the output exists or cannot be written.
    """

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.path = Path(output)
        refuse_taken(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                        dir=self.path.parent)
        except OSError as exc:
            raise self._failed(exc) from exc
        self.temp = Path(temp)
        self._file = os.fdopen(fd, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w",  # noqa: SIM115 - closed
                                 format=tarfile.PAX_FORMAT)  # in commit() or abort()
        self._written: set[Digest] = set()
        self._order: dict[Digest, int] = {}  # blob -> its place among the blobs
        self._next = 0
        self._tars: dict[Digest, Descriptor] = {}  # diff_id -> its zstd layer
        self._at: dict[Digest, int] = {}  # zstd layer -> offset of its bytes in the file
        self.tars = (0, 0)

    def _failed(self, exc: OSError) -> BundleError:
        return BundleError(f"{self.path}: cannot write the docker archive: "
                           f"{exc.strerror or exc}")

    def start(self, images: list[tuple[SavedImage, Manifest, dict[int, Digest]]]) -> None:
        """Write ``oci-layout``, ``index.json``, ``manifest.json`` and the manifests; fix
        the order of the blobs (the configs, then the layers, each once).

        Args:
            images: each image written, its manifest, and its zstd layers (position ->
                diff_id: :func:`zstd_layers`).
        """
        entries, saved = [], []
        for image, manifest, zstd in images:
            tag = _repo_tag(image.name)
            annotations = ({REF_NAME: image.name, CONTAINERD_NAME: image.name}
                           if image.name else {})
            entries.append(image.descriptor.with_annotations(annotations).to_dict())
            assert manifest.config is not None
            layers = [_blob(layer.digest) for layer in manifest.layers]
            for position, diff_id in zstd.items():
                layers[position] = _blob(diff_id)  # docker load reads no zstd: the tar
                self._tars.setdefault(diff_id, manifest.layers[position])
            saved.append({"Config": _blob(manifest.config.digest),
                          "RepoTags": [tag] if tag else None, "Layers": layers})
        small = [(b'{"imageLayoutVersion":"1.0.0"}', "oci-layout"),
                 (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                              "manifests": entries}).encode(), "index.json"),
                 (json.dumps(saved).encode() + b"\n", "manifest.json")]
        try:
            for data, name in small:
                _member(self._tar, name, len(data), io.BytesIO(data))
            for image, manifest, _ in images:
                if image.descriptor.digest not in self._written:
                    self._written.add(image.descriptor.digest)
                    _member(self._tar, _blob(image.descriptor.digest), len(manifest.raw),
                            io.BytesIO(manifest.raw))
        except OSError as exc:
            raise self._failed(exc) from exc
        blobs = [m.config for _, m, _ in images if m.config is not None]
        blobs += [layer for _, m, _ in images for layer in m.layers]
        order = dict.fromkeys(d.digest for d in blobs if d.digest not in self._written)
        self._order = {digest: n for n, digest in enumerate(order)}

    def position(self, digest: Digest) -> int:
        """The blob's place in the archive: :meth:`put_blob` takes them in this order."""
        return self._order.get(digest, len(self._order))

    # -- the store verbs an export uses -----------------------------------------------
    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        """True for content already in the archive."""
        return digest in self._written

    def put_blob(self, digest: Digest, size: int, open_source: Callable[[int], Iterable[bytes]],
                 *, on_bytes: Callable[[int], None] | None = None) -> int:
        """Append a blob, streamed from ``open_source(0)`` through the verifying reader.

        Returns:
            Bytes written.

        Raises:
            BundleError: not the blob whose turn it is, or the archive cannot be
            written. IntegrityError: wrong size or digest (the archive is then unusable:
            the export fails).
        """
        if self._order.get(digest) != self._next:
            raise BundleError(f"{self.path}: {digest} is not the next blob of the archive")
        chunks = open_source(0)
        try:
            reader = VerifyingReader(chunks, digest, size, where=f"{self.path}: {digest}")
            _member(self._tar, _blob(digest), size, reader)
        except OSError as exc:
            raise self._failed(exc) from exc
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if any(layer.digest == digest for layer in self._tars.values()):
            self._at[digest] = self._tar.offset - -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        self._written.add(digest)
        self._next += 1
        if on_bytes is not None:
            on_bytes(size)
        return size

    def put_manifest(self, digest: Digest, data: bytes) -> None:
        """Manifests were written by :meth:`start`; anything else is refused."""
        if digest not in self._written:
            raise BundleError(f"{self.path}: {digest} was not planned for this archive")

    def read_index(self) -> list[Descriptor]:
        """A new archive has no earlier entries."""
        return []

    def write_index(self, descriptors: Iterable[Descriptor],
                    annotations: Mapping[str, str] | None = None) -> None:
        """Nothing: ``index.json`` and ``manifest.json`` were written by :meth:`start`."""

    def sync(self) -> None:
        """Nothing: the archive is fsynced when committed."""

    # -- end ----------------------------------------------------------------------------
    def commit(self) -> None:
        """Append the tars of the zstd layers, end the archive, fsync it and give it its
        name.

        Raises:
            BundleError: a blob was not written; a zstd layer's tar is not its diff_id;
            the archive cannot be written.
        """
        missing = [d for d in self._order if d not in self._written]
        if missing:
            raise BundleError(f"{self.path}: blob {missing[0]} was not written to the "
                              "docker archive")
        try:
            count, total = 0, 0
            for diff_id, layer in self._tars.items():
                if diff_id not in self._written:
                    self._written.add(diff_id)
                    total += self._write_tar_of(layer, diff_id)
                    count += 1
            self._tar.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.temp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            raise self._failed(exc) from exc
        self.tars = (count, total)

    def _write_tar_of(self, layer: Descriptor, diff_id: Digest) -> int:
        """Add the uncompressed tar of a zstd ``layer`` (read back from the member just
        written) as ``blobs/sha256/<diff_id>``, spooled to a temporary file (its size goes
        first in the tar header) and checked against ``diff_id``."""
        self._file.flush()
        digest = hashlib.sha256()
        with tempfile.TemporaryFile() as spool, open(self.temp, "rb") as written:
            written.seek(self._at[layer.digest])
            member = _Slice(written, layer.size)
            with zstandard.ZstdDecompressor().stream_reader(
                    member, read_across_frames=True) as plain:
                while chunk := plain.read(1 << 20):
                    digest.update(chunk)
                    spool.write(chunk)
            if f"sha256:{digest.hexdigest()}" != str(diff_id):
                raise BundleError(f"layer {layer.digest}: its tar has sha256 "
                                  f"{digest.hexdigest()}, not the diff_id {diff_id} of the "
                                  "config")
            size = spool.tell()
            spool.seek(0)
            _member(self._tar, _blob(diff_id), size, spool)
        return size

    def abort(self) -> None:
        """Remove the temp file."""
        self._file.close()
        self.temp.unlink(missing_ok=True)

    def __enter__(self) -> DockerArchiveExport:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.commit()
        except BaseException:
            self.abort()
            raise


class _Slice:
    """``size`` bytes of a file from its current position, as a file object."""

    def __init__(self, file: Any, size: int) -> None:
        self._file, self._left = file, size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data: bytes = self._file.read(n)
        self._left -= len(data)
        return data

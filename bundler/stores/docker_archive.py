"""``docker save`` and ``podman save`` archives read as a random-access
:class:`~bundler.stores.Store`.

``manifest.json`` is a JSON list, one object per image: ``Config`` (the member holding
the image config), ``RepoTags`` (the names, or null for an image saved by ID) and
``Layers`` (the members holding the uncompressed layer tars, bottom first). Three forms
exist:

- **legacy** (Docker before 25, ``podman save``): ``<config hex>.json``,
  ``<layer id>/layer.tar`` (podman: ``<diff id>.tar``, with ``<id>/layer.tar`` a link to
  it; docker links a layer shared by two layer ids the same way), ``repositories``. The
  registry manifest is not in the archive: this store builds a Docker schema2 manifest
  for it, as ``docker push`` would: the config bytes and digest kept, each layer gzip
  compressed (level 6, no name, mtime 0). The compressed digests are computed in a first
  pass when the archive is opened (streamed, never held), and the layers compressed
  again, identically, when read; the verifying reader checks they come out the same.
  The manifest digest is therefore new: :attr:`DockerArchive.notes` says so.
- **containerd image store** and **Docker 25+**: an OCI image layout plus
  ``manifest.json``. Where ``index.json`` names complete images,
  :func:`bundler.stores.archive_files.open_archive` reads the archive as the layout;
  here are read the others (Docker 25.0 writes ``"manifests": null`` for an image saved
  by ID; the containerd store saves an index whose other platforms are absent): each
  ``manifest.json`` image is the layout's image manifest whose config is its ``Config``,
  digests kept.

Checked when opened, before anything is read for a push (:class:`BundleError` naming
the member): every ``Config`` and ``Layers`` entry is a member of the archive (never a
path outside it), the config's ``rootfs.diff_ids`` count equals the ``Layers`` count, and
in the legacy form each layer's sha256 is the config's diff_id.

Spec: Docker Image Specification v1.2 (``docker save`` layout, ``rootfs.diff_ids``);
Docker Image Manifest V2 Schema 2; image-spec ``image-layout.md``.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import BundleError, BundlerError, InvalidReferenceError, SizeMismatchError
from ..oci.content import (
    CONTAINERD_NAME,
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    REF_NAME,
    Descriptor,
    Index,
    Manifest,
    parse_manifest,
)
from ..oci.digest import Digest, VerifyingReader
from ..oci.limits import MANIFEST_LIMIT
from ..oci.reference import Reference
from .seekable_archive import ArchiveStore, read_small
from .tar_index import TarEntry, TarIndex

__all__ = ["DOCKER_LAYER_GZIP", "DockerArchive", "gzip_chunks"]

DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_CHUNK = 1 << 20
#: gzip level of the layers bundler compresses (Go's DefaultCompression, as docker push)
GZIP_LEVEL = 6
_GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF])  # no name, mtime 0, OS unknown


def gzip_chunks(read: Any) -> Iterator[bytes]:
    """gzip (RFC 1952) of what ``read(n)`` returns, in chunks; the same bytes every time.

    Args:
        read: a ``read(n) -> bytes`` function (b"" at the end).
    """
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
    crc, size = 0, 0
    yield _GZIP_HEADER
    while chunk := read(_CHUNK):
        crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush() + crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")


@dataclass(frozen=True)
class _Blob:
    """Where a blob's bytes come from: a member as it is, or gzip of a member."""

    entry: TarEntry
    size: int
    gzip: bool


class DockerArchive:
    """A :class:`~bundler.stores.Store` over a ``docker save`` archive (module docstring).

    Args:
        index: the archive's members; closed by :meth:`close`.
        layout: the archive read as an OCI layout, when it has ``index.json``.
        jobs: layers compressed at once when the manifest is built.

    Attributes:
        notes: one line per image whose manifest bundler built.

    Raises:
        BundleError: ``manifest.json`` unreadable; a ``Config`` or ``Layers`` entry that is
        no member; a layer count that is not the config's; a layer whose sha256 is not its
        diff_id; in a layout form, no image manifest with that config.
    """

    def __init__(self, index: TarIndex, layout: ArchiveStore | None = None,
                 jobs: int = 4) -> None:
        self.index, self.layout, self.where = index, layout, index.where
        self.notes: list[str] = []
        self._manifests: dict[Digest, bytes] = {}
        self._blobs: dict[Digest, _Blob] = {}
        self._entries: list[Descriptor] = []
        self._jobs = jobs
        for position, item in enumerate(self._read_manifest_json()):
            self._add_image(position, item)

    # -- opening -----------------------------------------------------------------------
    def _read_manifest_json(self) -> list[dict[str, Any]]:
        data = read_small(self.index, "manifest.json", MANIFEST_LIMIT, "manifest.json")
        assert data is not None
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise BundleError(f"{self.where}: manifest.json is not JSON: {exc}") from None
        if not isinstance(doc, list) or not all(
                isinstance(i, dict) and isinstance(i.get("Config"), str)
                and isinstance(i.get("Layers"), list)
                and all(isinstance(x, str) for x in i["Layers"])
                and isinstance(i.get("RepoTags") or [], list)
                and all(isinstance(t, str) for t in i.get("RepoTags") or []) for i in doc):
            raise BundleError(f"{self.where}: manifest.json is not a docker save manifest "
                              "(a list of objects with Config, RepoTags and Layers)")
        return doc

    def _member(self, name: str, what: str) -> TarEntry:
        entry = self.index.get(name) if ".." not in name.split("/") else None
        if entry is None or name.startswith("/"):
            raise BundleError(f"{self.where}: manifest.json: {what} {name!r} is not a member "
                              "of the archive")
        return entry

    def _add_image(self, position: int, item: dict[str, Any]) -> None:
        tags = list(item.get("RepoTags") or [])
        label = f"image #{position} ({', '.join(tags) or 'no RepoTags'})"
        config_entry = self._member(item["Config"], "Config")
        layers = [self._member(name, "layer") for name in item["Layers"]]
        if config_entry.size > MANIFEST_LIMIT:
            raise BundleError(f"{self.where}: {item['Config']}: a config of "
                              f"{config_entry.size} bytes is too large")
        config_raw = self.index.read(config_entry)
        config = Digest.of(config_raw)
        diff_ids = _diff_ids(config_raw)
        if diff_ids is None or len(diff_ids) != len(layers):
            count = "no rootfs.diff_ids" if diff_ids is None else f"{len(diff_ids)} diff_ids"
            raise BundleError(f"{self.where}: manifest.json: {label} has {len(layers)} "
                              f"Layers, but its config {item['Config']} has {count}")
        found = self._layout_manifest(config) if self.layout is not None else None
        if found is None:
            found = self._build(label, item, config_entry, config, layers, diff_ids)
        names = [_full_name(t, self.where) for t in tags]
        for name in names or [""]:
            annotations = {REF_NAME: name, CONTAINERD_NAME: name} if name else {}
            self._entries.append(found.with_annotations(annotations) if annotations
                                 else found)

    def _layout_manifest(self, config: Digest) -> Descriptor | None:
        """The layout's image manifest whose config is ``config`` (index.json first, then
        any small blob that is such a manifest)."""
        assert self.layout is not None
        layout = self.layout
        seen: set[Digest] = set()
        stack = list(layout.read_index())
        while stack:
            descriptor = stack.pop(0)
            if descriptor.digest in seen or not layout.has_blob(descriptor.digest):
                continue
            seen.add(descriptor.digest)
            try:
                item = layout.get_manifest(descriptor)
            except BundlerError:
                continue
            if isinstance(item, Index):
                stack.extend(item.manifests)
            elif item.config is not None and item.config.digest == config:
                return Descriptor(descriptor.media_type, descriptor.digest, descriptor.size,
                                  platform=descriptor.platform)
        for name in layout.blob_names():
            entry = self.index.get(name)
            if entry is None or entry.size > 64 << 10:
                continue
            raw = self.index.read(entry)
            try:
                item = parse_manifest(raw)
            except BundlerError:
                continue
            if isinstance(item, Manifest) and item.config is not None \
                    and item.config.digest == config and Digest.of(raw).hex == name[-64:]:
                return Descriptor(item.media_type, Digest.of(raw), len(raw))
        return None

    def _build(self, label: str, item: dict[str, Any], config_entry: TarEntry,
               config: Digest, layers: list[TarEntry], diff_ids: list[str]) -> Descriptor:
        """A Docker schema2 manifest for a legacy image: config kept, layers gzipped."""
        with ThreadPoolExecutor(max_workers=self._jobs) as pool:
            sums = list(pool.map(self._compress_pass, layers))
        descriptors = []
        for position, (entry, (diff_id, digest, size)) in enumerate(zip(layers, sums, strict=True)):
            if diff_id != diff_ids[position]:
                raise BundleError(f"{self.where}: {item['Layers'][position]}: its sha256 "
                                  f"{diff_id} is not the diff_id {diff_ids[position]} its "
                                  f"config names for layer {position}")
            self._blobs[digest] = _Blob(entry, size, gzip=True)
            descriptors.append({"mediaType": DOCKER_LAYER_GZIP, "size": size,
                                "digest": str(digest)})
        self._blobs[config] = _Blob(config_entry, config_entry.size, gzip=False)
        raw = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": config_entry.size,
                       "digest": str(config)},
            "layers": descriptors}, indent=3).encode()
        digest = Digest.of(raw)
        self._manifests[digest] = raw
        self.notes.append(f"{self.where}: {label}: a legacy docker archive holds no registry "
                          f"manifest; bundler built one (layers gzip-compressed as docker "
                          f"push does): manifest {digest} is new, config {config} is kept")
        return Descriptor(DOCKER_MANIFEST, digest, len(raw))

    def _compress_pass(self, entry: TarEntry) -> tuple[str, Digest, int]:
        """(sha256 of the member, digest and size of its gzip), streamed."""
        plain, packed, size = hashlib.sha256(), hashlib.sha256(), 0
        reader = self.index.open(entry)

        def read(n: int) -> bytes:
            data = reader.read(n)
            plain.update(data)
            return data

        for chunk in gzip_chunks(read):
            packed.update(chunk)
            size += len(chunk)
        return "sha256:" + plain.hexdigest(), Digest("sha256", packed.hexdigest()), size

    # -- Store -------------------------------------------------------------------------
    def __str__(self) -> str:
        return self.where

    def read_index(self) -> list[Descriptor]:
        """One descriptor per name in ``RepoTags`` (an unnamed one for ``null``)."""
        return list(self._entries)

    def get_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        """A built manifest, or the layout's (see :meth:`ArchiveStore.get_manifest`)."""
        raw = self._manifests.get(descriptor.digest)
        if raw is not None:
            return parse_manifest(raw, descriptor.media_type, digest=descriptor.digest)
        if self.layout is None:
            raise BundleError(f"{self.where}: manifest {descriptor.digest} is missing from "
                              "the archive")
        return self.layout.get_manifest(descriptor)

    def blob_size(self, digest: Digest) -> int | None:
        """The size in bytes of a blob the archive holds (compressed, for a built layer)."""
        if digest in self._manifests:
            return len(self._manifests[digest])
        blob = self._blobs.get(digest)
        if blob is not None:
            return blob.size
        return self.layout.blob_size(digest) if self.layout is not None else None

    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        held = self.blob_size(digest)
        return held is not None and (size is None or held == size)

    def check_blob(self, descriptor: Descriptor) -> bool:
        """Whether the blob is there with the descriptor's size (False: missing).

        Raises:
            SizeMismatchError: present with another size.
        """
        held = self.blob_size(descriptor.digest)
        if held is not None and held != descriptor.size:
            raise SizeMismatchError(digest=str(descriptor.digest), expected=descriptor.size,
                                    actual=held, where=self.where)
        return held is not None

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        """A verifying reader over a blob (a built layer is compressed as it is read).

        Raises:
            BundleError: missing. SizeMismatchError: another size. IntegrityError (while
            reading): wrong digest.
        """
        blob = self._blobs.get(descriptor.digest)
        if blob is None and self.layout is not None:
            with self.layout.open_blob(descriptor) as reader:
                yield reader
            return
        if blob is None or not self.check_blob(descriptor):
            raise BundleError(f"{self.where}: blob {descriptor.digest} is missing from the "
                              "archive")
        where = blob.entry.via or blob.entry.name
        source = gzip_chunks(self.index.open(blob.entry).read) if blob.gzip \
            else self.index.open(blob.entry)
        yield VerifyingReader(source, descriptor.digest, descriptor.size,
                              where=f"{where} (gzip-compressed)" if blob.gzip else where)

    def blob_names(self) -> list[str]:
        """The layout's blob members (none in the legacy form)."""
        return self.layout.blob_names() if self.layout is not None else []

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> DockerArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _diff_ids(config: bytes) -> list[str] | None:
    """The config's ``rootfs.diff_ids``, or None when it has none."""
    try:
        doc = json.loads(config)
    except (ValueError, RecursionError):
        return None
    rootfs = doc.get("rootfs") if isinstance(doc, dict) else None
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None
    return ids


def _full_name(tag: str, where: str) -> str:
    """A ``RepoTags`` entry as a full reference (``busybox:1`` ->
    ``docker.io/library/busybox:1``)."""
    try:
        return str(Reference.parse(tag))
    except (InvalidReferenceError, ValueError) as exc:
        raise BundleError(f"{where}: manifest.json: RepoTags entry {tag!r} is not a "
                          f"reference ({exc})") from None

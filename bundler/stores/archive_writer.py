"""Write a bundle archive: tar (pax), optionally zstd, optionally split into volumes.

:class:`ArchiveWriter` appends members to the byte stream. :class:`ArchiveExport` is
the store an export writes into: it writes ``oci-layout``, ``index.json`` and every
manifest as soon as the images are planned, then receives blobs from concurrent
downloads, spools each one to a file in a spool directory beside the output and
appends it to the archive as soon as it is its turn (configs, then layers, in plan
order), deleting the spool file. Disk use stays near the archive's size.

The archive is written under a temp name (``.NAME.*.partial``) and renamed at the end;
an interrupted export never leaves a file at the final name.

Spec: image-spec ``image-layout.md``; POSIX.1-2001 pax; RFC 8878 (Zstandard).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import zstandard

from ..content import OCI_INDEX, OCI_LAYOUT_VERSION, Descriptor, Manifest
from ..copy import ImagePlan
from ..digest import Digest, VerifyingReader
from ..errors import BundleError
from .archive import refuse_existing
from .layout import fsync_dir
from .volumes import VolumeWriter

__all__ = ["ArchiveExport", "ArchiveWriter", "index_bytes"]

_COPY_SIZE = 1 << 20


def index_bytes(descriptors: Iterable[Descriptor]) -> bytes:
    """``index.json`` of a layout: an OCI image index of ``descriptors`` (as layouts write it)."""
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX,
           "manifests": [d.to_dict() for d in descriptors]}
    return json.dumps(doc, indent=2).encode() + b"\n"


def file_mode() -> int:
    """0666 less the process umask: what ``open()`` would give a new file."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def blob_name(digest: Digest) -> str:
    """``blobs/<algorithm>/<hex>``."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


class ArchiveWriter:
    """Append members to a new tar or tar.zst archive (or its volumes).

    Args:
        output: the final archive name (``NAME``; volumes are ``NAME.000``, ...).
        fmt: ``tar`` or ``tar.zst``.
        split_size: bytes per volume, or None for one file.
        compression_level: zstd level (1-22).
        threads: zstd worker threads (-1: one per CPU; 0: single-threaded).

    Raises:
        BundleError: the output cannot be created.
    """

    def __init__(self, output: Path, fmt: str, *, split_size: int | None = None,
                 compression_level: int = 3, threads: int = -1) -> None:
        self.output = output
        self.paths: list[Path] = []
        self._temp: Path | None = None
        self._file: BinaryIO | None = None
        self._volumes: VolumeWriter | None = None
        try:
            if split_size is not None:
                self._volumes = VolumeWriter(output, split_size)
                sink: BinaryIO | VolumeWriter = self._volumes
            else:
                fd, temp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial",
                                            dir=output.parent)
                self._temp = Path(temp)
                sink = self._file = os.fdopen(fd, "wb")
        except OSError as exc:
            raise BundleError(f"{output}: cannot create the archive: {exc}") from exc
        self._zstd = None
        stream = sink
        if fmt == "tar.zst":
            compressor = zstandard.ZstdCompressor(level=compression_level, threads=threads)
            self._zstd = stream = compressor.stream_writer(sink, closefd=False)
        self._tar = tarfile.open(fileobj=stream, mode="w|",  # noqa: SIM115
                                 format=tarfile.PAX_FORMAT, copybufsize=_COPY_SIZE)

    @staticmethod
    def _info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name + "/" if directory else name)
        info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
        info.mode = 0o755 if directory else 0o644
        info.size, info.mtime, info.uid, info.gid = size, 0, 0, 0
        info.uname = info.gname = ""
        return info

    def add_dir(self, name: str) -> None:
        """A directory entry (``blobs``, ``blobs/sha256``) so plain tar extraction works."""
        self._write(lambda: self._tar.addfile(self._info(name, directory=True)), name)

    def add_bytes(self, name: str, data: bytes) -> None:
        """A small member held in memory (``oci-layout``, ``index.json``, a manifest)."""
        import io

        self.add_file(name, io.BytesIO(data), len(data))

    def add_file(self, name: str, file: BinaryIO, size: int) -> None:
        """A member of ``size`` bytes read from ``file``, streamed."""
        self._write(lambda: self._tar.addfile(self._info(name, size), file), name)

    def _write(self, action: Callable[[], object], name: str) -> None:
        try:
            action()
        except OSError as exc:
            raise BundleError(f"{self.output}: cannot write {name}: {exc}") from exc

    def commit(self) -> list[Path]:
        """End the archive, fsync, move it to its final name(s); the paths written.

        Raises:
            BundleError: a disk error (nothing gets the final name).
        """
        try:
            self._tar.close()
            if self._zstd is not None:
                self._zstd.close()
            if self._volumes is not None:
                self.paths = self._volumes.commit()
            else:
                assert self._file is not None and self._temp is not None
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                os.chmod(self._temp, file_mode())
                os.replace(self._temp, self.output)
                self.paths = [self.output]
            fsync_dir(self.output.parent)
        except OSError as exc:
            self.abort()
            raise BundleError(f"{self.output}: cannot finish the archive: {exc}") from exc
        return self.paths

    def abort(self) -> None:
        """Remove what was written (temp file or volumes)."""
        if self._file is not None:
            self._file.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
        if self._volumes is not None:
            self._volumes.abort()


class ArchiveExport:
    """The store an export writes into when the output is an archive.

    Offers the verbs :func:`bundler.exporting.export_bundle` uses on a layout
    (``has_blob``, ``write_blob``, ``put_bytes``, ``read_index``, ``write_index``,
    ``sync``) plus :meth:`start` (called once the images are planned). Use as a context
    manager: the archive is committed on success, removed on error.

    Args:
        output: the archive name.
        fmt: ``tar`` or ``tar.zst``.
        split_size: bytes per volume, or None.
        compression_level: zstd level.

    Raises:
        BundleError: the output name is taken, or cannot be written.
    """

    def __init__(self, output: str | os.PathLike[str], fmt: str, *,
                 split_size: int | None = None, compression_level: int = 3) -> None:
        self.output = Path(output).absolute()
        refuse_existing(self.output)
        if not self.output.parent.is_dir():
            raise BundleError(f"{self.output.parent}: no such directory")
        self.spool = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.spool-",
                                           dir=self.output.parent))
        self.writer = ArchiveWriter(self.output, fmt, split_size=split_size,
                                    compression_level=compression_level)
        self.paths: list[Path] = []
        self._written: set[Digest] = set()
        self._order: list[Descriptor] = []
        self._position: dict[Digest, int] = {}
        self._ready: dict[Digest, Path | None] = {}
        self._cond = threading.Condition()
        self._finishing = False
        self._aborted = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._entries: list[Descriptor] = []

    # -- the plan ------------------------------------------------------------------
    def start(self, entries: list[Descriptor], plans: list[ImagePlan]) -> None:
        """Write ``oci-layout``, ``index.json`` and the manifests; fix the blob order.

        Args:
            entries: the ``index.json`` descriptors.
            plans: the planned images (manifests children-first, blobs).
        """
        self._entries = list(entries)
        self.writer.add_bytes("oci-layout",
                              json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode())
        self.writer.add_bytes("index.json", index_bytes(entries))
        manifests: dict[Digest, bytes] = {}
        configs: dict[Digest, Descriptor] = {}
        layers: dict[Digest, Descriptor] = {}
        for plan in plans:  # parents before children: a reader always knows what comes
            for descriptor, item in reversed(plan.manifests):
                manifests.setdefault(descriptor.digest, item.raw)
                if isinstance(item, Manifest) and item.config is not None:
                    configs.setdefault(item.config.digest, item.config)
            for digest, descriptor in plan.blobs.items():
                if digest not in configs:
                    layers.setdefault(digest, descriptor)
        algorithms = sorted({d.algorithm for d in [*manifests, *configs, *layers]})
        self.writer.add_dir("blobs")
        for algorithm in algorithms:
            self.writer.add_dir(f"blobs/{algorithm}")
        for digest, raw in manifests.items():
            self.writer.add_bytes(blob_name(digest), raw)
            self._written.add(digest)
        self._order = [d for d in [*configs.values(), *layers.values()]
                       if d.digest not in self._written]
        self._position = {d.digest: i for i, d in enumerate(self._order)}
        self._thread = threading.Thread(target=self._append_in_order, name="bundler-archive",
                                        daemon=True)
        self._thread.start()

    def position(self, digest: Digest) -> int:
        """The blob's place in the archive (download in this order to keep the spool small)."""
        return self._position.get(digest, len(self._position))

    # -- the store verbs an export uses ------------------------------------------------
    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        """True for content already in the archive (manifests written by :meth:`start`)."""
        return digest in self._written

    def write_blob(self, digest: Digest, size: int, open_source: Callable[[int], Iterable[bytes]],
                   *, on_bytes: Callable[[int], None] | None = None, fsync: bool = True) -> int:
        """Download a blob to the spool (verified), then queue it for the archive.

        Returns:
            Bytes fetched.

        Raises:
            IntegrityError: wrong size or digest. BundleError: the archive cannot be written.
        """
        self._raise_writer_error()
        path = self.spool / f"{digest.algorithm}-{digest.hex}"
        fetched = 0
        try:
            with open(path, "wb") as f:
                for chunk in VerifyingReader(open_source(0), digest, size, where=str(path)):
                    f.write(chunk)
                    fetched += len(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
        except BaseException:
            path.unlink(missing_ok=True)
            self._mark(digest, None)
            raise
        self._mark(digest, path)
        return fetched

    def put_bytes(self, digest: Digest, data: bytes) -> None:
        """Manifests were written by :meth:`start`; anything else is refused."""
        if digest not in self._written:
            raise BundleError(f"{self.output}: {digest} was not planned for this archive")

    def read_index(self) -> list[Descriptor]:
        """A new archive has no earlier entries."""
        return []

    def write_index(self, descriptors: Iterable[Descriptor]) -> None:
        """``index.json`` was written by :meth:`start`; the entries must be the same."""
        if [d.to_dict() for d in descriptors] != [d.to_dict() for d in self._entries]:
            raise BundleError(f"{self.output}: index.json changed after it was written")

    def sync(self) -> None:
        """Nothing to do: the archive is fsynced when committed."""

    # -- ordered appending ------------------------------------------------------------------
    def _mark(self, digest: Digest, path: Path | None) -> None:
        with self._cond:
            self._ready[digest] = path
            self._cond.notify_all()

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            raise BundleError(f"{self.output}: cannot write the archive: {self._error}") \
                from self._error

    def _append_in_order(self) -> None:
        try:
            for descriptor in self._order:
                with self._cond:
                    while (descriptor.digest not in self._ready and not self._aborted
                           and not self._finishing):
                        self._cond.wait()
                    if self._aborted:
                        return
                    path = self._ready.pop(descriptor.digest, None)
                if path is None:
                    continue  # not served (non-distributable) or failed
                with open(path, "rb") as f:
                    self.writer.add_file(blob_name(descriptor.digest), f, descriptor.size)
                path.unlink()
        except BaseException as exc:
            self._error = exc

    # -- end --------------------------------------------------------------------------------
    def commit(self) -> list[Path]:
        """Append what is left, end the archive and give it its final name(s)."""
        with self._cond:
            self._finishing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._raise_writer_error()
        self.paths = self.writer.commit()
        shutil.rmtree(self.spool, ignore_errors=True)
        return self.paths

    def abort(self) -> None:
        """Stop appending and remove the temp archive and the spool."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        self.writer.abort()
        shutil.rmtree(self.spool, ignore_errors=True)

    def __enter__(self) -> ArchiveExport:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

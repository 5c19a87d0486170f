"""Write a bundle archive: tar (pax), optionally zstd, optionally split into volumes.

:class:`ArchiveWriter` appends members to the byte stream. Members are written directly
(header, content, padding to 512 bytes; two zero blocks and padding to a 10240-byte
record at the end), in large writes; into a plain ``.tar`` spooled content is copied by
the kernel (``copy_file_range``). A ``.tar.zst`` is a sequence of zstd frames, one per
member, which ``zstd -d`` and ``tar --zstd`` read as one stream.

The archive is written under a temp name (``.NAME.*.partial``) and renamed at the end;
an interrupted export never leaves a file at the final name.

Spec: image-spec ``image-layout.md``; POSIX.1-2001 pax; RFC 8878 (Zstandard).
"""

from __future__ import annotations

import errno
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

import zstandard

from ..errors import BundleError
from ..oci.content import OCI_INDEX, Descriptor
from ..oci.digest import Digest
from .layout import EarlyWriteback, fsync_dir
from .volumes import VolumeWriter

__all__ = ["ArchiveWriter", "blob_name", "file_mode", "index_bytes"]

COPY_SIZE = 1 << 20
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_NO_COPY_FILE_RANGE = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


def index_bytes(descriptors: Iterable[Descriptor],
                annotations: Mapping[str, str] | None = None) -> bytes:
    """``index.json`` of a layout: an OCI image index of ``descriptors`` (as layouts write
    it), with top-level ``annotations`` when given (a differential bundle's base)."""
    doc: dict[str, object] = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                              "manifests": [d.to_dict() for d in descriptors]}
    if annotations:
        doc["annotations"] = dict(annotations)
    return json.dumps(doc, indent=2).encode() + b"\n"


def _read_umask() -> int:
    """The process umask; read once, at import, before any worker thread runs."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_FILE_MODE = 0o666 & ~_read_umask()


def file_mode() -> int:
    """0666 less the process umask (as read at import): what ``open()`` gives a new file."""
    return _FILE_MODE


def blob_name(digest: Digest) -> str:
    """``blobs/<algorithm>/<hex>``."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


class ArchiveWriter:
    """Append members to a new tar or tar.zst archive (or its volumes).

    A member is written whole (:meth:`add_bytes`, :meth:`add_file`) or in steps:
    :meth:`begin`, then its content through :meth:`write` and :meth:`copy_from`, then
    :meth:`end`.

    Args:
        output: the final archive name (``NAME``; volumes are ``NAME.000``, ...).
        fmt: ``tar`` or ``tar.zst``.
        split_size: bytes per volume, or None for one file.
        compression_level: zstd level (1-22).
        threads: zstd worker threads (-1: one per CPU; 0: compress in the calling thread).

    Raises:
        BundleError: the output cannot be created.
    """

    def __init__(self, output: Path, fmt: str, *, split_size: int | None = None,
                 compression_level: int = 3, threads: int = 0) -> None:
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
                sink = self._file = os.fdopen(fd, "wb", buffering=0)
        except OSError as exc:
            raise BundleError(f"{output}: cannot create the archive: {exc}") from exc
        self._zstd = None
        self._stream: BinaryIO | VolumeWriter = sink
        if fmt == "tar.zst":
            compressor = zstandard.ZstdCompressor(level=compression_level, threads=threads)
            self._zstd = self._stream = compressor.stream_writer(
                sink, closefd=False, write_size=COPY_SIZE)
        self._level = compression_level
        self._framed = False  # the compressor has begun a frame
        # a plain single-file tar takes spooled content by copy_file_range
        self._fd = self._file.fileno() if self._file is not None and self._zstd is None else None
        self._offset = 0  # bytes of tar stream written
        # a single file starts its writeback as it grows, so the disk writes go on during
        # the downloads, not all at the commit
        self._writeback = EarlyWriteback(self._file, 0) if self._file is not None else None
        self._left = 0  # content bytes the open member still needs
        self._name = ""

    @staticmethod
    def _info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name + "/" if directory else name)
        info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
        info.mode = 0o755 if directory else 0o644
        info.size, info.mtime, info.uid, info.gid = size, 0, 0, 0
        info.uname = info.gname = ""
        return info

    @classmethod
    def member_bytes(cls, name: str, size: int) -> tuple[bytes, bytes]:
        """The header and the padding that surround ``size`` bytes of content in a member."""
        header = cls._info(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        return header, bytes(-size % _BLOCK)

    @property
    def compressed(self) -> bool:
        """True for a ``.tar.zst``."""
        return self._zstd is not None

    def size_bound(self, sizes: Iterable[int]) -> int:
        """Bytes the archive will have at most, holding members of these content sizes.

        Args:
            sizes: the content size, in bytes, of every member (0 for a directory).
        """
        count = total = 0
        for size in sizes:
            count += 1
            total += 3 * _BLOCK + size + _BLOCK  # header (pax too), content, padding
        total += 2 * _BLOCK + _RECORD  # the end of the archive
        if self._zstd is not None:  # frames of stored blocks at worst
            total += total // 128 + 1024 * (count + 1)
        return total

    def expect_size(self, size: int) -> None:
        """The archive will have at most ``size`` bytes: volumes get digits for all of them.

        Call before the first member; nothing to do without volumes.

        Raises:
            BundleError: a member was written already.
        """
        if self._volumes is not None:
            self._volumes.expect(size)

    def frame_compressor(self) -> zstandard.ZstdCompressor | None:
        """A compressor for a member compressed apart (:meth:`copy_frame`); None for a .tar."""
        if self._zstd is None:
            return None
        return zstandard.ZstdCompressor(level=self._level)

    def copy_frame(self, fd: int, offset: int, count: int) -> None:
        """Append ``count`` bytes of zstd frame data from file ``fd`` at ``offset``, as is.

        A member compressed apart (header, content, padding in its own frame, made by a
        :meth:`frame_compressor`) is copied in pieces; call :meth:`frame_end` after its
        last piece. Frames simply follow one another (RFC 8878, 3.1).
        """
        assert self._zstd is not None
        if self._framed:
            self._guarded(lambda: self._zstd.flush(zstandard.FLUSH_FRAME))  # type: ignore[union-attr]
            self._framed = False
        end = offset + count
        while offset < end and self._file is not None and self._volumes is None:
            try:
                copied = os.copy_file_range(fd, self._file.fileno(), end - offset, offset)
            except OSError as exc:
                if exc.errno not in _NO_COPY_FILE_RANGE:
                    raise BundleError(f"{self.output}: cannot write: {exc}") from exc
                break
            if copied == 0:
                raise BundleError(f"{self.output}: a spool file ended early")
            offset += copied
            self._wrote(copied)
        while offset < end:
            data = os.pread(fd, min(end - offset, COPY_SIZE), offset)
            if not data:
                raise BundleError(f"{self.output}: a spool file ended early")
            self._guarded(lambda: self._raw(data))  # noqa: B023 - called at once
            offset += len(data)
            self._wrote(len(data))

    def frame_end(self, member_size: int) -> None:
        """A member copied by :meth:`copy_frame` is complete: ``member_size`` tar bytes."""
        self._offset += member_size

    def _wrote(self, count: int) -> None:
        """Count bytes written to a single-file archive; start their writeback now and then."""
        if self._writeback is not None:
            writeback = self._writeback
            self._guarded(lambda: writeback.wrote(count))

    def _raw(self, data: bytes) -> None:
        view = memoryview(data)
        sink = self._volumes if self._volumes is not None else self._file
        assert sink is not None
        while view:
            written = sink.write(view)
            view = view[len(view) if written is None else written:]

    def _put(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = self._stream.write(view)
            if self._stream is not self._file or written is None:
                self._framed = self._zstd is not None
                return  # zstd and volumes take everything
            view = view[written:]

    def add_dir(self, name: str) -> None:
        """A directory entry (``blobs``, ``blobs/sha256``) so plain tar extraction works."""
        self._header(self._info(name, directory=True), 0)

    def add_bytes(self, name: str, data: bytes) -> None:
        """A small member held in memory (``oci-layout``, ``index.json``, a manifest)."""
        self.begin(name, len(data))
        self.write(data)
        self.end()

    def add_file(self, name: str, file: BinaryIO, size: int) -> None:
        """A member of ``size`` bytes read from ``file``, streamed."""
        self.begin(name, size)
        while self._left and (data := file.read(min(self._left, COPY_SIZE))):
            self.write(data)
        self.end()

    def _header(self, info: tarfile.TarInfo, size: int) -> None:
        if self._left:
            raise BundleError(f"{self.output}: {self._name} is not complete")
        self._name, self._left = info.name, size
        buf = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self._guarded(lambda: self._put(buf))
        self._offset += len(buf)

    def begin(self, name: str, size: int) -> None:
        """Start a regular-file member of ``size`` bytes."""
        self._header(self._info(name, size), size)

    def write(self, data: bytes | memoryview) -> None:
        """Content of the open member."""
        if len(data) > self._left:
            raise BundleError(f"{self.output}: {self._name} is longer than its header says")
        self._guarded(lambda: self._put(data))
        self._left -= len(data)
        self._offset += len(data)
        self._wrote(len(data))

    def copy_from(self, fd: int, offset: int, count: int) -> None:
        """Content of the open member: ``count`` bytes of file ``fd`` from ``offset``."""
        if count > self._left:
            raise BundleError(f"{self.output}: {self._name} is longer than its header says")
        end = offset + count
        while offset < end and self._fd is not None:
            try:
                copied = os.copy_file_range(fd, self._fd, end - offset, offset)
            except OSError as exc:
                if exc.errno not in _NO_COPY_FILE_RANGE:
                    raise BundleError(f"{self.output}: cannot write {self._name}: {exc}") \
                        from exc
                self._fd = None  # not between these files: read and write instead
                break
            if copied == 0:
                raise BundleError(f"{self.output}: {self._name}: its spool file ended early")
            offset += copied
            self._left -= copied
            self._offset += copied
            self._wrote(copied)
        while offset < end:
            data = os.pread(fd, min(end - offset, COPY_SIZE), offset)
            if not data:
                raise BundleError(f"{self.output}: {self._name}: its spool file ended early")
            self.write(data)
            offset += len(data)

    def end(self) -> None:
        """Close the open member (pad to the 512-byte block)."""
        if self._left:
            raise BundleError(f"{self.output}: {self._name} is {self._left} bytes short")
        pad = -self._offset % _BLOCK
        if pad:
            self._guarded(lambda: self._put(bytes(pad)))
            self._offset += pad

    def _guarded(self, action: Callable[[], object]) -> None:
        try:
            action()
        except OSError as exc:
            raise BundleError(f"{self.output}: cannot write {self._name}: {exc}") from exc

    def commit(self) -> list[Path]:
        """End the archive, fsync, move it to its final name(s); the paths written.

        Raises:
            BundleError: a disk error (nothing gets the final name).
        """
        try:
            if self._left:
                raise OSError(f"{self._name} is {self._left} bytes short")
            trailer = 2 * _BLOCK + (-(self._offset + 2 * _BLOCK) % _RECORD)
            self._put(bytes(trailer))
            if self._zstd is not None:
                self._zstd.close()
            if self._volumes is not None:
                self.paths = self._volumes.commit()
            else:
                assert self._file is not None and self._temp is not None
                os.fsync(self._file.fileno())
                self._file.close()
                os.chmod(self._temp, file_mode())
                os.replace(self._temp, self.output)
                self.paths = [self.output]
            fsync_dir(self.output.parent)
        except OSError as exc:
            self.abort()
            raise BundleError(f"{self.output}: cannot finish the archive: "
                              f"{exc.strerror or exc}") from exc
        return self.paths

    def abort(self) -> None:
        """Remove what was written (temp file or volumes), and the final name(s) when a
        commit failed after the rename: a failed export leaves nothing named like a
        bundle, and no temp file."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
        if self._volumes is not None:
            self._volumes.abort()
        for path in self.paths:
            path.unlink(missing_ok=True)
        self.paths = []

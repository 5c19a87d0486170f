"""A plain ``.tar`` bundle (or its split volumes) read in place, by member offsets.

:class:`TarBundle` reads the tar headers once (seeking over the content, so indexing a
bundle of gigabytes reads a few kilobytes per member) and keeps, for each member, where
its bytes lie: one or more :class:`Segment` values (a member of split volumes may cross
from one volume into the next). A server then sends a member, or a byte range of it,
straight from the archive's open files (``sendfile``), with no extraction and no copy.

The members are checked as :class:`bundler.stores.archive.ArchiveReader` checks them
(no links, devices or FIFOs, no ``..``, no absolute names, only ``oci-layout``,
``index.json`` and ``blobs/<alg>/<hex>``, no name twice). The files stay open for the
life of the index, so a bundle replaced on disk (a new file under the same name) does
not change what an index serves; :meth:`TarBundle.changed` tells that it was.

A compressed archive (``.tar.zst``) has no offsets to serve from, and is refused.

Spec: image-spec ``image-layout.md``; POSIX.1-2001 pax interchange format.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import BundleError, DigestMismatchError, SizeMismatchError
from ..oci.content import Descriptor, Index, Manifest, parse_layout_index, parse_manifest
from ..oci.digest import Digest
from ..oci.limits import INDEX_LIMIT, MANIFEST_LIMIT
from .archive import blob_digest, check_member
from .volumes import find_volumes
from .zstd import ZSTD_MAGIC, is_skippable

__all__ = ["Segment", "TarBundle", "file_identity"]


@dataclass(frozen=True)
class Segment:
    """Bytes of a member in one file: ``size`` bytes from byte ``offset`` of ``file``."""

    file: BinaryIO
    offset: int
    size: int


def file_identity(path: Path) -> tuple[int, int, int, int]:
    """(device, inode, size in bytes, mtime in ns) of ``path``: changes when the file
    is replaced or written; (0, 0, -1, 0) when it is gone."""
    try:
        status = path.stat()
    except OSError:
        return (0, 0, -1, 0)
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


class _Joined:
    """Open files read as one seekable stream (the volumes of a split archive)."""

    def __init__(self, files: list[BinaryIO], sizes: list[int]) -> None:
        self.files, self.sizes = files, sizes
        self.starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.total = sum(sizes)
        self.position = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.position, 2: self.total}[whence]
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, n: int = -1) -> bytes:
        want = self.total - self.position if n is None or n < 0 else n
        parts = []
        for segment in self.segments(self.position, min(want, self.total - self.position)):
            parts.append(os.pread(segment.file.fileno(), segment.size, segment.offset))
        data = b"".join(parts)
        self.position += len(data)
        return data

    def segments(self, offset: int, size: int) -> Iterator[Segment]:
        """The pieces of files that hold ``size`` bytes from stream offset ``offset``."""
        for file, start, length in zip(self.files, self.starts, self.sizes, strict=True):
            if size <= 0:
                return
            if offset >= start + length:
                continue
            inner = offset - start
            take = min(length - inner, size)
            yield Segment(file, inner, take)
            offset += take
            size -= take


class TarBundle:
    """A plain tar bundle, its members located by offset; read with ``pread``.

    Args:
        bundle: ``NAME.tar``, or split volumes (the base name or any volume).

    Attributes:
        where: the bundle's name for messages.
        paths: the files read (one, or the volumes in order).

    Raises:
        BundleError: no such file; a zstd-compressed archive (which has no offsets to
        serve from); a truncated tar; a volume missing from the numbering.
        UnsafeArchiveError: an unsafe member (see :mod:`bundler.stores.archive`).
    """

    def __init__(self, bundle: str | os.PathLike[str]) -> None:
        path = Path(bundle)
        found = None if path.is_file() and not path.name[-1:].isdigit() else find_volumes(path)
        if found is not None:
            base, self.paths = found
            self.where = str(base)
        elif path.is_file():
            self.paths, self.where = [path], str(path)
        else:
            raise BundleError(f"{path}: no such bundle (no directory, archive or volumes of "
                              "that name)")
        self._identity = [file_identity(p) for p in self.paths]
        files: list[BinaryIO] = []
        try:
            for p in self.paths:
                files.append(open(p, "rb"))  # noqa: SIM115 - closed in close()
        except OSError as exc:
            for f in files:
                f.close()
            raise BundleError(f"{self.where}: cannot open the bundle: "
                              f"{exc.strerror or exc}") from None
        sizes = [os.fstat(f.fileno()).st_size for f in files]
        self._stream = _Joined(files, sizes)
        self._members: dict[str, tuple[int, int]] = {}
        try:
            self._check_numbering()
            self._read_headers()
        except BaseException:
            self.close()
            raise

    def _check_numbering(self) -> None:
        if len(self.paths) < 2:
            return
        numbers = [int(p.name.rsplit(".", 1)[1]) for p in self.paths]
        missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))
        if missing:
            raise BundleError(f"{self.where}: volume number {missing[0]} is missing")

    def _read_headers(self) -> None:
        head = self._stream.read(4)
        if head[:4] == ZSTD_MAGIC or is_skippable(head):
            raise BundleError(
                f"{self.where}: a zstd-compressed bundle cannot be served in place (it has no "
                "byte offsets to send blobs from); extract it once (zstd -d) into a .tar, or "
                "export the bundle as .tar (or a directory) for serving")
        self._stream.seek(0)
        seen: set[str] = set()
        try:
            with tarfile.open(fileobj=self._stream, mode="r:") as tar:  # type: ignore[call-overload]
                while (info := tar.next()) is not None:
                    tar.members.clear()  # offsets are kept here; keep memory flat
                    name = check_member(info, seen, self.where)
                    if name is None:
                        continue
                    if info.offset_data + info.size > self._stream.total:
                        raise BundleError(f"{self.where}: the archive is truncated (member "
                                          f"{name!r} ends past its end)")
                    blob_digest(name, self.where)  # refuse a blob name that is no digest
                    self._members[name] = (info.offset_data, info.size)
        except tarfile.TarError as exc:
            raise BundleError(f"{self.where}: not a tar bundle, or truncated ({exc})") from None
        if "index.json" not in self._members or "oci-layout" not in self._members:
            raise BundleError(f"{self.where}: not an OCI image layout archive (oci-layout or "
                              "index.json missing)")

    def __str__(self) -> str:
        return self.where

    def changed(self) -> bool:
        """Whether a file of the bundle was replaced, written or removed since it was
        indexed (its device, inode, size or modification time differ)."""
        return [file_identity(p) for p in self.paths] != self._identity

    def written_over(self) -> bool:
        """Whether a file this index reads was written since it was indexed (its open
        file's size or modification time differ): its offsets no longer hold."""
        for f, (_, _, size, mtime) in zip(self._stream.files, self._identity, strict=True):
            status = os.fstat(f.fileno())
            if (status.st_size, status.st_mtime_ns) != (size, mtime):
                return True
        return False

    def size_of(self, digest: Digest) -> int | None:
        """The size in bytes of blob ``digest``, or None if the archive has no such member."""
        member = self._members.get(f"blobs/{digest.algorithm}/{digest.hex}")
        return None if member is None else member[1]

    def segments(self, digest: Digest, offset: int = 0, size: int | None = None) -> list[Segment]:
        """Where ``size`` bytes of blob ``digest`` from byte ``offset`` lie (all of it
        when ``size`` is None).

        Raises:
            KeyError: no such blob member.
        """
        start, length = self._members[f"blobs/{digest.algorithm}/{digest.hex}"]
        size = length - offset if size is None else size
        return list(self._stream.segments(start + offset, size))

    def _read(self, name: str, limit: int) -> bytes:
        start, length = self._members[name]
        if length > limit:
            raise BundleError(f"{self.where}: {name} has {length} bytes, more than the "
                              f"{limit}-byte limit")
        self._stream.seek(start)
        return self._stream.read(length)

    def read_index(self) -> list[Descriptor]:
        """The descriptors of the archive's ``index.json``, in order.

        Raises:
            BundleError: larger than the limit, or not an image index.
        """
        from .layout import check_layout_file

        check_layout_file(self._read("oci-layout", INDEX_LIMIT), self.where)
        return parse_layout_index(self._read("index.json", INDEX_LIMIT), self.where)

    def get_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        """The manifest or index a descriptor points at, digest-checked and parsed.

        Raises:
            BundleError: no such member, or larger than ``MANIFEST_LIMIT``.
            ManifestError: bytes that do not parse.
            IntegrityError: bytes of another size or digest than the descriptor's.
        """
        name = f"blobs/{descriptor.digest.algorithm}/{descriptor.digest.hex}"
        if name not in self._members:
            raise BundleError(f"{self.where}: manifest {descriptor.digest} is missing")
        data = self._read(name, MANIFEST_LIMIT)
        if len(data) != descriptor.size:
            raise SizeMismatchError(digest=str(descriptor.digest), expected=descriptor.size,
                                    actual=len(data), where=f"{self.where}: {name}")
        actual = Digest.of(data, descriptor.digest.algorithm)
        if actual != descriptor.digest:
            raise DigestMismatchError(expected=str(descriptor.digest), actual=str(actual),
                                      where=f"{self.where}: {name}")
        return parse_manifest(data, descriptor.media_type, digest=descriptor.digest)

    def close(self) -> None:
        """Close the archive's files."""
        for f in self._stream.files:
            f.close()


"""The members of a seekable tar file by name: offsets and sizes found in one pass over
the headers, no member unpacked; then any member is read at its offset, in any order.

The pass reads each header and seeks past the data (a few KiB read per member,
whatever the members' sizes). Every header is checked as the one-pass reader checks it
(:func:`bundler.stores.archive.check_header`: no absolute path, no ``..``, no device,
FIFO or sparse file). Links are kept only where ``links_allowed`` says (``docker save``
writes a layer shared by two layer ids as a symbolic link to the first), and are
resolved only to a regular member of the same archive, never to a path outside it.

Reads go through ``os.pread`` on the open files, so any number of threads read members
at once without sharing a file position; :meth:`TarIndex.segments` tells where a member's
bytes lie in those files (:class:`Segment`, one per volume it crosses), for a server
that sends them with ``sendfile``. The files stay open while the index lives: a file
replaced under the same name does not change what it reads (:meth:`TarIndex.changed`
tells that it was), and a file written over in place is seen by
:meth:`TarIndex.written_over` (its offsets no longer hold). A zstd-compressed archive
has no member offsets, and is refused with a message that says what to do instead.

Spec: POSIX.1-2001 pax interchange format (ustar headers, pax extended headers).
"""

from __future__ import annotations

import bisect
import os
import posixpath
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import BundleError, UnsafeArchiveError
from .archive import check_header, normalize_name
from .volumes import VolumeReader, find_volumes
from .zstd import ZSTD_MAGIC, is_skippable

__all__ = ["ZSTD_REFUSED", "Concatenated", "MemberReader", "Segment", "TarEntry", "TarIndex",
           "file_identity", "is_plain_tar_file", "tar_files"]

_CHUNK = 1 << 20

#: Why a zstd-compressed archive is not read by member offsets (said after its name).
ZSTD_REFUSED = ("a zstd-compressed bundle cannot be served in place (it has no byte offsets "
                "to send blobs from); extract it once (zstd -d) into a .tar, or export the "
                "bundle as .tar (or a directory) for serving")

#: (device, inode, size in bytes, mtime in ns) of a file: see :func:`file_identity`.
Identity = tuple[int, int, int, int]


def _identity(status: os.stat_result) -> Identity:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def file_identity(path: Path) -> Identity:
    """(device, inode, size in bytes, mtime in ns) of ``path``: changes when the file
    is replaced or written; (0, 0, -1, 0) when it is gone."""
    try:
        return _identity(path.stat())
    except OSError:
        return (0, 0, -1, 0)


def tar_files(bundle: str | os.PathLike[str]) -> tuple[str, list[Path]]:
    """The files of a plain tar read by offsets: the file, or its split volumes.

    Args:
        bundle: ``NAME.tar``, or split volumes (the base name or any volume).

    Returns:
        (the archive's name for messages, its files in order).

    Raises:
        BundleError: no such file or volumes; a volume missing from the numbering.
    """
    path = Path(bundle)
    found = None if path.is_file() and not path.name[-1:].isdigit() else find_volumes(path)
    if found is not None:
        base, volumes = found
        try:
            VolumeReader(volumes, None).close()  # raises on a gap in the numbering
        except BundleError as exc:
            raise BundleError(f"{base}: {exc}") from None
        return str(base), volumes
    if path.is_file():
        return str(path), [path]
    raise BundleError(f"{path}: no such bundle (no directory, archive or volumes of that "
                      "name)")


@dataclass(frozen=True)
class Segment:
    """Bytes of a member in one file: ``size`` bytes from byte ``offset`` of ``file``."""

    file: BinaryIO
    offset: int
    size: int


class Concatenated:
    """Files read as one byte sequence (split volumes ``NAME.000``, ``NAME.001``, ...):
    ``pread`` at any offset, from any thread; :meth:`segments` says where bytes lie;
    :meth:`file` gives a sequential view. The files stay open until :meth:`close`.

    Raises:
        BundleError: a file cannot be opened.
    """

    def __init__(self, paths: list[Path]) -> None:
        self.paths = list(paths)
        self.files: list[BinaryIO] = []
        self.identities: list[Identity] = []  # of the files as opened
        self.starts: list[int] = []
        self.size = 0
        try:
            for path in self.paths:
                self.files.append(open(path, "rb"))  # noqa: SIM115 - closed in close()
                self.identities.append(_identity(os.fstat(self.files[-1].fileno())))
                self.starts.append(self.size)
                self.size += self.identities[-1][2]
        except OSError as exc:
            self.close()
            raise BundleError(f"{path}: cannot open the bundle: {exc.strerror or exc}") from exc

    def segments(self, offset: int, size: int) -> list[Segment]:
        """The pieces of files that hold ``size`` bytes from byte ``offset`` (fewer
        bytes past the end)."""
        out: list[Segment] = []
        index = bisect.bisect_right(self.starts, offset) - 1
        while size > 0 and 0 <= index < len(self.files) and offset < self.size:
            end = self.starts[index + 1] if index + 1 < len(self.starts) else self.size
            take = min(end - offset, size)
            if take > 0:
                out.append(Segment(self.files[index], offset - self.starts[index], take))
            offset, size, index = offset + take, size - take, index + 1
        return out

    def pread(self, n: int, offset: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer at a file boundary; b"" at the end)."""
        for segment in self.segments(offset, n)[:1]:
            return os.pread(segment.file.fileno(), segment.size, segment.offset)
        return b""

    def changed(self) -> bool:
        """Whether a file was replaced, written or removed since it was opened (its
        device, inode, size or modification time under its name differ)."""
        return [file_identity(p) for p in self.paths] != self.identities

    def written_over(self) -> bool:
        """Whether an open file was written since it was opened (its size or
        modification time differ): offsets found before no longer hold."""
        return any(_identity(os.fstat(f.fileno()))[2:] != identity[2:]
                   for f, identity in zip(self.files, self.identities, strict=True))

    def file(self) -> _Sequential:
        return _Sequential(self)

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files = []


class _Sequential:
    """A seekable read-only file over a :class:`Concatenated` (for :mod:`tarfile`)."""

    def __init__(self, source: Concatenated) -> None:
        self._source, self._pos = source, 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._source.size - self._pos
        parts = []
        while n > 0 and (chunk := self._source.pread(n, self._pos)):
            parts.append(chunk)
            self._pos += len(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._source.size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


@dataclass(frozen=True)
class TarEntry:
    """One regular-file member: ``size`` bytes of content at byte ``offset`` of the file.

    Attributes:
        name: the normalized member name (no leading ``./``).
        offset: where its content starts in the tar file (bytes).
        size: its content in bytes.
        via: for a link resolved to this content, the link's own name (else None).
    """

    name: str
    offset: int
    size: int
    via: str | None = None


class MemberReader:
    """A read-only file over one member's bytes (``os.pread``: no shared position).

    Raises (while reading):
        BundleError: the file ends before the member does (a truncated archive).
    """

    def __init__(self, source: Concatenated, entry: TarEntry, where: str) -> None:
        self._source, self._entry, self._where = source, entry, where
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        left = self._entry.size - self._pos
        if n is None or n < 0 or n > left:
            n = left
        if n == 0:
            return b""
        try:
            data = self._source.pread(min(n, _CHUNK), self._entry.offset + self._pos)
        except OSError as exc:
            raise BundleError(f"{self._where}: cannot read {self._entry.name}: "
                              f"{exc.strerror or exc}") from exc
        if not data:
            raise BundleError(f"{self._where}: the archive is truncated or damaged "
                              f"({self._entry.name} ends early)")
        self._pos += len(data)
        return data


class TarIndex:
    """Index a tar file's members in one pass over its headers (see the module docstring).

    Args:
        path: a plain (uncompressed) tar file, or the volumes of one in order.
        where: the archive's name for messages.
        links_allowed: whether a link member of this (normalized) name may be kept and
            resolved inside the archive; None refuses every link.

    Attributes:
        entries: name -> :class:`TarEntry`, regular files and resolved links, in archive
            order.
        directories: the names of directory members.

    Raises:
        BundleError: not a tar file; a member that ends past the end of the file.
        UnsafeArchiveError: an unsafe header (see :func:`check_header`), a name seen
            twice, a link that is refused or does not resolve to a regular member.
    """

    def __init__(self, path: str | os.PathLike[str] | list[Path], where: str,
                 links_allowed: Callable[[str], bool] | None = None) -> None:
        self.where = where
        self.entries: dict[str, TarEntry] = {}
        self.order: list[str] = []  # member names in archive order, directories too
        self.directories: set[str] = set()
        self.source = Concatenated(path if isinstance(path, list) else [Path(path)])
        try:
            self._scan(links_allowed)
        except BaseException:
            self.close()
            raise

    def _scan(self, links_allowed: Callable[[str], bool] | None) -> None:
        size = self.source.size
        links: dict[str, tuple[str, str]] = {}  # name -> (raw name, target)
        head = self.source.pread(4, 0)
        if head == ZSTD_MAGIC or is_skippable(head):
            raise BundleError(f"{self.where}: {ZSTD_REFUSED}")
        f = self.source.file()
        try:
            tar = tarfile.open(fileobj=f, mode="r:")  # type: ignore[call-overload]  # noqa: SIM115
        except tarfile.TarError as exc:
            raise BundleError(f"{self.where}: not a tar archive ({exc})") from exc
        with tar:
            while True:
                try:
                    info = tar.next()
                except tarfile.TarError as exc:
                    raise BundleError(f"{self.where}: the archive is truncated or "
                                      f"damaged ({exc})") from exc
                if info is None:
                    break
                tar.members.clear()  # offsets are all we keep
                allowed = (links_allowed is not None and (info.issym() or info.islnk())
                           and links_allowed(normalize_name(info.name)))
                name = check_header(info, self.where, links=allowed)
                if name in self.entries or name in links:
                    raise UnsafeArchiveError(f"{self.where}: unsafe archive member "
                                             f"{info.name!r}: duplicate entry")
                self.order.append(name)
                if info.isdir():
                    self.directories.add(name)
                elif info.issym():
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(name),
                                                               info.linkname))
                    links[name] = (info.name, target)
                elif info.islnk():
                    links[name] = (info.name, posixpath.normpath(info.linkname))
                else:
                    if info.offset_data + info.size > size:
                        raise BundleError(f"{self.where}: the archive is truncated or "
                                          f"damaged ({info.name!r} ends past the end "
                                          "of the file)")
                    self.entries[name] = TarEntry(name, info.offset_data, info.size)
        for name, (raw, target) in links.items():
            entry = self.entries.get(target.removeprefix("./"))
            if entry is None or target.startswith(("/", "../")) or target == "..":
                raise UnsafeArchiveError(f"{self.where}: unsafe archive member {raw!r}: a "
                                         f"link to {target!r}, which is no regular file "
                                         "of the archive")
            self.entries[name] = TarEntry(entry.name, entry.offset, entry.size, via=name)

    def segments(self, entry: TarEntry, offset: int = 0,
                 size: int | None = None) -> list[Segment]:
        """Where ``size`` bytes of a member from byte ``offset`` lie in the archive's
        files (all of it when ``size`` is None), one :class:`Segment` per volume."""
        size = entry.size - offset if size is None else min(size, entry.size - offset)
        return self.source.segments(entry.offset + offset, size)

    def changed(self) -> bool:
        """Whether a file of the archive was replaced, written or removed since it was
        indexed (see :meth:`Concatenated.changed`)."""
        return self.source.changed()

    def written_over(self) -> bool:
        """Whether a file of the archive was written since it was indexed: its member
        offsets no longer hold (see :meth:`Concatenated.written_over`)."""
        return self.source.written_over()

    def get(self, name: str) -> TarEntry | None:
        """The entry of a member name (``./`` prefixes ignored), or None."""
        return self.entries.get(posixpath.normpath(name).removeprefix("./")
                                if name not in self.entries else name)

    def open(self, entry: TarEntry) -> MemberReader:
        """A reader of one member's content."""
        return MemberReader(self.source, entry, self.where)

    def read(self, entry: TarEntry) -> bytes:
        """A small member's whole content (callers check the size first)."""
        reader, parts = self.open(entry), []
        while chunk := reader.read(_CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> TarIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_plain_tar_file(path: str | os.PathLike[str]) -> bool:
    """True for a regular file that is not zstd-compressed (read by offsets); False for
    ``-``, volumes and ``.tar.zst`` (read in one pass)."""
    if os.fspath(path) == "-" or not Path(path).is_file() \
            or find_volumes(Path(path)) is not None:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return not (head == ZSTD_MAGIC or is_skippable(head))

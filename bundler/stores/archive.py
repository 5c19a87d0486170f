"""Single-file bundles: an OCI image layout as one tar (POSIX pax) stream, optionally
compressed with zstd, optionally cut into volumes; read safely in one pass.

Member order (written by :mod:`bundler.stores.archive_writer`): ``oci-layout``,
``index.json``, the ``blobs/`` directories, every manifest and index (each index before
its children), the config blobs, then the layer blobs; each blob once. A reader of a pipe
therefore knows every blob's destinations before the blob arrives.

Reading refuses, with :class:`UnsafeArchiveError` and before the member is used, any
member that is a link (symbolic or hard), a device, a FIFO or sparse file; any name that
is absolute, has a ``..`` component, or is not ``oci-layout``, ``index.json`` or
``blobs/<algorithm>/<hex>`` (the directories ``blobs`` and ``blobs/<algorithm>`` are
accepted; so is a leading ``./``); and a name seen twice. The metadata other tools write
beside a layout (``manifest.json``, ``repositories``: :data:`METADATA`) is read past.

This one-pass reader is for a pipe and for ``.tar.zst``; a plain ``.tar`` file is read
in any member order by :mod:`bundler.stores.seekable_archive`.

Spec: image-spec ``image-layout.md``; POSIX.1-2001 pax interchange format; RFC 8878
(Zstandard).
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from ..errors import BundleError, UnsafeArchiveError
from ..oci.digest import Digest
from ..oci.limits import ZSTD_RATIO_LIMIT
from ..oci.receipt import RECEIPT_MEMBER
from .volumes import VolumeReader, find_volumes, is_volume_of, read_checksums
from .zstd import ZSTD_MAGIC, ZstdFrames, is_skippable

__all__ = [
    "FORMATS",
    "ArchiveReader",
    "Member",
    "ACCEPTED",
    "DOCKER_DIRECTORY",
    "DOCKER_MEMBER",
    "LAYOUT_DIRECTORY",
    "METADATA",
    "RECEIPT_MEMBER",
    "check_header",
    "check_member",
    "is_archive",
    "normalize_name",
    "output_format",
]

FORMATS = ("dir", "tar", "tar.zst")
_READ_SIZE = 1 << 20
_BLOB_RE = re.compile(r"^blobs/(?P<algorithm>[a-z0-9]+)/(?P<hex>[^/]+)$")
_DIRECTORIES = LAYOUT_DIRECTORY = re.compile(r"^(\.|blobs|blobs/[a-z0-9]+)$")


def output_format(output: str | os.PathLike[str], format: str | None = None,
                  split_size: int | None = None) -> str:
    """The bundle format to write: ``format`` if given, else from the output name.

    ``NAME.tar.zst`` -> ``tar.zst``, ``NAME.tar`` -> ``tar``, anything else -> ``dir``.

    Raises:
        BundleError: an unknown format, or ``split_size`` with a directory.
    """
    if format is not None and format not in FORMATS:
        raise BundleError(f"unknown bundle format {format!r}; choose one of {', '.join(FORMATS)}")
    name = os.fspath(output)
    fmt = format or ("tar.zst" if name.endswith(".tar.zst") else
                     "tar" if name.endswith(".tar") else "dir")
    if split_size is not None and fmt == "dir":
        raise BundleError("--split-size needs an archive: name the output NAME.tar or "
                          "NAME.tar.zst, or give --format tar|tar.zst")
    return fmt


def refuse_existing(output: Path) -> None:
    """Refuse to export into an archive name that is already taken.

    A leftover volume of an earlier, larger bundle (``NAME.005``) counts: volumes are
    found by number, so it would be read as part of the new bundle.

    Raises:
        BundleError: ``output``, its checksum file or any volume ``NAME.NNN`` exists.
    """
    taken = [output, output.with_name(output.name + ".sha256")]
    try:
        taken += sorted(p for p in output.parent.iterdir() if is_volume_of(p, output))
    except OSError:
        pass  # a missing or unreadable folder is reported when the archive is created
    for path in taken:
        if path.exists() or path.is_symlink():
            raise BundleError(f"{path} already exists; an archive bundle is written whole: "
                              "remove it or choose another output name")


def is_archive(bundle: str | os.PathLike[str]) -> bool:
    """True for ``-`` (stdin), a file, or the base name or any volume of split volumes."""
    if os.fspath(bundle) == "-":
        return True
    path = Path(bundle)
    return path.is_file() or find_volumes(path) is not None


@dataclass(frozen=True)
class Member:
    """One regular-file member of a bundle archive.

    Attributes:
        name: the normalized name (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``).
        digest: the digest the name gives a blob, or None.
        size: bytes of content.
        file: reads the content (valid until the next member is taken).
    """

    name: str
    digest: Digest | None
    size: int
    file: BinaryIO


def normalize_name(name: str) -> str:
    """A member name without leading ``./`` and trailing ``/``."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") if name not in ("", "/") else name


#: Metadata members other tools write beside a layout (``docker save``): accepted, unused.
METADATA = frozenset({"manifest.json", "repositories"})
#: The members of a legacy ``docker save`` archive and of ``podman save``'s
#: docker-archive: ``<id>.json`` (config), ``<id>/`` with ``VERSION``, ``json`` and
#: ``layer.tar``, and podman's ``<hex>.tar`` layers.
DOCKER_MEMBER = re.compile(r"^[0-9a-f]{64}(\.json|\.tar|/VERSION|/json|/layer\.tar)$")
DOCKER_DIRECTORY = re.compile(r"^[0-9a-f]{64}$")
ACCEPTED = ("only oci-layout, index.json and blobs/<algorithm>/<hex> of an OCI image "
            "layout, bundler's bundler-receipt.json, and manifest.json, repositories, <id>.json and <id>/layer.tar of "
            "docker save, are accepted")


def check_header(info: tarfile.TarInfo, where: str, *, links: bool = False) -> str:
    """Check what one member header is, whatever its name: no absolute path, no ``..``,
    no device, FIFO or sparse file; links only when ``links`` is true.

    Returns:
        The normalized name (no leading ``./``, no trailing ``/``).

    Raises:
        UnsafeArchiveError: naming the member and the reason.
    """
    raw = info.name
    name = normalize_name(raw)

    def refuse(reason: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{where}: unsafe archive member {raw!r}: {reason}")

    if raw.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", raw):
        raise refuse("absolute paths are refused")
    if ".." in re.split(r"[\\/]", raw):
        raise refuse("paths with '..' are refused")
    if info.issym() and not links:
        raise refuse(f"symbolic links are refused (-> {info.linkname!r})")
    if info.islnk() and not links:
        raise refuse(f"hard links are refused (-> {info.linkname!r})")
    if info.ischr() or info.isblk():
        raise refuse("device files are refused")
    if info.isfifo():
        raise refuse("FIFOs are refused")
    if info.issparse():
        raise refuse("sparse files are refused")
    if not (info.isdir() or info.isreg() or info.issym() or info.islnk()):
        raise refuse(f"member type {info.type!r} is refused")
    return name


def check_member(info: tarfile.TarInfo, seen: set[str], where: str) -> str | None:
    """Validate one member header of an archive read in one pass.

    Args:
        info: the member.
        seen: names already taken (updated).
        where: the archive's name for messages.

    Returns:
        The normalized name of a layout file (or of bundler's receipt,
        :data:`RECEIPT_MEMBER`), or None for an accepted directory or a
        metadata member (:data:`METADATA`), which is read past.

    Raises:
        UnsafeArchiveError: see the module docstring; a ``docker save`` member (such an
        archive is read from a file, which can be read in any order).
    """
    raw = info.name
    name = check_header(info, where)

    def refuse(reason: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{where}: unsafe archive member {raw!r}: {reason}")

    if info.isdir():
        if not _DIRECTORIES.match(name) and not DOCKER_DIRECTORY.match(name):
            raise refuse("only the directories blobs/ and blobs/<algorithm>/ belong in a bundle")
        return None
    if name in seen:
        raise refuse("duplicate entry")
    seen.add(name)
    if name in METADATA:
        return None
    if DOCKER_MEMBER.match(name):
        raise BundleError(f"{where}: {raw!r} is a member of a docker save archive, which "
                          "is read from a file (in any order), not from a pipe or a "
                          ".tar.zst: give the .tar file")
    if name not in ("oci-layout", "index.json", RECEIPT_MEMBER) and not _BLOB_RE.match(name):
        raise refuse(f"not part of an OCI image layout or docker archive ({ACCEPTED})")
    return name


def blob_digest(name: str, where: str) -> Digest | None:
    """The digest a ``blobs/<alg>/<hex>`` name gives, or None for the other names.

    Raises:
        UnsafeArchiveError: a blob name that is not a valid digest.
    """
    match = _BLOB_RE.match(name)
    if match is None:
        return None
    try:
        return Digest(match.group("algorithm"), match.group("hex"))
    except BundleError as exc:
        raise UnsafeArchiveError(f"{where}: unsafe archive member {name!r}: {exc}") from None
    except Exception as exc:
        raise UnsafeArchiveError(f"{where}: unsafe archive member {name!r}: not a digest "
                                 f"({exc})") from None


class _Prefixed:
    """A read-only stream: ``head`` bytes first, then the rest of ``source``."""

    def __init__(self, head: bytes, source: BinaryIO | VolumeReader) -> None:
        self._head = head
        self._source = source

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0 or n >= len(self._head):
                data, self._head = self._head, b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._source.read(n)


class _Guarded:
    """Turns read failures of the archive stream into :class:`BundleError`."""

    def __init__(self, source: BinaryIO, where: str) -> None:
        self._source = source
        self.where = where

    def read(self, n: int = -1) -> bytes:
        try:
            return self._source.read(n)
        except BundleError:
            raise
        except (tarfile.TarError, zstandard.ZstdError, OSError, EOFError) as exc:
            raise damaged(self.where, exc) from exc


def damaged(where: str, exc: BaseException) -> BundleError:
    """The error for an archive that ends early or does not decode."""
    if "too much memory" in str(exc):  # a frame window past zstd's default 128 MiB
        return BundleError(f"{where}: compressed with a zstd window larger than 128 MiB "
                           "(zstd --long=28 or more), which bundler does not decode; "
                           "decompress it (zstd -d --memory=2GB) and give the .tar")
    return BundleError(f"{where}: the archive is truncated or damaged ({exc or type(exc).__name__})")


class ArchiveReader:
    """Read a bundle archive's members in order, one pass, checked as they come.

    Args:
        bundle: a ``.tar`` or ``.tar.zst`` file, split volumes (base name or any
            volume), or ``-`` for stdin. Compression is detected from the content.
        on_volume_problem: receives volume checksum problems (verify); when None they
            raise :class:`BundleError` (import).
        max_zstd_ratio: decompressed bytes a ``.tar.zst`` member may take per compressed
            byte (None: :data:`bundler.limits.ZSTD_RATIO_LIMIT`); past it the member is
            refused as a decompression bomb.

    Use as a context manager; iterate for :class:`Member` values.

    Raises (while iterating):
        UnsafeArchiveError: an unsafe member (see the module docstring), or one that
            decompresses past ``max_zstd_ratio``.
        BundleError: a truncated or damaged archive, a volume whose checksum differs.
    """

    def __init__(self, bundle: str | os.PathLike[str],
                 on_volume_problem: Callable[[str], None] | None = None, *,
                 max_zstd_ratio: int | None = None) -> None:
        text = os.fspath(bundle)
        self.where = "stdin" if text == "-" else text
        self.base: Path | None = None
        self.volumes: list[Path] = []
        self._owned: BinaryIO | VolumeReader | None = None
        if text == "-":
            source: BinaryIO | VolumeReader = sys.stdin.buffer
        elif (found := find_volumes(Path(text))) is not None:
            self.base, self.volumes = found
            self.where = str(self.base)
            source = self._owned = VolumeReader(self.volumes, read_checksums(self.base),
                                                on_volume_problem)
        else:
            try:
                source = self._owned = open(text, "rb")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise BundleError(f"{text}: cannot open the bundle: {exc}") from exc
        head = source.read(4)
        stream: BinaryIO | _Prefixed | ZstdFrames = _Prefixed(head, source)
        self.compressed = head == ZSTD_MAGIC or is_skippable(head)
        self._frames: ZstdFrames | None = None
        if self.compressed:
            stream = self._frames = ZstdFrames(
                stream, ZSTD_RATIO_LIMIT if max_zstd_ratio is None else max_zstd_ratio,
                self.where)
        self._stream = _Guarded(stream, self.where)  # type: ignore[arg-type]
        try:
            self._tar = tarfile.open(fileobj=self._stream, mode="r|",  # noqa: SIM115
                                     bufsize=_READ_SIZE, copybufsize=_READ_SIZE)
        except tarfile.TarError as exc:
            self.close()
            raise BundleError(f"{self.where}: not a tar or tar.zst bundle ({exc})") from exc
        self._seen: set[str] = set()

    def __iter__(self) -> Iterator[Member]:
        tar = self._tar
        while True:
            try:
                info = tar.next()
            except BundleError:
                raise
            except (tarfile.TarError, zstandard.ZstdError, OSError, EOFError) as exc:
                raise damaged(self.where, exc) from exc
            if info is None:
                break
            tar.members.clear()  # a stream is read once; keep memory flat
            if self._frames is not None:
                self._frames.period(repr(info.name))
            name = check_member(info, self._seen, self.where)
            if name is None:
                continue
            file = tar.extractfile(info)
            assert file is not None
            yield Member(name, blob_digest(name, self.where), info.size,
                         _Guarded(file, self.where))  # type: ignore[arg-type]
        self.drain_volumes()

    def drain_volumes(self) -> None:
        """Read the rest of the volumes undecoded, so each one's checksum is checked."""
        if isinstance(self._owned, VolumeReader):
            self._owned.drain(_READ_SIZE)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

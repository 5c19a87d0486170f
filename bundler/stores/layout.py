"""An OCI image layout directory as a store of blobs, manifests and named images.

Spec: image-spec ``image-layout.md``: ``oci-layout`` (``{"imageLayoutVersion":"1.0.0"}``),
``index.json`` (an image index whose descriptors name the images), ``blobs/<alg>/<hex>``.

Writes are crash-safe: a blob is written to ``blobs/<alg>/.<hex>.partial``, fsynced and
renamed to its name only after its size and digest were checked; ``index.json`` is
replaced atomically and last. A partial blob left by an interrupted run is continued;
a partial file is locked while it is written, so two exports into one directory never
interleave their bytes. New directories are fsynced into their parents.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import BundleError, IntegrityError, ManifestError, SizeMismatchError
from ..oci.content import (
    OCI_INDEX,
    OCI_LAYOUT_VERSION,
    Descriptor,
    Index,
    Manifest,
    parse_layout_index,
    parse_manifest,
)
from ..oci.digest import Digest, VerifyingReader
from ..oci.limits import INDEX_LIMIT, MANIFEST_LIMIT, refuse_oversized
from .contained import check_dir_inside, open_inside, read_inside, stat_inside
from .direct_io import DirectAppender

__all__ = ["EarlyWriteback", "LayoutStore", "closing_source", "file_mode", "fsync_dir"]

_READ_CHUNK = 1 << 20
#: The writer's lock file in a bundle directory (see :mod:`bundler.stores.lock`).
LOCK_NAME = ".bundler.lock"
_UMASK = os.umask(0o022)  # read once: os.umask can only be read by setting it
os.umask(_UMASK)


def file_mode() -> int:
    """The mode of a new file: 0666 less the process umask (read once, at import).

    Returns:
        The permission bits ``open()`` would give a file created now.
    """
    return 0o666 & ~_UMASK


@contextmanager
def closing_source(source: Iterable[bytes]) -> Iterator[Iterable[bytes]]:
    """Close ``source`` (a generator, a streamed response) on leaving, on error too.

    A generator over a streamed HTTP response holds its pooled connection until it is
    closed; a failed or cancelled transfer must not wait for the garbage collector.

    Args:
        source: an iterable of chunks; closed if it has ``close()``.

    Returns:
        A context manager yielding ``source``.
    """
    try:
        yield source
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _same_file(f: BinaryIO, path: Path) -> bool:
    """Whether the open file ``f`` is still the file at ``path``."""
    try:
        return os.fstat(f.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def fsync_dir(path: Path) -> None:
    """fsync a directory so renames inside it survive a crash (POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: New bytes of a blob file after which their writeback to disk is started (bytes).
WRITEBACK_BYTES = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start writeback of dirty pages, do not wait


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range(2)`` (Linux), or None where there is none."""
    import ctypes  # on first use: most commands never write a blob

    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_UNRESOLVED: Any = object()
#: ``sync_file_range`` once looked up (None: there is none); looked up on first use
_START_WRITEBACK: Any = _UNRESOLVED


def _start_writeback() -> Callable[[int, int, int, int], int] | None:
    global _START_WRITEBACK
    if _START_WRITEBACK is _UNRESOLVED:
        _START_WRITEBACK = _sync_file_range()
    return _START_WRITEBACK  # type: ignore[no-any-return]


class EarlyWriteback:
    """Start the writeback of a file's new bytes every :data:`WRITEBACK_BYTES`.

    Without it the kernel keeps what was just written in dirty pages until an fsync,
    which then writes it all while the writer waits; with it the disk writes while the
    network delivers, and the fsync finds little left to do.
    ``sync_file_range(fd, offset, n, SYNC_FILE_RANGE_WRITE)`` returns at once and
    promises nothing: durability still comes from the fsync. Where the call is missing
    or fails (not Linux, an odd filesystem), this does nothing.

    Args:
        f: the file being written at its end (a buffered file is flushed first).
        offset: the file position where the new bytes start.
    """

    def __init__(self, f: BinaryIO, offset: int) -> None:
        self._file = f
        self._start = offset
        self._pending = 0

    def wrote(self, count: int) -> None:
        """About ``count`` more bytes went to the file (an estimate is enough: the range
        asked for runs from the end of the last one to the file's current end)."""
        self._pending += count
        if self._pending < WRITEBACK_BYTES:
            return
        start_writeback = _start_writeback()
        if start_writeback is None:
            return
        self._pending = 0
        self._file.flush()
        fd = self._file.fileno()
        end = os.fstat(fd).st_size  # the end of what was appended, however it was written
        if end > self._start:
            start_writeback(fd, self._start, end - self._start, _SYNC_FILE_RANGE_WRITE)
            self._start = end


def check_layout_file(data: bytes, where: str) -> None:
    """Check an ``oci-layout`` file: a JSON object whose ``imageLayoutVersion`` is a 1.x
    version string.

    Raises:
        BundleError: anything else (naming ``where``).

    Spec: image-spec ``image-layout.md`` "oci-layout file".
    """
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"{where}: oci-layout is not JSON: {exc}") from None
    except RecursionError:  # nested thousands deep
        raise BundleError(f"{where}: oci-layout is JSON nested too deeply") from None
    version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
    if not isinstance(version, str):
        raise BundleError(f"{where}: oci-layout has no imageLayoutVersion")
    if version.split(".")[0] != "1":
        raise BundleError(f"{where}: oci-layout says imageLayoutVersion {version!r}; this "
                          "version of bundler reads layouts of version 1.x")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file in the same folder, fsync, rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class LayoutStore:
    """Read and write an OCI image layout directory.

    Args:
        root: the layout directory.
        create: make the directory and ``oci-layout`` if missing (else it must exist).
        blob_root: a shared blob directory holding ``<alg>/<hex>`` (skopeo's
            ``--dest-shared-blob-dir``) to read blobs from instead of ``root/blobs``.

    Attributes:
        blob_root: the directory every blob path is under (:meth:`blob_path`).

    Raises:
        BundleError: ``root`` is not a layout (no ``oci-layout`` or ``index.json``), or
        its ``index.json`` cannot be parsed; ``blob_root`` is not a directory.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = False,
                 blob_root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root)
        self.blob_root = Path(blob_root) if blob_root is not None else self.root / "blobs"
        if blob_root is not None and not self.blob_root.is_dir():
            raise BundleError(f"{self.blob_root}: no such shared blob directory")
        self._lock = threading.Lock()
        self._dirs_ready: set[str] = set()
        self._created: list[Path] = []  # what this store made: the root, oci-layout
        if create:
            self._create()
        elif not self.root.exists():
            raise BundleError(f"{self.root}: no such bundle (no directory, archive or "
                              "volumes of that name)")
        elif not self.root.is_dir():
            raise BundleError(f"{self.root}: not a bundle directory")
        elif not all(os.path.lexists(self.root / name) for name in ("oci-layout", "index.json")):
            raise BundleError(f"{self.root}: not an OCI image layout (oci-layout or index.json missing)")
        else:
            self._check_layout_file()

    def _check_layout_file(self) -> None:
        """Read and check ``oci-layout`` (see :func:`check_layout_file`)."""
        layout = read_inside(self.root, "oci-layout", limit=INDEX_LIMIT)
        if layout is None:
            raise BundleError(f"{self.root}: cannot read oci-layout: it is gone")
        check_layout_file(layout, str(self.root))

    def _create(self) -> None:
        """Make the root directory and ``oci-layout`` if missing.

        Raises:
            BundleError: the root is not a directory, or cannot be created or written; it
            is a non-empty directory without ``oci-layout``, or its ``oci-layout`` is bad.
        """
        if self.root.exists() and not self.root.is_dir():
            raise BundleError(f"{self.root}: exists and is not a directory; a directory "
                              "bundle needs a directory (name an archive NAME.tar or "
                              "NAME.tar.zst, or choose another output)")
        layout_file = self.root / "oci-layout"
        if self.root.is_dir() and not layout_file.exists() and any(
                entry.name not in ("blobs", LOCK_NAME)  # blobs: a rerun; the writer lock
                for entry in self.root.iterdir()):
            raise BundleError(f"{self.root}: a directory that holds other files and is no OCI "
                              "image layout (no oci-layout); export into a new or empty "
                              "directory, or into an existing bundle")
        if layout_file.is_file():
            self._check_layout_file()
        try:
            if not self.root.is_dir():
                missing = [p for p in (self.root, *self.root.parents) if not p.exists()]
                self.root.mkdir(parents=True, exist_ok=True)
                self._created.extend(missing)
                fsync_dir(self.root.parent)
            if not (self.root / "oci-layout").exists():
                layout = json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode()
                write_atomic(self.root / "oci-layout", layout)
                self._created.insert(0, self.root / "oci-layout")
        except OSError as exc:
            self.discard_if_empty()
            raise BundleError(f"{self.root}: cannot create the bundle directory: "
                              f"{exc.strerror or exc}") from exc

    def discard_if_empty(self) -> bool:
        """Remove what creating this store made, if no blob was written since.

        A failed first export must not leave a directory holding only ``oci-layout``
        (which is no bundle); a directory with blobs or partial blobs stays, so that the
        next run continues them.

        Returns:
            True if the store's own files and directories were removed.
        """
        if not self._created or (self.root / "index.json").exists():
            return False
        blobs = self.root / "blobs"
        try:
            if blobs.is_dir() and any(p.is_file() for p in blobs.rglob("*")):
                return False
            if blobs.is_dir():
                for folder in sorted(blobs.rglob("*"), reverse=True):
                    folder.rmdir()
                blobs.rmdir()
            for path in self._created:
                if path.is_dir():
                    path.rmdir()  # fails (and stops) if something else is in it
                else:
                    path.unlink(missing_ok=True)
        except OSError:
            return False
        self._created = []
        return True

    def __str__(self) -> str:
        return str(self.root)

    # -- index.json ------------------------------------------------------------------
    def read_index(self) -> list[Descriptor]:
        """The descriptors of ``index.json`` in order ([] if it does not exist yet)."""
        data = read_inside(self.root, "index.json", limit=INDEX_LIMIT)
        if data is None:
            return []
        return parse_layout_index(data, str(self.root))

    def write_index(self, descriptors: Iterable[Descriptor],
                    annotations: Mapping[str, str] | None = None) -> None:
        """Replace ``index.json`` atomically with an OCI index of ``descriptors`` and the
        top-level ``annotations`` if given (left as it is when it already holds exactly
        these bytes: a no-op export rewrites nothing).

        Raises:
            BundleError: ``index.json`` would pass :data:`bundler.limits.INDEX_LIMIT`, or
            cannot be written (a full disk); the previous one is then left as it was.
        """
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [d.to_dict() for d in descriptors],
        }
        if annotations:
            doc["annotations"] = dict(annotations)
        data = json.dumps(doc, indent=2).encode() + b"\n"
        path = self.root / "index.json"
        refuse_oversized(str(self.root), len(data), [], archive=False)
        if read_inside(self.root, "index.json", limit=INDEX_LIMIT) == data:
            return
        try:
            write_atomic(path, data)
        except OSError as exc:  # a full disk: the previous index.json stays as it was
            raise BundleError(f"{path}: cannot write index.json: "
                              f"{exc.strerror or exc}") from exc

    # -- blobs ------------------------------------------------------------------------
    def blob_path(self, digest: Digest) -> Path:
        """``<algorithm>/<hex>`` under :attr:`blob_root` (``blobs/`` of the root, or a
        shared blob directory)."""
        return self.blob_root / digest.algorithm / digest.hex

    def _blob_location(self, digest: Digest) -> tuple[Path, str]:
        """(the directory a blob must not leave, its path relative to it): the root and
        ``blobs/<algorithm>/<hex>``, or a shared blob directory and ``<algorithm>/<hex>``
        (the shared directory itself was named by the user)."""
        if self.blob_root != self.root / "blobs":
            return self.blob_root, f"{digest.algorithm}/{digest.hex}"
        return self.root, f"blobs/{digest.algorithm}/{digest.hex}"

    def blob_location(self, digest: Digest) -> tuple[Path, str]:
        """(the directory a blob must not leave, its ``/``-separated path under it): for
        :func:`bundler.stores.contained.open_inside` and ``stat_inside``."""
        return self._blob_location(digest)

    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        """True if the blob file exists (and has ``size`` bytes when given).

        Raises:
            UnsafeBundleError: the blob is a symbolic link, FIFO, device, socket or
            directory (see :mod:`bundler.stores.contained`).
        """
        status = stat_inside(*self._blob_location(digest), what=f"blob {digest}")
        return status is not None and (size is None or status.st_size == size)

    def check_blob(self, descriptor: Descriptor) -> bool:
        """Whether the blob is there, checked without reading it: a regular file inside
        the bundle of the descriptor's size.

        Returns:
            True if present, False if missing.

        Raises:
            UnsafeBundleError: not a regular file inside the bundle.
            SizeMismatchError: a file of another size than the descriptor's.
        """
        status = stat_inside(*self._blob_location(descriptor.digest),
                             what=f"blob {descriptor.digest}")
        if status is not None and status.st_size != descriptor.size:
            raise SizeMismatchError(digest=str(descriptor.digest), expected=descriptor.size,
                                    actual=status.st_size,
                                    where=str(self.blob_path(descriptor.digest)))
        return status is not None

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        """Open a blob for reading through the verifying reader.

        The file is checked before a byte is read: a regular file inside the bundle (no
        symbolic link, FIFO or device) of the descriptor's size.

        Raises:
            BundleError: the blob file is missing or cannot be opened.
            UnsafeBundleError: it is no regular file inside the bundle.
            SizeMismatchError: its size is not the descriptor's (before reading).
            IntegrityError (while reading): wrong digest.
        """
        path = self.blob_path(descriptor.digest)
        try:
            f = open_inside(*self._blob_location(descriptor.digest),
                            size=descriptor.size, digest=str(descriptor.digest),
                            what=f"blob {descriptor.digest}")
        except FileNotFoundError:
            raise BundleError(f"{self.root}: blob {descriptor.digest} is missing") from None
        except OSError as exc:  # a directory in its place, no permission, a failing disk
            raise BundleError(f"{path}: cannot read blob {descriptor.digest}: "
                              f"{exc.strerror or exc}") from None
        with f:
            yield VerifyingReader(f, descriptor.digest, descriptor.size, where=str(path))

    def read_blob(self, descriptor: Descriptor) -> bytes:
        """A small blob's verified bytes (manifests, configs)."""
        with self.open_blob(descriptor) as reader:
            return reader.read()

    def get_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        """Read, verify and parse the manifest or index a descriptor points at.

        Raises:
            ManifestError: the descriptor's size is over ``MANIFEST_LIMIT`` (the limit
            of a manifest fetched from a registry), or the bytes do not parse.
            BundleError, IntegrityError: as :meth:`open_blob`.
        """
        if descriptor.size > MANIFEST_LIMIT:
            raise ManifestError(f"{self.blob_path(descriptor.digest)}: manifest of "
                                f"{descriptor.size} bytes, larger than the {MANIFEST_LIMIT}"
                                "-byte limit")
        return parse_manifest(self.read_blob(descriptor), descriptor.media_type,
                              digest=descriptor.digest)

    def put_manifest(self, digest: Digest, data: bytes) -> None:
        """Store small content held in memory (a manifest) under its digest."""
        self.put_blob(digest, len(data), lambda offset: [data[offset:]])

    def _blob_dir(self, algorithm: str) -> Path:
        """``blobs/<algorithm>/``, created if missing; the new directory entries are
        fsynced (``root`` after ``blobs/``, ``blobs`` after ``blobs/<algorithm>/``) once
        per store."""
        folder = self.root / "blobs" / algorithm
        with self._lock:
            if algorithm in self._dirs_ready:
                return folder
            folder.mkdir(parents=True, exist_ok=True)
            check_dir_inside(self.root, f"blobs/{algorithm}")  # no link on the way
            fsync_dir(self.root)
            fsync_dir(folder.parent)
            self._dirs_ready.add(algorithm)
        return folder

    def put_blob(
        self,
        digest: Digest,
        size: int,
        open_source: Callable[[int], Iterable[bytes]],
        *,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        """Write a blob: continue a partial file if any, verify, fsync, rename.

        The partial file is locked (``flock``) while it is written: another writer of
        the same blob (a second export into this directory) waits, then finds the blob
        complete or continues the partial file. The source is closed as soon as the
        write ends, on error too, so a streamed download gives its connection back.

        Args:
            digest, size: the expected digest and size in bytes.
            open_source: called with the byte offset to start from; returns chunks.
            on_bytes: called with the length of each chunk written (progress).

        Returns:
            The number of bytes fetched from the source (0 if the blob already existed).

        Raises:
            IntegrityError: wrong size or digest (nothing gets the blob's name).
            BundleError: disk errors, wrapped.

        Spec: image-spec ``image-layout.md`` (``blobs/<alg>/<encoded>``).
        """
        final = self.blob_path(digest)
        try:
            while True:
                if self.has_blob(digest, size):
                    return 0
                partial = self._blob_dir(digest.algorithm) / f".{digest.hex}.partial"
                fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o666)
                with os.fdopen(fd, "a+b") as f:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when f is closed
                    if not _same_file(f, partial):
                        continue  # renamed or removed by the writer we waited for
                    if self.has_blob(digest, size):
                        partial.unlink()
                        return 0
                    return self._write_locked(f, partial, final, digest, size, open_source,
                                              on_bytes)
        except OSError as exc:
            raise BundleError(f"{self.root}: cannot write blob {digest}: {exc}") from exc

    def _write_locked(self, f: BinaryIO, partial: Path, final: Path, digest: Digest, size: int,
                      open_source: Callable[[int], Iterable[bytes]],
                      on_bytes: Callable[[int], None] | None) -> int:
        """Continue the locked partial file ``f``, verify, fsync, rename; bytes fetched."""
        hasher, offset = digest.hasher(), 0
        f.seek(0)
        while data := f.read(_READ_CHUNK):
            hasher.update(data)
            offset += len(data)
        complete = offset == size and hasher.copy().hexdigest() == digest.hex  # type: ignore[attr-defined]
        if offset >= size and not complete:
            f.truncate(0)
            hasher, offset = digest.hasher(), 0
        fetched = 0
        # a complete partial needs no request (a Range from its end would get 416)
        with closing_source(open_source(offset) if offset < size else ()) as source:
            reader = VerifyingReader(source, digest, size, where=str(final),
                                     hasher=hasher, offset=offset)
            f.flush()
            try:
                # around the page cache where the filesystem allows (see direct_io);
                # else through it, its writeback started early
                with DirectAppender(f.fileno(), partial, offset) as out:
                    writeback = None if out.direct else EarlyWriteback(f, offset)
                    for chunk in reader:
                        out.write(chunk)
                        fetched += len(chunk)
                        if writeback is not None:
                            writeback.wrote(len(chunk))
                        if on_bytes:
                            on_bytes(len(chunk))
            except IntegrityError:
                partial.unlink(missing_ok=True)
                raise
        os.fsync(f.fileno())
        os.replace(partial, final)
        return fetched

    def sync(self) -> None:
        """fsync the blob directories so the renames of this run are durable."""
        blobs = self.root / "blobs"
        if blobs.is_dir():
            for algorithm_dir in blobs.iterdir():
                if algorithm_dir.is_dir():
                    fsync_dir(algorithm_dir)

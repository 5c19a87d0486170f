"""An OCI image layout directory as a store of blobs, manifests and named images.

Spec: image-spec ``image-layout.md``: ``oci-layout`` (``{"imageLayoutVersion":"1.0.0"}``),
``index.json`` (an image index whose descriptors name the images), ``blobs/<alg>/<hex>``.

Writes are crash-safe: a blob is written to ``blobs/<alg>/.<hex>.partial``, fsynced and
renamed to its name only after its size and digest were checked; ``index.json`` is
replaced atomically and last. A partial blob left by an interrupted run is continued.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..content import OCI_INDEX, OCI_LAYOUT_VERSION, Descriptor, Index, Manifest, parse_manifest
from ..digest import Digest, VerifyingReader
from ..errors import BundleError, IntegrityError

__all__ = ["LayoutStore", "fsync_dir"]

_READ_CHUNK = 1 << 20
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def fsync_dir(path: Path) -> None:
    """fsync a directory so renames inside it survive a crash (POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file in the same folder, fsync, rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
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

    Raises:
        BundleError: ``root`` is not a layout (no ``oci-layout`` or ``index.json``), or
        its ``index.json`` cannot be parsed.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = False) -> None:
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
            if not (self.root / "oci-layout").exists():
                layout = json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode()
                write_atomic(self.root / "oci-layout", layout)
        elif not self.root.is_dir():
            raise BundleError(f"{self.root}: no such bundle directory")
        elif not (self.root / "oci-layout").is_file() or not (self.root / "index.json").is_file():
            raise BundleError(f"{self.root}: not an OCI image layout (oci-layout or index.json missing)")

    def __str__(self) -> str:
        return str(self.root)

    # -- index.json ------------------------------------------------------------------
    def read_index(self) -> list[Descriptor]:
        """The descriptors of ``index.json`` in order ([] if it does not exist yet)."""
        path = self.root / "index.json"
        if not path.exists():
            return []
        try:
            index = parse_manifest(path.read_bytes(), OCI_INDEX)
        except Exception as exc:
            raise BundleError(f"{path}: cannot parse index.json: {exc}") from exc
        if not isinstance(index, Index):
            raise BundleError(f"{path}: index.json is not an image index")
        return list(index.manifests)

    def write_index(self, descriptors: Iterable[Descriptor]) -> None:
        """Replace ``index.json`` atomically with an OCI index of ``descriptors``."""
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [d.to_dict() for d in descriptors],
        }
        write_atomic(self.root / "index.json", json.dumps(doc, indent=2).encode() + b"\n")

    # -- blobs ------------------------------------------------------------------------
    def blob_path(self, digest: Digest) -> Path:
        """``blobs/<algorithm>/<hex>`` under the root."""
        return self.root / "blobs" / digest.algorithm / digest.hex

    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        """True if the blob file exists (and has ``size`` bytes when given)."""
        try:
            stat = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or stat.st_size == size

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        """Open a blob for reading through the verifying reader.

        Raises:
            BundleError: the blob file is missing.
            IntegrityError (while reading): wrong size or digest.
        """
        path = self.blob_path(descriptor.digest)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise BundleError(f"{self.root}: blob {descriptor.digest} is missing") from None
        with f:
            yield VerifyingReader(f, descriptor.digest, descriptor.size, where=str(path))

    def read_blob(self, descriptor: Descriptor) -> bytes:
        """A small blob's verified bytes (manifests, configs)."""
        with self.open_blob(descriptor) as reader:
            return reader.read()

    def load_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        """Read, verify and parse the manifest or index a descriptor points at."""
        return parse_manifest(self.read_blob(descriptor), descriptor.media_type,
                              digest=descriptor.digest)

    def put_bytes(self, digest: Digest, data: bytes) -> None:
        """Store small content held in memory (a manifest) under its digest."""
        self.write_blob(digest, len(data), lambda offset: [data[offset:]])

    def write_blob(
        self,
        digest: Digest,
        size: int,
        open_source: Callable[[int], Iterable[bytes]],
        *,
        on_bytes: Callable[[int], None] | None = None,
        fsync: bool = True,
    ) -> int:
        """Write a blob: continue a partial file if any, verify, fsync, rename.

        Args:
            digest, size: the expected digest and size in bytes.
            open_source: called with the byte offset to start from; returns chunks.
            on_bytes: called with the length of each chunk written (progress).
            fsync: fsync the file before the rename.

        Returns:
            The number of bytes fetched from the source (0 if the blob already existed).

        Raises:
            IntegrityError: wrong size or digest (nothing gets the blob's name).
            BundleError: disk errors, wrapped.
        """
        final = self.blob_path(digest)
        if self.has_blob(digest, size):
            return 0
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{digest.hex}.partial")
        hasher, offset = digest.hasher(), 0
        try:
            if partial.exists():
                with open(partial, "rb") as f:
                    while data := f.read(_READ_CHUNK):
                        hasher.update(data)
                        offset += len(data)
                complete = offset == size and hasher.copy().hexdigest() == digest.hex  # type: ignore[attr-defined]
                if offset >= size and not complete:
                    partial.unlink()
                    hasher, offset = digest.hasher(), 0
            fetched = 0
            # a complete partial needs no request (a Range from its end would get 416)
            source = open_source(offset) if offset < size else ()
            with open(partial, "ab") as f:
                reader = VerifyingReader(source, digest, size, where=str(final),
                                         hasher=hasher, offset=offset)
                try:
                    for chunk in reader:
                        f.write(chunk)
                        fetched += len(chunk)
                        if on_bytes:
                            on_bytes(len(chunk))
                except IntegrityError:
                    f.close()
                    partial.unlink(missing_ok=True)
                    raise
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            os.replace(partial, final)
        except OSError as exc:
            raise BundleError(f"{self.root}: cannot write blob {digest}: {exc}") from exc
        return fetched

    def iter_blob_files(self) -> Iterator[tuple[Digest | None, Path]]:
        """Every file under ``blobs/`` with its digest (None for names that are not one)."""
        blobs = self.root / "blobs"
        if not blobs.is_dir():
            return
        for algorithm_dir in sorted(blobs.iterdir()):
            for path in sorted(algorithm_dir.iterdir()) if algorithm_dir.is_dir() else ():
                try:
                    digest = Digest(algorithm_dir.name, path.name)
                except Exception:
                    digest = None
                yield digest, path

    def sync(self) -> None:
        """fsync the blob directories so the renames of this run are durable."""
        blobs = self.root / "blobs"
        if blobs.is_dir():
            for algorithm_dir in blobs.iterdir():
                if algorithm_dir.is_dir():
                    fsync_dir(algorithm_dir)

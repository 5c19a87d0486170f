"""The store an export writes into when the output is an archive.

:class:`ArchiveExport` writes ``oci-layout``, ``index.json`` and every manifest as soon as
the images are planned, then receives blobs from concurrent downloads. Each download
goes to a file in a spool directory beside the output; one writer thread appends the
blobs in member order (configs, then layers, in plan order), following the spool file of
the blob whose turn it is while that blob is still being downloaded, and deletes each
spool file once appended. Spool files are temporary and never fsynced. Disk use stays
near the archive's size.

Spec: image-spec ``image-layout.md``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from ..errors import BundleError, NotFoundError
from ..oci.content import FOREIGN_LAYER_TYPES, OCI_LAYOUT_VERSION, Descriptor, Manifest
from ..oci.digest import Digest, VerifyingReader
from ..oci.graph import ImagePlan
from ..oci.limits import refuse_oversized
from .archive import RECEIPT_MEMBER, refuse_existing
from .archive_writer import COPY_SIZE, ArchiveWriter, blob_name, index_bytes

__all__ = ["ArchiveExport", "remove_leftovers"]

_FOLLOW_SIZE = 1 << 20


@dataclass
class _Spooled:
    """A blob's spool file while it downloads: bytes in it, and how the download ended."""

    path: Path
    member_size: int  # tar bytes of the member (header, content, padding)
    written: int = 0
    signalled: int = 0
    done: bool = False
    failed: bool = False
    watched: bool = False


class _SpoolSink:
    """Writes to a spool file, counting the bytes; wakes the writer thread following it."""

    def __init__(self, file: BinaryIO, spooled: _Spooled, cond: threading.Condition) -> None:
        self._file, self._spooled, self._cond = file, spooled, cond

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view):]
        except OSError as exc:  # the disk beside the output is full or failing
            raise BundleError(f"cannot write the spool file {self._spooled.path}: "
                              f"{exc.strerror or exc}") from exc
        spooled = self._spooled
        spooled.written += len(data)
        if spooled.watched and spooled.written - spooled.signalled >= _FOLLOW_SIZE:
            with self._cond:
                spooled.signalled = spooled.written
                self._cond.notify_all()
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered here."""


def _open_spool(path: Path) -> BinaryIO:
    """Create a spool file (unbuffered).

    Raises:
        BundleError: it cannot be created (naming it).
    """
    try:
        return open(path, "wb", buffering=0)
    except OSError as exc:
        raise BundleError(f"cannot create the spool file {path}: {exc.strerror or exc}") \
            from exc


def remove_leftovers(output: Path) -> list[Path]:
    """Remove what an export of ``output`` killed with SIGKILL left beside it: its temp
    archive (``.NAME.XXXXXXXX.partial``), temp volumes (``.NAME.NNN.partial``) and spool
    (``.NAME.spool-XXXXXXXX/``). Only for a caller that holds the writer's lock of
    ``output`` (:mod:`bundler.stores.lock`): no other export of it can be running.

    Returns:
        The paths removed.
    """
    name = re.escape(output.name)
    partial = re.compile(rf"\.{name}\.(?:[a-z0-9_]{{8}}|[0-9]{{3,}})\.partial")
    spool = re.compile(rf"\.{name}\.spool-[a-z0-9_]{{8}}")
    removed = []
    try:
        found = list(output.parent.iterdir())
    except OSError:
        return removed
    for path in found:
        if partial.fullmatch(path.name) and not path.is_symlink() and path.is_file():
            path.unlink(missing_ok=True)
        elif spool.fullmatch(path.name) and not path.is_symlink() and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            continue
        removed.append(path)
    return removed


class ArchiveExport:
    """The store an export writes into when the output is an archive.

    Offers the verbs :func:`bundler.exporting.export_bundle` uses on a layout
    (``has_blob``, ``put_blob``, ``put_manifest``, ``read_index``, ``write_index``,
    ``sync``) plus :meth:`start` (called once the images are planned). Use as a context
    manager: the archive is committed on success, removed on error.

    Args:
        output: the archive name.
        fmt: ``tar`` or ``tar.zst``.
        split_size: bytes per volume, or None.
        compression_level: zstd level.

    Attributes:
        skipped: non-distributable (foreign) layers left out because the registry did
            not serve them; every other planned blob must be in the archive.

    Raises:
        BundleError: the output name is taken, or cannot be written.
    """

    def __init__(self, output: str | os.PathLike[str], fmt: str, *,
                 split_size: int | None = None, compression_level: int = 3) -> None:
        self.output = Path(output).absolute()
        refuse_existing(self.output)
        if not self.output.parent.is_dir():
            raise BundleError(f"{self.output.parent}: no such directory")
        remove_leftovers(self.output)
        try:
            self.spool = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.spool-",
                                               dir=self.output.parent))
        except OSError as exc:
            raise BundleError(f"{self.output}: cannot create the archive: cannot create a "
                              f"spool directory in {self.output.parent}: "
                              f"{exc.strerror or exc}") from exc
        try:
            self.writer = ArchiveWriter(self.output, fmt, split_size=split_size,
                                        compression_level=compression_level)
        except BaseException:
            shutil.rmtree(self.spool, ignore_errors=True)
            raise
        self.paths: list[Path] = []
        self.skipped: list[Digest] = []
        self._written: set[Digest] = set()
        self._appended: set[Digest] = set()
        self._not_served: set[Digest] = set()  # 404 before the first byte
        self._order: list[Descriptor] = []
        self._position: dict[Digest, int] = {}
        self._spooled: dict[Digest, _Spooled | None] = {}
        self._cond = threading.Condition()
        self._finishing = False
        self._aborted = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._entries: list[Descriptor] = []

    # -- the plan ------------------------------------------------------------------
    def start(self, entries: list[Descriptor], plans: list[ImagePlan], *,
              annotations: Mapping[str, str] | None = None,
              omitted: Collection[Digest] = (),
              receipt: Callable[[bytes], bytes] | None = None) -> None:
        """Write ``oci-layout``, ``index.json``, the receipt and the manifests; fix the
        blob order.

        Volumes are numbered for an upper bound of the archive's size, so that their
        names sort in order (``NAME.0000``, ... past 1000 volumes).

        Args:
            entries: the ``index.json`` descriptors.
            plans: the planned images (manifests children-first, blobs).
            annotations: the top-level annotations of ``index.json`` (or None).
            omitted: configs and layers left out of the archive (a differential
                bundle's base holds them).
            receipt: given ``index.json``'s bytes, the receipt's bytes, written as the
                member :data:`~bundler.stores.archive.RECEIPT_MEMBER` right after it.

        Raises:
            BundleError: ``index.json`` or the manifests pass a limit of
            :mod:`bundler.limits` (before anything is written), or a write fails.
        """
        self._entries = list(entries)
        manifests: dict[Digest, bytes] = {}
        configs: dict[Digest, Descriptor] = {}
        layers: dict[Digest, Descriptor] = {}
        left_out = set(omitted)
        for plan in plans:  # parents before children: a reader always knows what comes
            for descriptor, item in reversed(plan.manifests):
                manifests.setdefault(descriptor.digest, item.raw)
                if (isinstance(item, Manifest) and item.config is not None
                        and item.config.digest not in left_out):
                    configs.setdefault(item.config.digest, item.config)
            for digest, descriptor in plan.blobs.items():
                if digest not in configs and digest not in left_out:
                    layers.setdefault(digest, descriptor)
        algorithms = sorted({d.algorithm for d in [*manifests, *configs, *layers]})
        layout = json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode()
        index = index_bytes(entries, annotations)
        receipt_bytes = receipt(index) if receipt is not None else None
        refuse_oversized(str(self.output), len(index), [len(raw) for raw in manifests.values()],
                         archive=True)
        self.writer.expect_size(self.writer.size_bound([
            len(layout), len(index), len(receipt_bytes or b""), 0,
            *(0 for _ in algorithms),
            *(len(raw) for raw in manifests.values()),
            *(d.size for d in [*configs.values(), *layers.values()] if d.digest not in manifests),
        ]))
        self.writer.add_bytes("oci-layout", layout)
        self.writer.add_bytes("index.json", index)
        if receipt_bytes is not None:
            self.writer.add_bytes(RECEIPT_MEMBER, receipt_bytes)
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

    def put_blob(self, digest: Digest, size: int, open_source: Callable[[int], Iterable[bytes]],
                   *, on_bytes: Callable[[int], None] | None = None) -> int:
        """Download a blob to the spool (verified); the writer thread appends it in turn.

        For a ``.tar.zst`` the spool file holds the whole member (header, content,
        padding) as one zstd frame, compressed here, in the download's thread. The
        writer may follow the spool file while the download goes on. A foreign layer the
        registry does not serve (404 before the first byte) is left out of the archive
        (:attr:`skipped`); any other planned blob missing at the commit makes it fail, as
        does a download that fails after the writer began its member. The download stops
        at its next chunk once the writer thread has failed.

        Returns:
            Bytes fetched.

        Raises:
            IntegrityError: wrong size or digest. BundleError: the archive cannot be written.
        """
        self._raise_writer_error()
        path = self.spool / f"{digest.algorithm}-{digest.hex}"
        header, padding = ArchiveWriter.member_bytes(blob_name(digest), size)
        spooled = _Spooled(path, member_size=len(header) + size + len(padding))
        compressor = self.writer.frame_compressor()
        offered = False
        fetched = 0
        try:
            with _open_spool(path) as f:
                sink = _SpoolSink(f, spooled, self._cond)
                out: _SpoolSink | zstandard.ZstdCompressionWriter = sink
                if compressor is not None:
                    out = compressor.stream_writer(sink, size=len(header) + size + len(padding),
                                                   write_size=COPY_SIZE, closefd=False)
                    out.write(header)
                for chunk in VerifyingReader(open_source(0), digest, size, where=str(path)):
                    if self._error is not None:
                        self._raise_writer_error()
                    if not offered:
                        offered = self._offer(digest, spooled)
                    out.write(chunk)
                    fetched += len(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
                if compressor is not None:
                    out.write(padding)
                    out.flush(zstandard.FLUSH_FRAME)  # type: ignore[call-arg]
        except BaseException as exc:
            with self._cond:
                if not offered:
                    self._spooled[digest] = None
                    if isinstance(exc, NotFoundError):
                        self._not_served.add(digest)
                spooled.failed = True
                if not spooled.watched:
                    path.unlink(missing_ok=True)
                self._cond.notify_all()
            raise
        with self._cond:
            self._spooled[digest] = spooled
            spooled.done = True
            self._cond.notify_all()
        return fetched

    def _offer(self, digest: Digest, spooled: _Spooled) -> bool:
        with self._cond:
            self._spooled[digest] = spooled
            self._cond.notify_all()
        return True

    def put_manifest(self, digest: Digest, data: bytes) -> None:
        """Manifests were written by :meth:`start`; anything else is refused."""
        if digest not in self._written:
            raise BundleError(f"{self.output}: {digest} was not planned for this archive")

    def read_index(self) -> list[Descriptor]:
        """A new archive has no earlier entries."""
        return []

    def write_index(self, descriptors: Iterable[Descriptor],
                    annotations: Mapping[str, str] | None = None) -> None:
        """``index.json`` was written by :meth:`start`; the entries must be the same."""
        if [d.to_dict() for d in descriptors] != [d.to_dict() for d in self._entries]:
            raise BundleError(f"{self.output}: index.json changed after it was written")

    def sync(self) -> None:
        """Nothing to do: the archive is fsynced when committed."""

    # -- ordered appending ------------------------------------------------------------------
    def _raise_writer_error(self) -> None:
        if self._error is not None:
            raise BundleError(f"{self.output}: cannot write the archive: {self._error}") \
                from self._error

    def _append_in_order(self) -> None:
        try:
            for descriptor in self._order:
                with self._cond:
                    while (descriptor.digest not in self._spooled and not self._aborted
                           and not self._finishing):
                        self._cond.wait()
                    if self._aborted:
                        return
                    spooled = self._spooled.pop(descriptor.digest, None)
                    if spooled is None or spooled.failed:
                        self._leave_out(descriptor)
                        continue
                    spooled.watched = True
                    f = open(spooled.path, "rb", buffering=0)  # noqa: SIM115 - closed below
                with f:
                    appended = self._append(descriptor, spooled, f.fileno())
                if appended is None:
                    return
                if appended:
                    self._appended.add(descriptor.digest)
                else:
                    self._leave_out(descriptor)
                spooled.path.unlink(missing_ok=True)
        except BaseException as exc:
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _leave_out(self, descriptor: Descriptor) -> None:
        """A blob not appended: a foreign layer not served is skipped on purpose."""
        if (descriptor.digest in self._not_served
                and descriptor.media_type in FOREIGN_LAYER_TYPES):
            self.skipped.append(descriptor.digest)

    def _append(self, descriptor: Descriptor, spooled: _Spooled, fd: int) -> bool | None:
        """Copy one blob's spool file into its member, following it while it grows.

        Returns:
            True when appended, False when its download failed before anything of it was
            written, None when the export was aborted meanwhile.
        """
        copied, begun = 0, False
        while True:
            with self._cond:
                while not (spooled.done or spooled.failed or self._aborted
                           or spooled.written - copied >= _FOLLOW_SIZE):
                    self._cond.wait()
                if self._aborted:
                    return None
                done, failed, available = spooled.done, spooled.failed, spooled.written
            if failed:
                if not begun:
                    return False  # nothing of it was written: leave it out
                raise BundleError(f"the download of {descriptor.digest} failed after its "
                                  "member was begun")
            framed = self.writer.compressed
            if not begun and not framed:
                self.writer.begin(blob_name(descriptor.digest), descriptor.size)
            begun = True
            if available > copied:
                if framed:
                    self.writer.copy_frame(fd, copied, available - copied)
                else:
                    self.writer.copy_from(fd, copied, available - copied)
                copied = available
            if done and framed:
                self.writer.frame_end(spooled.member_size)
                return True
            if done:
                self.writer.end()
                return True

    # -- end --------------------------------------------------------------------------------
    def commit(self) -> list[Path]:
        """Append what is left, end the archive and give it its final name(s).

        Raises:
            BundleError: the writer failed, or a planned blob other than a foreign layer
            the registry did not serve is not in the archive (nothing gets the final name).
        """
        with self._cond:
            self._finishing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        try:
            self._raise_writer_error()
            skipped = set(self.skipped)
            missing = [d.digest for d in self._order
                       if d.digest not in self._appended and d.digest not in skipped]
            if missing:
                raise BundleError(f"{self.output}: {len(missing)} planned blob"
                                  f"{'s were' if len(missing) != 1 else ' was'} not written "
                                  f"to the archive ({', '.join(map(str, missing[:3]))}"
                                  f"{', ...' if len(missing) > 3 else ''})")
            self.paths = self.writer.commit()
        except BaseException:
            self.abort()
            raise
        shutil.rmtree(self.spool, ignore_errors=True)
        return self.paths

    def abort(self) -> None:
        """Stop appending and remove the temp archive and the spool."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        try:
            self.writer.abort()
        finally:
            shutil.rmtree(self.spool, ignore_errors=True)

    def __enter__(self) -> ArchiveExport:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

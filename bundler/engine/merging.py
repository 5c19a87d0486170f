"""``bundler merge BASE DIFF -o FULL``: a differential bundle and its base made into one
full, standalone bundle, offline.

The merge is an export (:func:`~bundler.engine.exporting.export_from_store`, the one
engine and its bundle writers) from a :class:`MergedStore`: DIFF's ``index.json`` and
manifests, each blob from DIFF if it holds it, else from BASE, every byte checked
against its digest and size while copied. The result names no base: its receipt has
``base: null`` and nothing omitted.

BASE must be the bundle DIFF names (its bundle id equal to DIFF's ``base.bundleId``);
both are read in place, so each is a directory, a ``.tar`` or uncompressed volumes.

A BASE that is itself a differential bundle (a chain: week1, week2 since week1, week3
since week2) makes the result a differential bundle on BASE's base: the blobs BASE
leaves to its base stay left out (expected from it), so ``merge week2 week3`` and then
``merge week1`` with that rebuild a full bundle from a chain of any length.

Spec: ``docs/bundle-format.md`` (receipts, differential bundles).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..errors import BundleError
from ..events import Reporter
from ..oci.content import Descriptor, Index, Manifest, entry_name
from ..oci.digest import Digest, VerifyingReader
from ..stores import Store
from ..stores.archive_files import ArchiveStore, open_archive, reads_at_random
from ..stores.layout import LayoutStore
from .export_receipts import holds_no_bundle
from .exporting import UNNAMED, ExportResult, StoreImage, export_from_store
from .receipts import Receipt, ReceiptError, read_receipt

__all__ = ["MergedStore", "check_merge", "merge_bundles", "open_in_place"]


class MergedStore:
    """DIFF's images with blobs from DIFF or BASE (a :class:`~bundler.stores.Store`).

    Args:
        diff, base: the two bundles, open.
    """

    def __init__(self, diff: Store, base: Store, name: str) -> None:
        self.diff, self.base, self.name = diff, base, name

    def __str__(self) -> str:
        return self.name

    def read_index(self) -> list[Descriptor]:
        return self.diff.read_index()

    def get_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        return self.diff.get_manifest(descriptor)

    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        return self.diff.has_blob(digest, size) or self.base.has_blob(digest, size)

    def check_blob(self, descriptor: Descriptor) -> bool:
        return self.diff.check_blob(descriptor) or self.base.check_blob(descriptor)

    @contextmanager
    def open_blob(self, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        """The blob from DIFF if it holds it, else from BASE, verified while read.

        Raises:
            BundleError: neither holds it. IntegrityError: while reading.
        """
        for store in (self.diff, self.base):
            if store.check_blob(descriptor):
                with store.open_blob(descriptor) as reader:
                    yield reader
                return
        raise BundleError(f"{self.name}: blob {descriptor.digest} is in neither bundle")


def open_in_place(path: str | os.PathLike[str], what: str) -> LayoutStore | ArchiveStore:
    """A bundle read in place: a directory or a plain ``.tar`` (or its volumes).

    Raises:
        BundleError: a ``.tar.zst`` (read once only), or not a bundle.
    """
    p = Path(path)
    if p.is_dir():
        return LayoutStore(p)
    if reads_at_random(p):
        store = open_archive(p)
        if not isinstance(store, ArchiveStore):
            store.close()
            raise BundleError(f"{p}: a docker archive is no bundle to merge")
        return store
    raise BundleError(f"{what} {p}: merge reads bundles in place: give a directory, a .tar "
                      "or its volumes (decompress a .tar.zst with zstd -d first)")


def check_merge(base: str | os.PathLike[str],
                diff: str | os.PathLike[str]) -> tuple[Receipt, Receipt]:
    """The receipts of BASE and DIFF, checked to go together (before anything is written).

    Raises:
        ReceiptError, BundleError: a receipt cannot be read; DIFF is no differential
        bundle; BASE is not the bundle DIFF names (both ids named).
    """
    diff_receipt = read_receipt(diff)
    if diff_receipt.base is None:
        raise ReceiptError(f"{diff} is a full bundle (it names no base): nothing to merge")
    base_receipt = read_receipt(base)
    if base_receipt.bundle_id != diff_receipt.base.bundle_id:
        raise ReceiptError(f"{base} is bundle {base_receipt.bundle_id}, but {diff} was "
                           f"exported since bundle {diff_receipt.base.bundle_id}")
    return base_receipt, diff_receipt


def merge_bundles(base: str | os.PathLike[str], diff: str | os.PathLike[str],
                  output: str | os.PathLike[str], *, format: str | None = None,
                  split_size: int | None = None, compression_level: int = 3, jobs: int = 8,
                  reporter: Reporter | None = None,
                  stop: threading.Event | None = None) -> ExportResult:
    """Write a full bundle of DIFF's images, blobs from DIFF or BASE (see the module
    docstring).

    Args:
        base: the bundle DIFF was exported since (directory, ``.tar``, volumes).
        diff: the differential bundle (the same kinds).
        output: the bundle to write, as ``export -o`` takes it (a directory, which must
            be new or empty, or ``NAME.tar`` / ``NAME.tar.zst``).
        format, split_size, compression_level, jobs, reporter, stop: as
            :func:`~bundler.engine.exporting.export_bundle`.

    Returns:
        The :class:`~bundler.engine.exporting.ExportResult`; ``receipt`` has no base
        (BASE's base when BASE is a differential bundle).

    Raises:
        ReceiptError, BundleError: see :func:`check_merge` and :func:`open_in_place`;
        an output directory that holds a bundle. TransferError: a blob neither holds,
        or whose bytes do not match its digest.
    """
    base_receipt, _ = check_merge(base, diff)
    out = Path(output)
    if out.is_dir() and not holds_no_bundle(out):
        raise BundleError(f"{output}: merge writes a new bundle; this directory is not "
                          "empty: choose a new or empty directory")
    with ExitStack() as stack:
        diff_store = open_in_place(diff, "DIFF")
        if isinstance(diff_store, ArchiveStore):
            stack.callback(diff_store.close)
        base_store = open_in_place(base, "BASE")
        if isinstance(base_store, ArchiveStore):
            stack.callback(base_store.close)
        merged = MergedStore(diff_store, base_store, f"{diff} + {base}")
        entries = merged.read_index()
        images = [StoreImage(entry_name(e) or f"@{e.digest}", e) for e in entries]
        names = {i.name: UNNAMED for i, e in zip(images, entries, strict=True)
                 if not entry_name(e)}
        return export_from_store(merged, images, output, format=format,
                                 split_size=split_size, compression_level=compression_level,
                                 jobs=jobs, reporter=reporter, stop=stop, entry_names=names,
                                 since=_left_to_base(base_receipt))


def _left_to_base(base: Receipt) -> Receipt | None:
    """For a differential BASE, its own base as the merge's ``since``: listing the blobs
    BASE leaves to it (None for a full BASE: the result is full)."""
    if base.base is None:
        return None
    return Receipt(base.base.bundle_id, base.base.created, images=(),
                   blobs={b.digest: b.size for b in base.omitted})

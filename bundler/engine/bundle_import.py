"""Opening a bundle to import it, and the import of each kind of bundle: a layout
directory, a ``.tar`` read by offsets, an archive read once (``.tar.zst``, volumes,
``-``), each with the receipt side of :mod:`bundler.engine.chain_import` (a
differential bundle's check before the first push, the registry receipt after the
last tag).

Spec: image-spec ``image-layout.md``; skopeo-copy(1) ``--dest-shared-blob-dir``.
"""

from __future__ import annotations

import os
import threading

from ..errors import BundleError
from ..events import Reporter
from ..registry.client import TransportOptions
from ..stores.archive import is_archive
from ..stores.archive_files import reads_by_offsets
from ..stores.layout import LayoutStore
from .archive_check import read_head
from .archive_files import import_file
from .archive_import import import_archive
from .chain_import import ImportChain
from .importing import ImportResult, push_images
from .referrer_push import maintain_fallback_indexes, push_with_referrers, referrer_targets

__all__ = ["import_any", "no_shared_blobs", "open_bundle"]


def open_bundle(path: str | os.PathLike[str], *,
                shared_blob_dir: str | os.PathLike[str] | None = None) -> LayoutStore:
    """Open an existing bundle directory for reading.

    Args:
        path: the layout directory.
        shared_blob_dir: a directory of ``<alg>/<hex>`` blobs shared by layouts (as
            ``skopeo copy --dest-shared-blob-dir DIR`` writes them): the blobs are read
            there instead of in ``path/blobs``.

    Raises:
        BundleError: missing, or not an OCI image layout; ``shared_blob_dir`` is not a
        directory; without ``shared_blob_dir``, the layout names images but its
        ``blobs`` directory holds nothing (naming the first missing manifest and
        suggesting ``--shared-blob-dir``).

    Spec: image-spec ``image-layout.md``; skopeo-copy(1) ``--dest-shared-blob-dir``.
    """
    store = LayoutStore(path, blob_root=shared_blob_dir)
    if shared_blob_dir is None:
        _hint_shared_blobs(store)
    return store


def _hint_shared_blobs(store: LayoutStore) -> None:
    """Refuse a layout whose ``blobs`` directory is empty while ``index.json`` names
    images: skopeo writes such a layout when its blobs went to a shared directory."""
    entries = store.read_index()
    if not entries or store.has_blob(entries[0].digest):
        return
    try:
        with os.scandir(store.root / "blobs") as folders:
            for folder in folders:
                if folder.is_dir(follow_symlinks=False):
                    with os.scandir(folder.path) as files:
                        if next(files, None) is not None:
                            return
    except (FileNotFoundError, NotADirectoryError):
        pass
    raise BundleError(
        f"{store.root}: blob {entries[0].digest} is missing: the layout's blobs directory "
        "holds nothing; a layout written with a shared blob directory (skopeo copy "
        "--dest-shared-blob-dir DIR) keeps its blobs there: give it with "
        "--shared-blob-dir DIR")


def import_any(bundle: str | os.PathLike[str], chain: ImportChain,
            pairs: list[tuple[str, str]] | None, *, to: str | None,
            options: TransportOptions | None, jobs: int, reporter: Reporter | None,
            stop: threading.Event | None, keep_going: bool,
            shared_blob_dir: str | os.PathLike[str] | None,
            max_zstd_ratio: int | None) -> ImportResult:
    """The push of :func:`bundler.import_bundle`, by the kind of bundle: a ``.tar`` read
    by offsets, an archive read once, or a layout directory (see its Args); the chain's
    receipt and check go with each.

    Raises:
        As :func:`bundler.import_bundle`.
    """
    if reads_by_offsets(bundle):  # a .tar file: read by offsets, in any member order
        return import_file(bundle, to=to, mapping=pairs, options=options, jobs=jobs,
                           reporter=reporter, stop=stop, keep_going=keep_going, chain=chain)
    if is_archive(bundle):  # .tar.zst, volumes or "-": one pass, never unpacked
        result = import_archive(bundle, to=to, mapping=pairs, options=options, jobs=jobs,
                                reporter=reporter, stop=stop, keep_going=keep_going,
                                max_zstd_ratio=max_zstd_ratio, chain=chain)
        if str(bundle) != "-":  # referrers: the tag schema where a destination lacks the API
            maintain_fallback_indexes(read_head(bundle, max_zstd_ratio=max_zstd_ratio),
                                      referrer_targets(result.targets), options)
        return result
    store = open_bundle(bundle, shared_blob_dir=shared_blob_dir)
    chain.take_store(bundle, store)
    chain.check_store(store, store.read_index(), to=to, mapping=pairs, options=options,
                      jobs=jobs, stop=stop)  # a differential bundle: nothing sent yet
    return push_with_referrers(  # referrers after their subjects (engine/referrer_push.py)
        store, store.read_index(), to=to, mapping=pairs, options=options,
        push=lambda targets: push_images(store, targets, options=options, jobs=jobs,
                                         reporter=reporter, stop=stop, keep_going=keep_going,
                                         chain=chain))


def no_shared_blobs(bundle: str | os.PathLike[str],
                     shared_blob_dir: str | os.PathLike[str] | None) -> None:
    """Refuse a shared blob directory for an archive, which holds its own blobs.

    Raises:
        BundleError: ``shared_blob_dir`` given for an archive.
    """
    if shared_blob_dir is not None:
        raise BundleError(f"{bundle}: --shared-blob-dir is for a layout directory; an "
                          "archive holds its own blobs")

"""Bundle receipts: a bundle's identity and everything its images need, in a small file
(the format: :mod:`bundler.oci.receipt`, re-exported here), and reading them out of
bundles.

A receipt (format version 1) is what the connected side keeps instead of an old bundle:
the bundle id (the sha256 digest of the bundle's ``index.json`` bytes), when it was
written, its images (one per ``index.json`` entry), every blob the images need (held in
the bundle or omitted: manifests, indexes, configs, layers, referrers' blobs), and for a
differential bundle its base and the blobs it leaves to that base.

Every export writes it twice: inside the bundle (:data:`RECEIPT_MEMBER`, at the layout
root; in an archive the member right after ``index.json``) and beside it
(:func:`receipt_path_beside`). It is written canonical: sorted keys, no spaces, one
newline at the end.

Spec: the receipt is bundler's own (``docs/bundle-format.md``); the bundle id is a
digest as image-spec ``descriptor.md`` ("Digests") defines them, of ``index.json``
(image-spec ``image-layout.md``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import BundleError, ReceiptError, StaleReceiptError
from ..oci.content import Descriptor, Index, Manifest, entry_name
from ..oci.digest import Digest
from ..oci.graph import walk
from ..oci.limits import INDEX_LIMIT, RECEIPT_LIMIT, describe
from ..oci.receipt import (
    BASE_ANNOTATION,
    RECEIPT_MEDIA_TYPE,
    RECEIPT_MEMBER,
    RECEIPT_VERSION,
    BaseRef,
    OmittedBlob,
    Receipt,
    ReceiptImage,
    base_annotation,
    bundle_id_of,
    now,
    receipt_path_beside,
)
from ..stores.archive import ArchiveReader
from ..stores.archive_files import open_archive, reads_by_offsets
from ..stores.contained import read_inside
from ..stores.layout import LayoutStore
from ..stores.seekable_archive import ArchiveStore, read_small
from ..stores.volumes import find_volumes
from ..stores.zstd import ZSTD_MAGIC, is_skippable

__all__ = [
    "BASE_ANNOTATION",
    "RECEIPT_MEDIA_TYPE",
    "RECEIPT_MEMBER",
    "RECEIPT_VERSION",
    "BaseRef",
    "OmittedBlob",
    "Receipt",
    "ReceiptError",
    "ReceiptImage",
    "StaleReceiptError",
    "base_annotation",
    "bundle_id_of",
    "check_inside",
    "compute_receipt",
    "now",
    "inside_bytes",
    "read_inside_receipt",
    "read_receipt",
    "receipt_path_beside",
]


class _Loader:
    """Parsed manifests of a store (a layout, an archive's head), each loaded once."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.cache: dict[Digest, Manifest | Index] = {}

    def __call__(self, descriptor: Descriptor) -> Manifest | Index:
        item = self.cache.get(descriptor.digest)
        if item is None:
            item = self.cache[descriptor.digest] = self.store.get_manifest(descriptor)
        return item


def compute_receipt(index_json: bytes, store: Any, *, created: str,
                    base: BaseRef | None = None,
                    omitted: tuple[OmittedBlob, ...] = ()) -> Receipt:
    """The receipt of a bundle from its ``index.json`` bytes and its manifests.

    Args:
        index_json: the exact bytes of ``index.json``.
        store: anything with ``read_index`` and ``get_manifest`` (a layout, an archive,
            an archive's head, a bundle being written).
        created: RFC 3339 UTC time (:func:`now`).
        base, omitted: what a differential bundle leaves to its base (only the blobs
            its images need are listed: not one left out for an image that failed).

    Raises:
        BundleError, ManifestError, IntegrityError: a manifest missing or unreadable.
    """
    entries = store.read_index()
    load = _Loader(store)
    blobs: dict[str, int] = {}
    images = []
    for entry in entries:
        plan = walk(entry, load, name=entry_name(entry) or str(entry.digest))
        for descriptor, _item in plan.manifests:
            blobs[str(descriptor.digest)] = descriptor.size
        for digest, descriptor in plan.blobs.items():
            blobs[str(digest)] = descriptor.size
        images.append(ReceiptImage(entry_name(entry) or None, str(entry.digest),
                                   entry.media_type, entry.size))
    return Receipt(bundle_id=bundle_id_of(index_json), created=created, images=tuple(images),
                   blobs=blobs, base=base,
                   omitted=tuple(b for b in omitted if b.digest in blobs))


def check_inside(data: bytes | None, index_json: bytes, where: str) -> Receipt | None:
    """A bundle's inside receipt (``data``: its bytes, or None if there is none),
    parsed and checked against the bundle's ``index.json`` bytes.

    Raises:
        ReceiptError: the receipt is malformed (naming ``WHERE/bundler-receipt.json``).
        BundleError: it is of another ``index.json``; ``index.json`` names a base and
        there is no receipt, or one of another base (or the other way round).
    """
    return _checked(_inside(data, where), index_json, where)


def inside_bytes(path: str | os.PathLike[str]) -> tuple[bytes | None, bytes, str] | None:
    """(receipt bytes or None, ``index.json`` bytes, name) of a bundle read in place (a
    directory, a plain ``.tar`` or uncompressed volumes); None for a docker archive.

    Raises:
        BundleError: not such a bundle, no ``index.json``, a file over its limit.
    """
    p = Path(path)
    if p.is_dir():
        index_json = read_inside(p, "index.json", limit=INDEX_LIMIT)
        if index_json is None:
            raise BundleError(f"{p}: no index.json")
        return read_inside(p, RECEIPT_MEMBER, limit=RECEIPT_LIMIT), index_json, str(p)
    store = open_archive(p)
    try:
        if not isinstance(store, ArchiveStore):
            return None  # a docker archive: no bundle of bundler's
        index_json = read_small(store.index, "index.json", INDEX_LIMIT, "index.json")
        assert index_json is not None  # ArchiveStore refuses an archive without one
        return read_small(store.index, RECEIPT_MEMBER, RECEIPT_LIMIT, "a receipt"), \
            index_json, str(p)
    finally:
        store.close()


def read_inside_receipt(path: str | os.PathLike[str]) -> Receipt | None:
    """The inside receipt of a bundle read in place (a directory, a plain ``.tar`` or
    uncompressed volumes), checked against its ``index.json``; None if it has none.
    Nothing is computed.

    Raises:
        ReceiptError, BundleError, StaleReceiptError: see :func:`check_inside`; not
        such a bundle.
    """
    found = inside_bytes(path)
    return None if found is None else check_inside(*found)


def _checked(receipt: Receipt | None, index_json: bytes, where: str) -> Receipt | None:
    """The inside receipt, checked against ``index.json`` (None: there is none).

    Raises:
        StaleReceiptError: a full bundle's receipt is of another ``index.json`` (it
        was changed since: the receipt is no use). BundleError: so is a differential
        bundle's; the base annotation with no receipt, or with a receipt of another
        base.
    """
    bundle_id = bundle_id_of(index_json)
    annotated = base_annotation(index_json, where)
    if receipt is not None and receipt.bundle_id != bundle_id:
        kind = BundleError if annotated is not None else StaleReceiptError
        raise kind(f"{where}: {RECEIPT_MEMBER} is the receipt of bundle "
                   f"{receipt.bundle_id}, not of this index.json ({bundle_id})")
    if annotated is not None:
        if receipt is None:
            raise BundleError(f"{where}: a differential bundle (index.json names base "
                              f"{annotated}) without its {RECEIPT_MEMBER}")
        if receipt.base is None or receipt.base.bundle_id != annotated:
            named = receipt.base.bundle_id if receipt.base else "none"
            raise BundleError(f"{where}: index.json names base {annotated} but "
                              f"{RECEIPT_MEMBER} names base {named}")
    elif receipt is not None and receipt.base is not None:
        raise BundleError(f"{where}: {RECEIPT_MEMBER} names base {receipt.base.bundle_id} "
                          f"but index.json has no {BASE_ANNOTATION} annotation")
    return receipt


def _unless_stale(receipt: Receipt | None, index_json: bytes, where: str) -> Receipt | None:
    """:func:`_checked`, with a stale receipt of a full bundle taken as none (one is
    computed)."""
    try:
        return _checked(receipt, index_json, where)
    except StaleReceiptError:
        return None


def _mtime(path: Path) -> str:
    try:
        stamp = path.stat().st_mtime
    except OSError:
        return now()
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _inside(data: bytes | None, where: str) -> Receipt | None:
    """Parse an inside receipt; a bad one is a bundle problem (exit 1)."""
    return None if data is None else Receipt.from_bytes(data, f"{where}/{RECEIPT_MEMBER}")


def _read_layout(root: Path) -> Receipt:
    store = LayoutStore(root)
    index_json = read_inside(root, "index.json", limit=INDEX_LIMIT)
    if index_json is None:
        raise BundleError(f"{root}: no index.json (not a bundle, or its export did not "
                          "finish)")
    inside = _inside(read_inside(root, RECEIPT_MEMBER, limit=RECEIPT_LIMIT), str(root))
    receipt = _unless_stale(inside, index_json, str(root))
    return receipt or compute_receipt(index_json, store, created=_mtime(root / "index.json"))


def _read_tar(path: Path, stamp: Path) -> Receipt:
    store = open_archive(path)
    try:
        if not isinstance(store, ArchiveStore):
            raise BundleError(f"{path}: a docker archive has no index.json and no bundle id; "
                              "give an OCI layout bundle")
        index_json = read_small(store.index, "index.json", INDEX_LIMIT, "index.json")
        assert index_json is not None  # ArchiveStore refuses an archive without one
        entry = store.index.get(RECEIPT_MEMBER)
        data = None
        if entry is not None:
            if entry.size > RECEIPT_LIMIT:
                raise ReceiptError(f"{path}/{RECEIPT_MEMBER}: a receipt of {entry.size} bytes "
                                   f"is larger than the limit of {describe(RECEIPT_LIMIT)}")
            data = store.index.read(entry)
        receipt = _unless_stale(_inside(data, str(path)), index_json, str(path))
        return receipt or compute_receipt(index_json, store, created=_mtime(stamp))
    finally:
        store.close()


def _read_once(path: Path, stamp: Path) -> Receipt:
    """A ``.tar.zst`` or compressed volumes: the receipt right after ``index.json``,
    or one computed from the archive's head."""
    from .archive_check import read_head  # the archive head reader of verify and list

    index_json = data = None
    with ArchiveReader(path) as reader:
        where = reader.where
        for member in reader:
            if member.name == "oci-layout":
                continue
            if member.name == "index.json":
                if member.size > INDEX_LIMIT:
                    raise BundleError(f"{where}: index.json of {member.size} bytes is larger "
                                      f"than the limit of {describe(INDEX_LIMIT)}")
                index_json = member.file.read()
                continue
            if member.name == RECEIPT_MEMBER and index_json is not None:
                if member.size > RECEIPT_LIMIT:
                    raise ReceiptError(f"{where}/{RECEIPT_MEMBER}: a receipt of {member.size} "
                                       f"bytes is larger than the limit of "
                                       f"{describe(RECEIPT_LIMIT)}")
                data = member.file.read()
            break
    if index_json is None:
        raise BundleError(f"{where}: the archive does not begin with index.json (not a "
                          "bundle written by bundler, or not a bundle)")
    receipt = _unless_stale(_inside(data, where), index_json, where)
    if receipt is not None:
        return receipt
    return compute_receipt(index_json, read_head(path), created=_mtime(stamp))


def read_receipt(path: str | os.PathLike[str]) -> Receipt:
    """The receipt of a bundle, or a receipt file.

    Args:
        path: a receipt file (``NAME.receipt.json``), a bundle directory, a ``.tar`` or
            ``.tar.zst`` bundle, or split volumes (base name or any volume).

    Returns:
        The receipt file's receipt; a bundle's inside receipt (checked against its
        ``index.json``); for a bundle without one (an older bundler, another tool's
        layout), one computed from the layout: the bundle id from ``index.json``, the
        blobs from walking its manifests, ``created`` from ``index.json``'s (or the
        archive's) modification time.

    Raises:
        ReceiptError: a receipt that is not one, of another version, malformed or too
        large (the message names the file). BundleError: no such file; not a bundle;
        a bundle whose inside receipt is of another ``index.json``; a differential
        bundle (``dev.bundler.base``) without a receipt naming that base; a manifest
        missing.
    """
    p = Path(path)
    if p.is_dir():
        return _read_layout(p)
    if p.is_file():
        try:
            with open(p, "rb") as f:
                head = f.read(512)
        except OSError as exc:
            raise BundleError(f"{p}: cannot read: {exc.strerror or exc}") from exc
        if head.lstrip()[:1] in (b"{", b"["):
            try:
                size = p.stat().st_size
                if size > RECEIPT_LIMIT:
                    raise ReceiptError(f"{p}: a receipt of {size} bytes is larger than the "
                                       f"limit of {describe(RECEIPT_LIMIT)}")
                return Receipt.from_bytes(p.read_bytes(), str(p))
            except OSError as exc:
                raise BundleError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    try:
        volumes = find_volumes(p)
    except BundleError:
        volumes = None
    if p.is_file() and volumes is None and not _is_archive_head(head):
        raise ReceiptError(f"{p} is not a bundler receipt or bundle")
    if not p.is_file() and volumes is None:
        if p.exists():  # a FIFO, a socket, a device: never opened (a FIFO would block)
            raise BundleError(f"{p}: not a regular file or directory; give a bundle or "
                              "a receipt")
        raise BundleError(f"{p}: no such bundle or receipt")
    stamp = volumes[1][0] if volumes and volumes[1] else p
    if reads_by_offsets(p):
        return _read_tar(p, stamp)
    return _read_once(p, stamp)


def _is_archive_head(head: bytes) -> bool:
    """Whether a file's first 512 bytes begin a zstd frame or a tar header."""
    return (head[:4] == ZSTD_MAGIC or is_skippable(head[:4])
            or (len(head) == 512 and head[257:262] == b"ustar"))

"""Bundle receipts: a bundle's identity and everything its images need, in a small file.

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

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import BundleError, BundlerError, InvalidReferenceError
from ..oci.content import Descriptor, Index, Manifest, entry_name
from ..oci.digest import Digest
from ..oci.graph import walk
from ..oci.limits import INDEX_LIMIT, RECEIPT_LIMIT, describe
from ..stores.archive import RECEIPT_MEMBER, ArchiveReader
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

RECEIPT_VERSION = 1
RECEIPT_MEDIA_TYPE = "application/vnd.dev.bundler.receipt.v1+json"
#: The top-level annotation of a differential bundle's ``index.json``: its base's id.
BASE_ANNOTATION = "dev.bundler.base"


class ReceiptError(BundlerError):
    """A receipt that cannot be used: not a receipt, another format version, a missing
    or ill-typed field, a bad digest, over :data:`~bundler.oci.limits.RECEIPT_LIMIT`.
    The message names the file."""


class StaleReceiptError(BundleError):
    """A full bundle's inside receipt names another ``index.json`` than the bundle's
    (``index.json`` was changed after the export): ignored, with a warning."""


@dataclass(frozen=True)
class ReceiptImage:
    """One ``index.json`` entry: its reference (None: unnamed, e.g. a referrer), the
    digest, media type and size (bytes) of its manifest or index."""

    reference: str | None
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class OmittedBlob:
    """A config or layer the bundle leaves to its base: digest, size (bytes), media
    type, and the source repositories (``registry/repository``, sorted) that need it."""

    digest: str
    size: int
    media_type: str
    repositories: tuple[str, ...]


@dataclass(frozen=True)
class BaseRef:
    """The base of a differential bundle: its bundle id and creation time."""

    bundle_id: str
    created: str


@dataclass(frozen=True)
class Receipt:
    """A bundle's receipt (format version :data:`RECEIPT_VERSION`).

    Attributes:
        bundle_id: ``sha256:<hex>`` of the bundle's ``index.json`` bytes.
        created: RFC 3339 UTC time, second precision (``2026-12-08T02:30:00Z``).
        images: one per ``index.json`` entry, in its order.
        blobs: digest -> size (bytes) of every blob the images need, held or omitted.
        base: the base of a differential bundle, else None.
        omitted: the blobs left to the base, sorted by digest (empty: a full bundle).
    """

    bundle_id: str
    created: str
    images: tuple[ReceiptImage, ...]
    blobs: Mapping[str, int]
    base: BaseRef | None = None
    omitted: tuple[OmittedBlob, ...] = field(default=())

    @property
    def differential(self) -> bool:
        """Whether the bundle names a base (and may leave blobs to it)."""
        return self.base is not None

    @property
    def omitted_bytes(self) -> int:
        """Bytes of the blobs left to the base."""
        return sum(b.size for b in self.omitted)

    def to_dict(self) -> dict[str, Any]:
        """The receipt as JSON values (blobs and omitted sorted by digest)."""
        return {
            "mediaType": RECEIPT_MEDIA_TYPE,
            "receiptVersion": RECEIPT_VERSION,
            "bundleId": self.bundle_id,
            "created": self.created,
            "images": [{"reference": i.reference, "digest": i.digest,
                        "mediaType": i.media_type, "size": i.size} for i in self.images],
            "blobs": [{"digest": d, "size": self.blobs[d]} for d in sorted(self.blobs)],
            "base": None if self.base is None else {
                "bundleId": self.base.bundle_id, "created": self.base.created},
            "omitted": [{"digest": b.digest, "size": b.size, "mediaType": b.media_type,
                         "repositories": sorted(b.repositories)}
                        for b in sorted(self.omitted, key=lambda b: b.digest)],
        }

    def to_bytes(self) -> bytes:
        """The canonical bytes: sorted keys, no spaces, a newline at the end."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> Receipt:
        """Parse and check a receipt.

        Args:
            data: the file's bytes.
            source: the file's name, for messages.

        Raises:
            ReceiptError: ``SOURCE is not a bundler receipt`` (not JSON, not an object,
            another ``mediaType``); ``SOURCE is receipt version V; this bundler reads
            version 1``; ``SOURCE: receipt field F ...`` (missing, ill-typed, a bad
            digest); over :data:`~bundler.oci.limits.RECEIPT_LIMIT`.
        """
        if len(data) > RECEIPT_LIMIT:
            raise ReceiptError(f"{source}: a receipt of {len(data)} bytes is larger than the "
                               f"limit of {describe(RECEIPT_LIMIT)}")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            raise ReceiptError(f"{source} is not a bundler receipt") from None
        if not isinstance(doc, dict) or doc.get("mediaType") != RECEIPT_MEDIA_TYPE:
            raise ReceiptError(f"{source} is not a bundler receipt")
        version = doc.get("receiptVersion")
        if version != RECEIPT_VERSION or type(version) is not int:
            shown = json.dumps(version)[:40] if version is not None else "(none)"
            raise ReceiptError(f"{source} is receipt version {shown}; this bundler reads "
                               f"version {RECEIPT_VERSION}")
        return _Fields(source).receipt(doc)


class _Fields:
    """Typed access to a receipt's fields, refusing with the field's name."""

    def __init__(self, source: str) -> None:
        self.source = source

    def refuse(self, name: str, what: str) -> ReceiptError:
        return ReceiptError(f"{self.source}: receipt field {name} {what}")

    def get(self, doc: dict[str, Any], key: str, kind: type | tuple[type, ...],
            where: str = "") -> Any:
        name = f"{where}{key}"
        if key not in doc:
            raise self.refuse(name, "is missing")
        value = doc[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not any(type(value) is k for k in kinds):
            names = " or ".join({str: "a string", int: "an integer", list: "a list",
                                 dict: "an object", type(None): "null"}[k] for k in kinds)
            raise self.refuse(name, f"must be {names}")
        if type(value) is int and value < 0:
            raise self.refuse(name, "must not be negative")
        return value

    def digest(self, doc: dict[str, Any], key: str, where: str = "") -> str:
        text = self.get(doc, key, str, where)
        try:
            return str(Digest.parse(text))
        except InvalidReferenceError:
            raise self.refuse(f"{where}{key}", "is not a digest (sha256:<64 hex>)") from None

    def items(self, doc: dict[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
        listed = self.get(doc, key, list)
        out = []
        for n, item in enumerate(listed):
            if type(item) is not dict:
                raise self.refuse(f"{key}[{n}]", "must be an object")
            out.append((f"{key}[{n}].", item))
        return out

    def receipt(self, doc: dict[str, Any]) -> Receipt:
        images = tuple(
            ReceiptImage(self.get(i, "reference", (str, type(None)), w), self.digest(i, "digest", w),
                         self.get(i, "mediaType", str, w), self.get(i, "size", int, w))
            for w, i in self.items(doc, "images"))
        blobs: dict[str, int] = {}
        for w, b in self.items(doc, "blobs"):
            digest = self.digest(b, "digest", w)
            if digest in blobs:
                raise self.refuse(f"{w}digest", f"lists {digest} a second time")
            blobs[digest] = self.get(b, "size", int, w)
        base_doc = self.get(doc, "base", (dict, type(None)))
        base = None if base_doc is None else BaseRef(
            self.digest(base_doc, "bundleId", "base."), self.get(base_doc, "created", str, "base."))
        omitted = []
        for w, b in self.items(doc, "omitted"):
            digest = self.digest(b, "digest", w)
            repositories = self.get(b, "repositories", list, w)
            if not all(type(r) is str for r in repositories):
                raise self.refuse(f"{w}repositories", "must be a list of strings")
            if blobs.get(digest) is None:
                raise self.refuse(f"{w}digest", f"names {digest}, which blobs does not list")
            omitted.append(OmittedBlob(digest, self.get(b, "size", int, w),
                                       self.get(b, "mediaType", str, w), tuple(repositories)))
        if omitted and base is None:
            raise self.refuse("omitted", "lists blobs but base is null")
        return Receipt(bundle_id=self.digest(doc, "bundleId"),
                       created=self.get(doc, "created", str), images=images, blobs=blobs,
                       base=base, omitted=tuple(sorted(omitted, key=lambda b: b.digest)))


def now() -> str:
    """The current time as a receipt writes it (RFC 3339 UTC, second precision)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bundle_id_of(index_json: bytes) -> str:
    """The bundle id: ``sha256:<hex>`` of ``index.json``'s exact bytes."""
    return str(Digest.of(index_json))


def base_annotation(index_json: bytes, where: str) -> str | None:
    """The :data:`BASE_ANNOTATION` of ``index.json`` (a differential bundle), or None.

    Raises:
        BundleError: ``index.json`` is not a JSON object.
    """
    try:
        doc = json.loads(index_json)
    except ValueError as exc:
        raise BundleError(f"{where}: index.json is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{where}: index.json is not an image index")
    annotations = doc.get("annotations")
    value = annotations.get(BASE_ANNOTATION) if isinstance(annotations, dict) else None
    return value if isinstance(value, str) else None


def receipt_path_beside(output: str | os.PathLike[str]) -> Path:
    """``NAME.receipt.json`` beside a bundle named ``NAME`` as given to ``-o``
    (``out/`` -> ``out.receipt.json``, ``b.tar.zst`` -> ``b.tar.zst.receipt.json``)."""
    path = Path(os.fspath(output).rstrip("/") or "/")
    return path.with_name(path.name + ".receipt.json")


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
        base, omitted: what a differential bundle leaves to its base.

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
                   blobs=blobs, base=base, omitted=tuple(omitted))


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
        if not _is_archive_head(head):
            raise ReceiptError(f"{p} is not a bundler receipt or bundle")
    try:
        volumes = find_volumes(p)
    except BundleError:
        volumes = None
    if not p.is_file() and volumes is None:
        raise BundleError(f"{p}: no such bundle or receipt")
    stamp = volumes[1][0] if volumes and volumes[1] else p
    if reads_by_offsets(p):
        return _read_tar(p, stamp)
    return _read_once(p, stamp)


def _is_archive_head(head: bytes) -> bool:
    """Whether a file's first 512 bytes begin a zstd frame or a tar header."""
    return (head[:4] == ZSTD_MAGIC or is_skippable(head[:4])
            or (len(head) == 512 and head[257:262] == b"ustar"))

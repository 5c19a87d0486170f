"""The bundle receipt's format (version 1): a bundle's identity and everything its
images need, as a small canonical JSON document. No I/O: reading receipts out of
bundles is :mod:`bundler.engine.receipts`.

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

from ..errors import BundleError, InvalidReferenceError, ReceiptError
from .digest import Digest
from .limits import RECEIPT_LIMIT, describe

__all__ = [
    "BASE_ANNOTATION",
    "RECEIPT_MEDIA_TYPE",
    "RECEIPT_MEMBER",
    "RECEIPT_VERSION",
    "BaseRef",
    "OmittedBlob",
    "Receipt",
    "ReceiptImage",
    "base_annotation",
    "bundle_id_of",
    "now",
    "receipt_path_beside",
]

RECEIPT_VERSION = 1
RECEIPT_MEDIA_TYPE = "application/vnd.dev.bundler.receipt.v1+json"
#: The receipt inside a bundle: at the layout root beside ``index.json``; in an archive,
#: the member right after ``index.json``.
RECEIPT_MEMBER = "bundler-receipt.json"
#: The top-level annotation of a differential bundle's ``index.json``: its base's id.
BASE_ANNOTATION = "dev.bundler.base"


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

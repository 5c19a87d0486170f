"""What an export writes about its bundle: the ``index.json`` entries (named by their
references), the receipt (inside and beside the bundle) and, for ``export --since
BASE``, which blobs it leaves to the base.

A differential bundle holds every manifest and index of its images and only the
configs and layers that the base's receipt does not list; ``index.json`` names the base
(:data:`~bundler.engine.receipts.BASE_ANNOTATION`) and the receipt lists the blobs left
out, each with the source repositories that need it.

Order of writing, so that a killed export never leaves a receipt that looks complete
for a bundle that is not: a directory's old receipts are removed before its new
``index.json``, then the inside receipt and last the one beside; an archive's inside
receipt is a member of the temporary archive (it gets its name with the archive), and
the one beside comes after the archive's commit. Both are written atomically.

Spec: ``docs/bundle-format.md`` (the receipt); image-spec ``image-layout.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BundleError, InvalidReferenceError
from ..oci.content import REF_NAME, Descriptor, Index, Manifest, is_non_distributable
from ..oci.digest import Digest
from ..oci.graph import ImagePlan
from ..oci.limits import INDEX_LIMIT
from ..oci.reference import Reference
from ..stores import BundleStore
from ..stores.archive_export import ArchiveExport
from ..stores.contained import read_inside
from ..stores.layout import LayoutStore, write_atomic
from .bundle_destination import UNNAMED, named_entries
from .receipts import (
    BASE_ANNOTATION,
    RECEIPT_MEMBER,
    BaseRef,
    OmittedBlob,
    Receipt,
    compute_receipt,
    now,
    receipt_path_beside,
)

__all__ = ["UNNAMED", "Differential", "merged_entries", "named_entries", "start_archive",
           "write_index", "PlannedStore", "archive_receipt", "clear_layout_receipts",
           "has_inside_receipt", "holds_no_bundle", "source_repository", "write_beside",
           "write_layout_receipt"]




@dataclass
class Differential:
    """What an export leaves to its base (``--since``).

    Args:
        base: the base's receipt.

    Attributes:
        omitted: digest -> the blob left out, filled by :meth:`choose`.
    """

    base: Receipt
    omitted: dict[Digest, OmittedBlob] = field(default_factory=dict)

    @property
    def base_ref(self) -> BaseRef:
        return BaseRef(self.base.bundle_id, self.base.created)

    @property
    def annotations(self) -> dict[str, str]:
        """The top-level annotations of the diff's ``index.json``."""
        return {BASE_ANNOTATION: self.base.bundle_id}

    def choose(self, plans: list[tuple[ImagePlan, str | None]]) -> None:
        """Leave out every config and layer of ``plans`` that the base lists with the
        same size, but a non-distributable layer: no registry holds it and a base
        bundle need not, so it is handled as by any export (skipped, or fetched with
        ``--include-foreign-layers``), and but bytes that are a manifest (of the new
        set, or an image of the base): a registry holds a manifest as no blob, so the
        import could not find it there. ``plans`` pairs each planned image with its
        source repository (``registry/repository``, or None if unknown)."""
        manifests = {str(d.digest) for plan, _ in plans for d, _ in plan.manifests}
        manifests.update(image.digest for image in self.base.images)
        wanted: dict[Digest, tuple[Descriptor, set[str]]] = {}
        for plan, repository in plans:
            for digest, descriptor in plan.blobs.items():
                if (self.base.blobs.get(str(digest)) != descriptor.size
                        or is_non_distributable(descriptor) or str(digest) in manifests):
                    continue
                _, repositories = wanted.setdefault(digest, (descriptor, set()))
                if repository:
                    repositories.add(repository)
        self.omitted = {
            digest: OmittedBlob(str(digest), descriptor.size, descriptor.media_type,
                                tuple(sorted(repositories)))
            for digest, (descriptor, repositories) in sorted(wanted.items())}

    def leaves_out(self, descriptor: Descriptor) -> bool:
        """Whether the blob is left to the base."""
        return descriptor.digest in self.omitted


def holds_no_bundle(directory: Path) -> bool:
    """Whether a new bundle may be written into an existing directory: it is empty, or
    holds only what an interrupted export kept (``oci-layout`` and finished blobs, no
    ``index.json``), which the same command continues from."""
    return all(p.name in ("oci-layout", "blobs") for p in directory.iterdir())


def source_repository(name: str, reference: Reference | None) -> str | None:
    """``registry/repository`` of an image asked by ``reference`` (or named ``name``)."""
    if reference is not None:
        return reference.name
    try:
        return Reference.parse(name).name
    except InvalidReferenceError:
        return None


class PlannedStore:
    """The images being written, as ``compute_receipt`` reads a store: ``index.json``'s
    entries and the planned manifests (an archive's receipt is written before its
    blobs)."""

    def __init__(self, entries: list[Descriptor], plans: list[ImagePlan]) -> None:
        self.entries = entries
        self.manifests: dict[Digest, Manifest | Index] = {
            d.digest: item for p in plans for d, item in p.manifests}

    def read_index(self) -> list[Descriptor]:
        return list(self.entries)

    def get_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        return self.manifests[descriptor.digest]


def archive_receipt(entries: list[Descriptor], plans: list[ImagePlan],
                    differential: Differential | None,
                    made: list[Receipt]) -> Callable[[bytes], bytes]:
    """The ``receipt`` callback of :meth:`ArchiveExport.start`: builds the receipt from
    ``index.json``'s bytes and the plans, and appends it to ``made``."""

    def receipt(index_json: bytes) -> bytes:
        made.append(compute_receipt(
            index_json, PlannedStore(entries, plans), created=now(),
            base=differential.base_ref if differential else None,
            omitted=tuple(differential.omitted.values()) if differential else ()))
        return made[-1].to_bytes()

    return receipt


def clear_layout_receipts(store: LayoutStore) -> None:
    """Remove a directory bundle's receipts (inside and beside) before its
    ``index.json`` is replaced: a run killed before the new ones are written leaves none.

    Raises:
        BundleError: one cannot be removed.
    """
    for path in (store.root / RECEIPT_MEMBER, receipt_path_beside(store.root)):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise BundleError(f"{path}: cannot remove the old receipt: "
                              f"{exc.strerror or exc}") from exc


def has_inside_receipt(store: LayoutStore) -> bool:
    """Whether a directory bundle holds a receipt (written by an earlier export)."""
    return (store.root / RECEIPT_MEMBER).exists()


def write_layout_receipt(store: LayoutStore, differential: Differential | None) -> Receipt:
    """Write a directory bundle's inside receipt, of the ``index.json`` it holds now.

    Raises:
        BundleError: it cannot be written, or a manifest of ``index.json`` is missing.
    """
    index_json = read_inside(store.root, "index.json", limit=INDEX_LIMIT)
    if index_json is None:
        raise BundleError(f"{store.root}: index.json is gone")
    receipt = compute_receipt(
        index_json, store, created=now(),
        base=differential.base_ref if differential else None,
        omitted=tuple(differential.omitted.values()) if differential else ())
    _write(store.root / RECEIPT_MEMBER, receipt.to_bytes())
    return receipt


def write_beside(output: str | os.PathLike[str], receipt: Receipt) -> Path:
    """Write ``NAME.receipt.json`` beside the bundle, atomically; returns its path.

    Raises:
        BundleError: it cannot be written.
    """
    path = receipt_path_beside(output)
    _write(path, receipt.to_bytes())
    return path


def _write(path: Path, data: bytes) -> None:
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise BundleError(f"{path}: cannot write the receipt: {exc.strerror or exc}") from exc



def start_archive(store: ArchiveExport, images: list[ImagePlan],
                   names: dict[str, str] | None = None,
                   differential: Differential | None = None,
                   receipts: bool = True) -> list[Receipt]:
    """Write ``oci-layout``, ``index.json``, the receipt and the manifests at the
    archive's head; returns [the receipt]."""
    entries = list(named_entries(images, names or {}).values())
    made: list[Receipt] = []
    store.start(entries, images,
                annotations=differential.annotations if differential is not None else None,
                omitted=differential.omitted if differential is not None else (),
                receipt=archive_receipt(entries, images, differential, made) if receipts
                else None)
    return made


def merged_entries(existing: list[Descriptor], images: list[ImagePlan],
                   names: dict[str, str]) -> list[Descriptor]:
    """The entries of the new ``index.json``: the bundle's ``existing`` ones, each
    replaced by the exported image of the same name, then the new ones."""
    entries = {(d.annotations.get(REF_NAME) or f"#{i}"): d for i, d in enumerate(existing)}
    for key, entry in named_entries(images, names).items():
        if key.startswith("@") and any(not d.annotations and d.digest == entry.digest
                                       for d in entries.values()):
            continue  # already there without a name
        entries[key] = entry
    return list(entries.values())


def write_index(store: BundleStore, entries: list[Descriptor],
                differential: Differential | None, receipts: bool,
                made: list[Receipt]) -> Receipt | None:
    """Write ``index.json`` (with the base's annotation for a diff) and, in a directory,
    the inside receipt after it (see the module docstring); returns the receipt (an
    archive's was made by :func:`start_archive`), or None when none is written.

    Raises:
        BundleError: a file cannot be written.
    """
    annotations = differential.annotations if differential is not None else None
    if isinstance(store, LayoutStore) and (receipts or has_inside_receipt(store)):
        clear_layout_receipts(store)  # a run killed from here on leaves no stale receipt
        store.write_index(entries, annotations)
        return write_layout_receipt(store, differential)
    store.write_index(entries, annotations)
    return made[-1] if made else None

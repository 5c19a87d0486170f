"""The size limits of a bundle, in one place: every reader enforces them, and every
writer checks them before it writes, so a bundle that export writes is always readable
by verify, list and import.

Sized for bundles of about 100,000 images: ``index.json`` with 100,000 entries of
bundler's (two annotations naming the image) takes about 50 MB.

Spec: image-spec ``image-layout.md`` (``index.json``), ``manifest.md``, ``image-index.md``;
distribution-spec "Pushing manifests" (registries accept manifests of 4 MiB at least).
"""

from __future__ import annotations

__all__ = ["HELD_LIMIT", "INDEX_LIMIT", "LISTED_LIMIT", "MANIFEST_LIMIT", "RECEIPT_LIMIT",
           "ZSTD_RATIO_LIMIT", "describe"]

#: Largest manifest or index blob, in bytes (distribution accepts 4 MiB).
MANIFEST_LIMIT = 8 << 20
#: Largest ``index.json``, in bytes (about 130,000 images as bundler writes them).
INDEX_LIMIT = 64 << 20
#: Most bytes of ``index.json`` and manifests an archive reader (import, verify, list)
#: holds in memory at once, in bytes. Parsed, they take about 3.5 times as much.
HELD_LIMIT = 256 << 20
#: Default cap on the zstd decompression ratio of an archive member (decompressed bytes
#: per compressed byte); ``--max-zstd-ratio`` raises it.
ZSTD_RATIO_LIMIT = 1000
#: Largest bundle receipt (``bundler-receipt.json``, ``NAME.receipt.json``), in bytes:
#: about 400,000 blobs as bundler writes them.
RECEIPT_LIMIT = 64 << 20
#: Most entries read from one paged listing of a registry (the tags of a repository, a
#: catalog, the referrers of a manifest): a registry that pages for ever is refused.
LISTED_LIMIT = 1_000_000


def describe(size: int) -> str:
    """``67108864 bytes (64 MiB)``: a limit as users read it."""
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size} bytes ({size >> shift} {unit})"
    return f"{size} bytes"


def refuse_oversized(where: str, index_size: int, manifest_sizes: list[int], *,
                     archive: bool) -> None:
    """Refuse, before anything is written, a bundle head that readers would refuse.

    Args:
        where: the bundle's name for the message.
        index_size: bytes of ``index.json``.
        manifest_sizes: bytes of each manifest and index the bundle holds.
        archive: an archive (its readers also hold ``index.json`` and every manifest in
            memory at once: :data:`HELD_LIMIT`).

    Raises:
        BundleError: ``index.json`` over :data:`INDEX_LIMIT`, a manifest over
        :data:`MANIFEST_LIMIT`, or (archive) both together over :data:`HELD_LIMIT`.
    """
    from ..errors import BundleError

    if index_size > INDEX_LIMIT:
        raise BundleError(f"{where}: index.json would have {index_size} bytes, more than "
                          f"the limit of {describe(INDEX_LIMIT)} that readers put on it; "
                          "export the images into more than one bundle")
    for size in manifest_sizes:
        if size > MANIFEST_LIMIT:
            raise BundleError(f"{where}: a manifest of {size} bytes is larger than the "
                              f"limit of {describe(MANIFEST_LIMIT)} on a manifest")
    total = index_size + sum(manifest_sizes)
    if archive and total > HELD_LIMIT:
        raise BundleError(f"{where}: index.json and the manifests would take {total} bytes, "
                          f"more than the limit of {describe(HELD_LIMIT)} that archive "
                          "readers hold in memory; export the images into more than one "
                          "bundle")

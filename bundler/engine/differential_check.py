"""``verify`` and ``list`` of differential bundles: the receipt checked against the
bundle, the blobs it leaves to its base expected (not missing), and with ``verify
--base BASE`` the base checked to provide them.

A bundle whose ``index.json`` names a base (``dev.bundler.base``) but has no receipt,
or one of another base or of another ``index.json``, is a problem. A blob missing from
a differential bundle is no problem when its receipt lists it as omitted: it is
"expected from base <id>". Anything else missing stays a problem.

``--base BASE`` (a bundle, or its receipt): BASE's bundle id must equal the diff's
``base.bundleId`` (else a problem naming both ids); each omitted blob must be in BASE
with its digest and size (read through and hashed), or, when BASE is itself a
differential bundle, among BASE's own omitted blobs (expected from BASE's base). A
receipt as BASE is only checked to list each omitted blob with its size.

Spec: ``docs/bundle-format.md`` (receipts, differential bundles).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BundlerError
from ..oci.content import Descriptor
from ..oci.digest import Digest, VerifyingReader
from ..stores.archive import ArchiveReader
from ..stores.archive_files import ArchiveStore, open_archive, reads_by_offsets
from ..stores.layout import LayoutStore
from .archive_check import ArchiveHead, VerifyReport
from .receipts import (
    OmittedBlob,
    Receipt,
    StaleReceiptError,
    check_inside,
    inside_bytes,
    read_inside_receipt,
    read_receipt,
)

__all__ = ["check_base", "inside_receipt", "listed_receipt", "omitted_digests",
           "receipt_check"]


def omitted_digests(receipt: Receipt | None) -> set[Digest]:
    """The digests a receipt leaves to the base (empty for None or a full bundle)."""
    return {Digest.parse(b.digest) for b in receipt.omitted} if receipt is not None else set()


def receipt_check(data: bytes | None, index_json: bytes, where: str,
                  report: VerifyReport) -> set[Digest]:
    """The receipt of an archive read once, checked into ``report`` (a bad one is a
    problem); returns the digests it leaves to the base."""
    try:
        report.receipt = check_inside(data, index_json, where)
    except StaleReceiptError as exc:
        report.warnings.append(f"{exc}; it is ignored")
        return set()
    except BundlerError as exc:
        report.problems.append(str(exc))
        return set()
    return omitted_digests(report.receipt)


def inside_receipt(bundle: str | os.PathLike[str], report: VerifyReport) -> set[Digest]:
    """The receipt of a bundle read in place (a directory, a ``.tar``), checked into
    ``report``; returns the digests it leaves to the base."""
    try:
        found = inside_bytes(bundle)
    except BundlerError:
        return set()  # the bundle cannot be read: the verification says why
    return set() if found is None else receipt_check(*found, report)


def listed_receipt(bundle: str | os.PathLike[str], head: ArchiveHead | None,
                   problems: list[str]) -> Receipt | None:
    """``list``: the bundle's receipt (from an archive's head when read once); a bad
    one is added to ``problems``."""
    try:
        if head is not None:
            return check_inside(head.receipt, head.index_json, head.where)
        return read_inside_receipt(bundle)
    except StaleReceiptError:
        return None
    except BundlerError as exc:
        problems.append(str(exc))
        return None


def check_base(bundle: str | os.PathLike[str], base: str | os.PathLike[str],
               report: VerifyReport) -> None:
    """``verify --base``: whether BASE provides every blob the bundle leaves to it (see
    the module docstring); problems and what was checked go into ``report``."""
    receipt = report.receipt
    if receipt is None or receipt.base is None:
        if not report.problems:
            report.problems.append(f"{bundle} is a full bundle (it names no base); "
                                   "--base has nothing to check")
        return
    try:
        base_receipt = read_receipt(base)
    except BundlerError as exc:
        report.problems.append(f"--base: {exc}")
        return
    if base_receipt.bundle_id != receipt.base.bundle_id:
        report.problems.append(f"--base {base} is bundle {base_receipt.bundle_id}, but "
                               f"{bundle} was exported since bundle {receipt.base.bundle_id}")
        return
    wanted = {Digest.parse(b.digest): b for b in receipt.omitted}
    further = {Digest.parse(b.digest) for b in base_receipt.omitted}
    path = Path(base)
    if path.is_file() and not _is_bundle_file(path):  # a receipt: listed, not read
        found = {d for d, b in wanted.items() if base_receipt.blobs.get(b.digest) == b.size}
        report.base.append(f"{base} is a receipt: it lists {len(found)} of the "
                           f"{len(wanted)} blobs (their bytes were not read)")
        further = set()
    else:
        try:
            found = _read_blobs(path, wanted, report)
        except BundlerError as exc:
            report.problems.append(f"--base {base}: {exc}")
            return
        report.base.append(f"{base} (bundle {base_receipt.bundle_id}) holds {len(found)} of "
                           f"the {len(wanted)} blobs, each checked")
    deeper = [d for d in wanted if d not in found and d in further]
    if deeper and base_receipt.base is not None:
        report.base.append(f"{len(deeper)} expected from base {base_receipt.base.bundle_id} "
                           f"of {base}")
    for digest, blob in wanted.items():
        if digest not in found and digest not in deeper:
            report.problems.append(f"{digest} ({blob.size} bytes, needed by "
                                   f"{', '.join(blob.repositories) or 'the images'}) is not "
                                   f"in base {base}")


def _is_bundle_file(path: Path) -> bool:
    """Whether a file is an archive (not a receipt)."""
    with open(path, "rb") as f:
        head = f.read(16).lstrip()
    return not head.startswith(b"{")


def _read_blobs(path: Path, wanted: dict[Digest, OmittedBlob],
                report: VerifyReport) -> set[Digest]:
    """The wanted blobs BASE holds with their digest and size, each read through and
    hashed (a damaged one is a problem)."""
    found: set[Digest] = set()
    if path.is_dir() or reads_by_offsets(path):
        store = LayoutStore(path) if path.is_dir() else open_archive(path)
        try:
            for digest, blob in wanted.items():
                descriptor = Descriptor(blob.media_type, digest, blob.size)
                try:
                    if not store.check_blob(descriptor):
                        continue
                    with store.open_blob(descriptor) as reader:
                        for _ in reader:
                            pass
                except BundlerError as exc:
                    report.problems.append(f"--base {path}: {exc}")
                    continue
                found.add(digest)
        finally:
            if isinstance(store, ArchiveStore):
                store.close()
        return found
    with ArchiveReader(path) as reader:  # a .tar.zst or its volumes: one pass
        for member in reader:
            blob = wanted.get(member.digest) if member.digest is not None else None
            if blob is None:
                continue
            try:
                for _ in VerifyingReader(member.file, member.digest, blob.size,  # type: ignore[arg-type]
                                         where=f"{path}: {member.digest}"):
                    pass
            except BundlerError as exc:
                report.problems.append(f"--base {path}: {exc}")
                continue
            found.add(member.digest)  # type: ignore[arg-type]
    return found

"""Offline checks of archive bundles: ``verify`` (every member hashed) and the head
read that ``list`` needs (``index.json`` and the manifests, which come first).

Spec: image-spec ``image-layout.md``, ``descriptor.md`` (digests and sizes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..errors import (
    BundleError,
    BundlerError,
    ManifestError,
    SizeMismatchError,
    UnsafeArchiveError,
)
from ..oci.content import (
    Descriptor,
    Index,
    Manifest,
    is_non_distributable,
    parse_layout_index,
    parse_manifest,
)
from ..oci.digest import Digest, VerifyingReader
from ..oci.graph import check_reachable
from ..oci.limits import HELD_LIMIT, INDEX_LIMIT, MANIFEST_LIMIT, RECEIPT_LIMIT, describe
from ..stores.archive import RECEIPT_MEMBER, ArchiveReader, Member
from ..stores.layout import check_layout_file
from ..stores.volumes import checksum_path

__all__ = ["MAX_HELD", "ONE_PASS_ORDER", "VerifyReport", "ArchiveHead", "HeadManifests", "check_held", "read_head",
           "verify_archive"]

#: Cap, in bytes, on index.json and manifests held in memory while reading an archive.
MAX_HELD = HELD_LIMIT
#: What to do with an archive read once (a pipe, a .tar.zst or its volumes) that is not
#: in bundler's order.
ONE_PASS_ORDER = ("read once (from a pipe or zstd-compressed), an archive must be in bundle "
                  "order (oci-layout, index.json, manifests, configs, layers): give it as "
                  "an uncompressed .tar file (or its volumes) instead, which is read in any "
                  "order")


#: (receipt bytes or None, index.json bytes, archive name, report) -> digests left to
#: the base: checks a bundle's receipt while it is verified
ReceiptCheck = Callable[[bytes | None, bytes, str, "VerifyReport"], set[Digest]]


@dataclass
class VerifyReport:
    """``bundler verify``: what was checked and every problem found.

    Attributes:
        images: images checked. blobs: blobs checked. bytes: bytes hashed.
        problems: one human-readable line each; empty means the bundle is sound.
        skipped: digests of non-distributable (foreign) layers the bundle does not
            hold; they were not distributed, so their absence is no problem.
        warnings: things worth knowing that are no problem (e.g. no volume checksum file).
        expected: digests of the blobs a differential bundle leaves to its base (its
            receipt's ``omitted``) and does not hold: no problem either.
        receipt: the bundle's own receipt (None: it has none, or it is unusable, which
            is then a problem).
        base: ``--base``: what was checked of the base (one line each).
    """

    images: int = 0
    blobs: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    skipped: list[Digest] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    expected: list[Digest] = field(default_factory=list)
    receipt: Any = None  # a bundler.engine.receipts.Receipt
    base: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_held(where: str, member: Member, held_bytes: int, max_held: int, *,
               wanted: bool) -> None:
    """Refuse to hold a member in memory that would pass a limit, naming the limit.

    Args:
        where: the archive's name. member: the member to hold.
        held_bytes: bytes held already. max_held: the cap on bytes held.
        wanted: the member is ``oci-layout``, ``index.json`` or a manifest already
            reached from ``index.json`` (else it came before anything named it).

    Raises:
        BundleError: the member is larger than its limit (:data:`INDEX_LIMIT` for
        ``index.json``, :data:`MANIFEST_LIMIT` for the others), or holding it would pass
        ``max_held``; for a member nothing named yet, the message says the archive is
        not in bundle order.
    """
    limit = INDEX_LIMIT if member.name == "index.json" else MANIFEST_LIMIT
    if not wanted and (member.size > limit or held_bytes + member.size > max_held):
        raise BundleError(
            f"{where}: {member.name} ({member.size} bytes) arrived before the manifests "
            f"that name it, and holding it would pass the limit of {describe(limit)} on "
            f"one manifest or of {describe(max_held)} on what a reader keeps in memory; "
            f"{ONE_PASS_ORDER}")
    what = "index.json" if member.name == "index.json" else "a manifest"
    if member.size > limit:
        raise BundleError(f"{where}: {member.name} has {member.size} bytes, more than the "
                          f"limit of {describe(limit)} on {what}")
    if held_bytes + member.size > max_held:
        raise BundleError(f"{where}: {member.name} ({member.size} bytes) would pass the "
                          f"limit of {describe(max_held)} on index.json and manifests held "
                          "in memory")


class HeadManifests:
    """The manifests reachable from root descriptors, parsed as their members arrive.

    Members may come in any order: bytes offered before anything reaches them are held
    (:attr:`held`) and parsed once the roots or a parsed index reach them. :attr:`missing`
    (reachable, not loaded yet) is kept up to date as manifests are parsed, so asking
    what is still to come costs nothing, however many members there are.

    Args:
        on_bad: receives (digest, error) for a manifest that does not parse or whose size
            differs from its descriptor's; when None, the :class:`ManifestError` or
            :class:`SizeMismatchError` is raised.
        check_sizes: compare each manifest's size with its descriptor's (verify does it
            itself, for every descriptor, naming the image).
        where: the archive's name, for messages.

    Attributes:
        manifests: the parsed manifests and indexes, by digest.
        held: offered bytes nothing has reached yet (configs, unordered manifests).
        missing: reachable manifests not loaded yet.
        bad: digests known to be unusable (they are not waited for).
    """

    def __init__(self, on_bad: Callable[[Digest, BundlerError], None] | None = None, *,
                 check_sizes: bool = True, where: str = "") -> None:
        self.manifests: dict[Digest, Manifest | Index] = {}
        self.held: dict[Digest, bytes] = {}
        self.missing: dict[Digest, Descriptor] = {}
        self.bad: set[Digest] = set()
        self.rooted = False
        self._reached: set[Digest] = set()
        self._on_bad = on_bad
        self._check_sizes = check_sizes
        self._where = where

    @property
    def complete(self) -> bool:
        """True once the roots are known and every manifest they reach is loaded."""
        return self.rooted and not self.missing

    def root(self, descriptors: Iterable[Descriptor]) -> None:
        """The descriptors to start from (``index.json`` entries, or the import targets).

        Raises:
            ManifestError: a held manifest does not parse (and ``on_bad`` is None).
        """
        self.rooted = True
        self._reach(list(descriptors))

    def offer(self, digest: Digest, data: bytes) -> None:
        """Bytes of a member (already verified against ``digest``).

        Raises:
            ManifestError: a wanted manifest does not parse (and ``on_bad`` is None).
            SizeMismatchError: its size is not its descriptor's (and ``on_bad`` is None).
        """
        descriptor = self.missing.pop(digest, None)
        if descriptor is None:
            self.held[digest] = data
        else:
            self._reach(self._parse(descriptor, data))

    def mark_bad(self, digest: Digest) -> None:
        """``digest`` cannot be used (its member is damaged): do not wait for it."""
        self.bad.add(digest)
        self.missing.pop(digest, None)
        self.held.pop(digest, None)

    def _reach(self, stack: list[Descriptor]) -> None:
        while stack:
            descriptor = stack.pop()
            digest = descriptor.digest
            if digest in self._reached or digest in self.bad:
                continue
            self._reached.add(digest)
            raw = self.held.pop(digest, None)
            if raw is None:
                self.missing[digest] = descriptor
            else:
                stack.extend(self._parse(descriptor, raw))

    def _parse(self, descriptor: Descriptor, raw: bytes) -> list[Descriptor]:
        """Parse a reached manifest; the children an index reaches next."""
        try:
            if self._check_sizes and len(raw) != descriptor.size:  # as in a directory
                digest = descriptor.digest
                raise SizeMismatchError(
                    digest=str(digest), expected=descriptor.size, actual=len(raw),
                    where=f"{self._where}: blobs/{digest.algorithm}/{digest.hex}")
            item = parse_manifest(raw, descriptor.media_type, digest=descriptor.digest)
        except (ManifestError, SizeMismatchError) as exc:
            if self._on_bad is None:
                if isinstance(exc, ManifestError):  # name the member: import has no image yet
                    digest = descriptor.digest
                    raise ManifestError(f"{self._where}: blobs/{digest.algorithm}/{digest.hex}"
                                        f": {exc}") from exc
                raise
            self.bad.add(descriptor.digest)
            self._on_bad(descriptor.digest, exc)
            return []
        self.manifests[descriptor.digest] = item
        return list(item.manifests) if isinstance(item, Index) else []


@dataclass
class _Scan:
    """What has been read of an archive: index entries, manifests, member facts."""

    where: str
    entries: list[Descriptor] | None = None
    held_bytes: int = 0
    sizes: dict[Digest, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    corrupt: dict[Digest, str] = field(default_factory=dict)
    layout_seen: bool = False
    #: the bytes of index.json and of bundler's receipt (None: not in the archive)
    index_json: bytes | None = None
    receipt: bytes | None = None
    #: the first large member that came before the manifests naming it (import, which
    #: reads an archive in one pass, cannot place it)
    out_of_order: str | None = None
    #: the digests the manifests parsed so far name (the first ``_named_from`` of them)
    named: set[Digest] = field(default_factory=set)
    _named_from: int = 0
    graph: HeadManifests = field(init=False)

    def __post_init__(self) -> None:
        self.graph = HeadManifests(lambda _digest, exc: self.problems.append(str(exc)),
                                   check_sizes=False)

    @property
    def manifests(self) -> dict[Digest, Manifest | Index]:
        return self.graph.manifests

    @property
    def bad(self) -> set[Digest]:
        return self.graph.bad

    def _read_small(self, member: Member) -> bytes:
        check_held(self.where, member, self.held_bytes, MAX_HELD, wanted=True)
        data = member.file.read()
        self.held_bytes += len(data)
        return data

    def feed(self, member: Member, *, hash_all: bool) -> int:
        """Take one member; returns the bytes hashed."""
        if member.name == "oci-layout":
            check_layout_file(self._read_small(member), self.where)
            self.layout_seen = True
            return 0
        if member.name == "index.json":
            self.index_json = self._read_small(member)
            self.entries = parse_layout_index(self.index_json, self.where)
            self.graph.root(self.entries)
            return 0
        digest = member.digest
        if digest is None:  # bundler's receipt
            if member.size > RECEIPT_LIMIT:
                self.problems.append(f"{self.where}/{RECEIPT_MEMBER}: a receipt of "
                                     f"{member.size} bytes is larger than the limit of "
                                     f"{describe(RECEIPT_LIMIT)}")
            else:
                self.receipt = self._read_small(member)
            return 0
        self.sizes[digest] = member.size
        wanted = digest in self.graph.missing
        fits = member.size <= MANIFEST_LIMIT and self.held_bytes + member.size <= MAX_HELD
        if wanted and not fits:
            try:
                check_held(self.where, member, self.held_bytes, MAX_HELD, wanted=True)
            except BundleError as exc:
                self.problems.append(str(exc))
            self.graph.mark_bad(digest)
        elif fits and (wanted or not self.graph.complete):
            # a manifest, or may turn out to be one (archives of other tools)
            data = self._read_small(member)
            if not self._sound(digest, [data], len(data)):
                return 0
            self.graph.offer(digest, data)
            return member.size
        elif fits:  # after the last manifest: nothing more to hold
            if hash_all:
                return member.size if self._sound(digest, member.file, member.size) else 0
            return 0
        if self.out_of_order is None and not self._named(digest):
            self.out_of_order = f"{member.name} ({member.size} bytes)"
        if hash_all:  # streamed: never more than one chunk in memory
            return member.size if self._sound(digest, member.file, member.size) else 0
        return 0

    def _named(self, digest: Digest) -> bool:
        """Whether a manifest read so far names ``digest`` (as a blob or a child)."""
        if digest in self.graph.missing:
            return True
        items = list(self.manifests.values())
        for item in items[self._named_from:]:  # only the manifests parsed since last time
            children = item.manifests if isinstance(item, Index) else item.blobs
            self.named.update(d.digest for d in children)
        self._named_from = len(items)
        return digest in self.named

    def _sound(self, digest: Digest, source: Iterable[bytes] | BinaryIO, size: int) -> bool:
        where = f"blobs/{digest.algorithm}/{digest.hex}"
        try:
            for _ in VerifyingReader(source, digest, size, where=where):
                pass
        except UnsafeArchiveError:
            raise  # the archive, not this blob: nothing more is read
        except BundlerError as exc:
            self.graph.mark_bad(digest)
            self.corrupt[digest] = str(exc)
            return False
        return True

    def all_problems(self) -> list[str]:
        """The problems, then the corrupt members (not tied to an image)."""
        return [*self.problems, *self.corrupt.values()]


def verify_archive(bundle: str | os.PathLike[str], report: VerifyReport, *,
                   max_zstd_ratio: int | None = None,
                   receipt_check: ReceiptCheck | None = None) -> VerifyReport:
    """Check an archive bundle offline, in one pass.

    Every member is hashed against its name; every descriptor reachable from
    ``index.json`` must be present with its size; manifests must parse; split volumes
    must match ``NAME.sha256`` and have no gap in their numbering. Split volumes without
    ``NAME.sha256`` are no problem when every blob checks (each carries its digest): a
    warning is added to ``report.warnings`` instead.

    Args:
        bundle: a ``.tar``/``.tar.zst`` file, volumes (base name or first volume), or ``-``.
        report: the report to fill.
        max_zstd_ratio: decompressed bytes a member may take per compressed byte (None:
            :data:`bundler.limits.ZSTD_RATIO_LIMIT`).
        receipt_check: given the receipt member's bytes (or None), ``index.json``'s
            bytes, the archive's name and the report, returns the digests of the
            blobs the bundle leaves to its base (missing, they are ``expected``, no
            problem); see :mod:`bundler.engine.differential_check`.

    Returns:
        ``report``, with one line per problem.
    """
    try:
        reader = ArchiveReader(bundle, on_volume_problem=report.problems.append,
                               max_zstd_ratio=max_zstd_ratio)
    except BundleError as exc:
        report.problems.append(str(exc))
        return report
    scan = _Scan(reader.where, problems=report.problems)
    with reader:
        if reader.base is not None and not checksum_path(reader.base).exists():
            report.warnings.append(
                f"{reader.where}: no checksum file {checksum_path(reader.base).name}; the "
                "volumes were checked through the digests of the blobs they hold")
        try:
            for member in reader:
                report.bytes += scan.feed(member, hash_all=True)
        except UnsafeArchiveError as exc:  # the rest of the archive is not looked at
            report.problems.extend([*scan.corrupt.values(), str(exc)])
            return report
        except BundlerError as exc:
            report.problems.append(str(exc))
            reader.drain_volumes()
            if scan.entries is None:  # said why index.json could not be read
                report.problems.extend(scan.corrupt.values())
                return report
    if scan.entries is None:
        report.problems.extend([*scan.corrupt.values(),
                                f"{scan.where}: no index.json in the archive"])
        return report
    if not scan.layout_seen:
        report.problems.append(f"{scan.where}: no oci-layout in the archive (an OCI image "
                               "layout must have one)")
    if scan.out_of_order is not None:
        report.warnings.append(
            f"{scan.where}: {scan.out_of_order} comes before the manifests that name it; "
            f"{ONE_PASS_ORDER}")
    expected: set[Digest] = set()
    if receipt_check is not None and scan.index_json is not None:
        expected = receipt_check(scan.receipt, scan.index_json, scan.where, report)
    bad: dict[Digest, str] = {}  # digest -> its problem, named below by every image

    def visit(name: str, descriptor: Descriptor, is_entry: bool) -> Iterable[Descriptor]:
        size = scan.sizes.get(descriptor.digest)
        if size is None:
            if descriptor.digest in expected and not is_entry:
                report.expected.append(descriptor.digest)
            elif is_non_distributable(descriptor):
                report.skipped.append(descriptor.digest)
            else:
                bad[descriptor.digest] = f"{descriptor.digest} is missing from the archive"
            return ()
        if size != descriptor.size:
            bad[descriptor.digest] = (f"{descriptor.digest} has {size} bytes in the archive, "
                                      f"the descriptor says {descriptor.size}")
            return ()
        if descriptor.digest in scan.bad:
            corrupt = scan.corrupt.pop(descriptor.digest, None)
            if corrupt is not None:
                bad[descriptor.digest] = corrupt
            return ()
        item = scan.manifests.get(descriptor.digest)
        if item is None and (descriptor.is_manifest or is_entry):
            bad[descriptor.digest] = f"manifest {descriptor.digest} could not be read"
            return ()
        report.blobs += 1
        if item is None:
            return ()
        return item.manifests if isinstance(item, Index) else item.blobs

    report.images, problems = check_reachable(scan.entries, visit, bad)
    report.problems.extend(problems)
    report.problems.extend(scan.corrupt.values())  # members no image refers to
    return report


@dataclass
class ArchiveHead:
    """``index.json`` and the manifests of an archive, read from its head (for ``list``)."""

    where: str
    entries: list[Descriptor]
    manifests: dict[Digest, Manifest | Index]
    #: the bytes of index.json and of bundler's receipt (None: the archive has none)
    index_json: bytes = b""
    receipt: bytes | None = None

    def read_index(self) -> list[Descriptor]:
        return list(self.entries)

    def get_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        item = self.manifests.get(descriptor.digest)
        if item is None:
            raise BundleError(f"{self.where}: manifest {descriptor.digest} is missing from "
                              "the archive")
        return item


def read_head(bundle: str | os.PathLike[str], *,
              max_zstd_ratio: int | None = None) -> ArchiveHead:
    """Read an archive up to its last manifest (the rest is not decoded).

    Args:
        bundle: a ``.tar``/``.tar.zst`` file, volumes, or ``-``.
        max_zstd_ratio: see :class:`~bundler.stores.archive.ArchiveReader`.

    Raises:
        BundleError: no index.json, a manifest missing, a damaged archive.
        UnsafeArchiveError: an unsafe member, or a decompression bomb.
    """
    with ArchiveReader(bundle, max_zstd_ratio=max_zstd_ratio) as reader:
        scan = _Scan(reader.where)
        for member in reader:
            scan.feed(member, hash_all=False)
            if scan.graph.complete:
                break
        if scan.entries is None:
            raise BundleError(f"{reader.where}: the archive has no index.json")
        problems = scan.all_problems()
        if problems:
            raise BundleError(f"{reader.where}: {problems[0]}")
        missing = scan.graph.missing
        if missing:
            raise BundleError(f"{reader.where}: manifest {next(iter(missing))} is missing "
                              "from the archive")
        return ArchiveHead(reader.where, scan.entries, scan.manifests,
                           scan.index_json or b"", scan.receipt)


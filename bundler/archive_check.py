"""Offline checks of archive bundles: ``verify`` (every member hashed) and the head
read that ``list`` needs (``index.json`` and the manifests, which come first).

Spec: image-spec ``image-layout.md``, ``descriptor.md`` (digests and sizes).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from .content import OCI_INDEX, Descriptor, Index, Manifest, parse_manifest
from .digest import Digest, VerifyingReader
from .errors import BundleError, BundlerError, ManifestError, UnsafeArchiveError
from .naming import entry_name
from .registry import MANIFEST_LIMIT
from .stores.archive import ArchiveReader, Member
from .stores.volumes import checksum_path

if TYPE_CHECKING:
    from .bundle import VerifyReport

__all__ = ["ArchiveHead", "read_head", "verify_archive"]

#: Cap, in bytes, on index.json and manifests held in memory while reading an archive.
MAX_HELD = 64 << 20


@dataclass
class _Scan:
    """What has been read of an archive: index entries, manifests, member facts."""

    where: str
    entries: list[Descriptor] | None = None
    manifests: dict[Digest, Manifest | Index] = field(default_factory=dict)
    held: dict[Digest, bytes] = field(default_factory=dict)
    held_bytes: int = 0
    sizes: dict[Digest, int] = field(default_factory=dict)
    bad: set[Digest] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def wanted(self) -> dict[Digest, Descriptor]:
        """Manifests reachable from index.json that are not loaded yet (held ones parsed)."""
        missing: dict[Digest, Descriptor] = {}
        stack = list(self.entries or ())
        seen: set[Digest] = set()
        while stack:
            descriptor = stack.pop()
            if descriptor.digest in seen:
                continue
            seen.add(descriptor.digest)
            item = self.manifests.get(descriptor.digest)
            if item is None and descriptor.digest in self.held:
                raw = self.held.pop(descriptor.digest)
                try:
                    item = self.manifests[descriptor.digest] = parse_manifest(
                        raw, descriptor.media_type, digest=descriptor.digest)
                except ManifestError as exc:
                    self.bad.add(descriptor.digest)
                    self.problems.append(str(exc))
                    continue
            if item is None and descriptor.digest not in self.bad:
                missing[descriptor.digest] = descriptor
            elif isinstance(item, Index):
                stack.extend(item.manifests)
        return missing

    def _read_small(self, member: Member) -> bytes:
        if member.size > MANIFEST_LIMIT or self.held_bytes + member.size > MAX_HELD:
            raise BundleError(f"{self.where}: {member.name} ({member.size} bytes) would pass "
                              f"the {MAX_HELD}-byte limit on manifests held in memory")
        data = member.file.read()
        self.held_bytes += len(data)
        return data

    def feed(self, member: Member, *, hash_all: bool) -> int:
        """Take one member; returns the bytes hashed."""
        if member.name == "oci-layout":
            self._read_small(member)
            return 0
        if member.name == "index.json":
            index = parse_manifest(self._read_small(member), OCI_INDEX)
            if not isinstance(index, Index):
                raise BundleError(f"{self.where}: index.json is not an image index")
            self.entries = list(index.manifests)
            return 0
        digest = member.digest
        assert digest is not None
        self.sizes[digest] = member.size
        fits = member.size <= MANIFEST_LIMIT and self.held_bytes + member.size <= MAX_HELD
        wanted = digest in self.wanted()
        if fits:  # a manifest, or may turn out to be one (archives of other tools)
            data = self._read_small(member)
            if self._sound(digest, [data]):
                self.held[digest] = data
                if wanted:
                    self.wanted()
            return member.size
        if hash_all:
            self._sound(digest, member.file)
            return member.size
        return 0

    def _sound(self, digest: Digest, source: Iterable[bytes] | BinaryIO) -> bool:
        where = f"blobs/{digest.algorithm}/{digest.hex}"
        try:
            VerifyingReader(source, digest, None, where=where).read()
        except BundlerError as exc:
            self.bad.add(digest)
            self.problems.append(str(exc))
            return False
        return True


def verify_archive(bundle: str | os.PathLike[str], report: VerifyReport) -> VerifyReport:
    """Check an archive bundle offline, in one pass.

    Every member is hashed against its name; every descriptor reachable from
    ``index.json`` must be present with its size; manifests must parse; split volumes
    must match ``NAME.sha256``.

    Args:
        bundle: a ``.tar``/``.tar.zst`` file, volumes (base name or first volume), or ``-``.
        report: the report to fill.

    Returns:
        ``report``, with one line per problem.
    """
    try:
        reader = ArchiveReader(bundle, on_volume_problem=report.problems.append)
    except BundleError as exc:
        report.problems.append(str(exc))
        return report
    scan = _Scan(reader.where, problems=report.problems)
    with reader:
        if reader.volumes and not checksum_path(reader.volumes[0].with_suffix("")).exists():
            report.problems.append(f"{reader.where}: no checksum file "
                                   f"{checksum_path(reader.volumes[0].with_suffix('')).name}; "
                                   "the volumes cannot be checked")
        try:
            for member in reader:
                report.bytes += scan.feed(member, hash_all=True)
        except UnsafeArchiveError as exc:  # the rest of the archive is not looked at
            report.problems.append(str(exc))
            return report
        except BundlerError as exc:
            report.problems.append(str(exc))
            reader.drain_volumes()
    if scan.entries is None:
        report.problems.append(f"{scan.where}: no index.json in the archive")
        return report
    checked: set[Digest] = set()
    for position, entry in enumerate(scan.entries):
        name = entry_name(entry) or f"#{position} ({entry.digest})"
        report.images += 1
        stack = [entry]
        while stack:
            descriptor = stack.pop()
            if descriptor.digest in checked:
                continue
            checked.add(descriptor.digest)
            size = scan.sizes.get(descriptor.digest)
            if size is None:
                report.problems.append(f"{name}: {descriptor.digest} is missing from the "
                                       "archive")
                continue
            if size != descriptor.size:
                report.problems.append(f"{name}: {descriptor.digest} has {size} bytes in the "
                                       f"archive, the descriptor says {descriptor.size}")
                continue
            if descriptor.digest in scan.bad:
                continue
            item = scan.manifests.get(descriptor.digest)
            if item is None and (descriptor.is_manifest or descriptor is entry):
                report.problems.append(f"{name}: manifest {descriptor.digest} could not be "
                                       "read")
                continue
            if item is not None:
                stack.extend(item.manifests if isinstance(item, Index) else item.blobs)
            report.blobs += 1
    return report


@dataclass
class ArchiveHead:
    """``index.json`` and the manifests of an archive, read from its head (for ``list``)."""

    where: str
    entries: list[Descriptor]
    manifests: dict[Digest, Manifest | Index]

    def read_index(self) -> list[Descriptor]:
        return list(self.entries)

    def load_manifest(self, descriptor: Descriptor) -> Manifest | Index:
        item = self.manifests.get(descriptor.digest)
        if item is None:
            raise BundleError(f"{self.where}: manifest {descriptor.digest} is missing from "
                              "the archive")
        return item


def read_head(bundle: str | os.PathLike[str]) -> ArchiveHead:
    """Read an archive up to its last manifest (the rest is not decoded).

    Raises:
        BundleError: no index.json, a manifest missing, a damaged archive.
        UnsafeArchiveError: an unsafe member.
    """
    with ArchiveReader(bundle) as reader:
        scan = _Scan(reader.where)
        for member in reader:
            scan.feed(member, hash_all=False)
            if scan.entries is not None and not scan.wanted():
                break
        if scan.entries is None:
            raise BundleError(f"{reader.where}: the archive has no index.json")
        if scan.problems:
            raise BundleError(f"{reader.where}: {scan.problems[0]}")
        missing = scan.wanted()
        if missing:
            raise BundleError(f"{reader.where}: manifest {next(iter(missing))} is missing "
                              "from the archive")
        return ArchiveHead(reader.where, scan.entries, scan.manifests)


"""Import and verify of archive files read by offsets, in any member order
(:mod:`bundler.stores.archive_files`): the same engine as a layout directory's
(:func:`bundler.engine.importing.push_images`), over the archive as a random-access store.

Spec: image-spec ``image-layout.md``, ``descriptor.md``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BundleError, BundlerError
from ..events import Reporter
from ..oci.content import Descriptor, Index, is_non_distributable
from ..oci.digest import Digest
from ..oci.graph import check_reachable, walk
from ..registry.client import TransportOptions
from ..stores.archive_files import is_plain_tar_file, open_archive
from ..stores.volumes import checksum_path, find_volumes
from .archive_check import VerifyReport
from .importing import ImportResult, push_images
from .naming import resolve_targets
from .referrer_push import push_with_referrers

if TYPE_CHECKING:
    from .chain_import import ImportChain

__all__ = ["import_file", "verify_file"]


def import_file(
    path: str | os.PathLike[str],
    *,
    to: str | None = None,
    mapping: list[tuple[str, str]] | None = None,
    options: TransportOptions | None = None,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    keep_going: bool = False,
    chain: ImportChain | None = None,
) -> ImportResult:
    """Push the images of an archive file (see :func:`bundler.import_bundle`); a
    differential bundle's omitted blobs are checked first (``chain``).

    Raises:
        UnsafeArchiveError, BundleError: the archive cannot be read (before anything is
        sent). MappingError, TransferError, PartialFailureError: as
        :func:`~bundler.engine.importing.push_images`.
    """
    with open_archive(path) as store:
        targets = resolve_targets(store.read_index(), to=to, mapping=mapping)
        if not keep_going:  # a bad manifest is named as the archive's, nothing sent
            for target in targets:
                walk(target.descriptor, store.get_manifest, name=target.name)
        if chain is not None:  # a differential bundle: its base checked, nothing sent
            chain.take_store(path, store)
            chain.check_store(store, store.read_index(), to=to, mapping=mapping,
                              options=options, jobs=jobs, stop=stop)
        result = push_with_referrers(  # referrers after their subjects
            store, store.read_index(), to=to, mapping=mapping, options=options,
            push=lambda chosen: push_images(store, chosen, options=options, jobs=jobs,
                                            reporter=reporter, stop=stop,
                                            keep_going=keep_going, chain=chain))
        result.notes.extend(getattr(store, "notes", ()))
        return result


def verify_file(path: str | os.PathLike[str], report: VerifyReport,
                expected: Collection[Digest] = ()) -> VerifyReport:
    """Check an archive file offline: every descriptor reachable from its images is a
    member of its size and digest, every manifest parses. A blob member no manifest
    names is not checked: it is ignored, with a warning.

    Args:
        path: a plain tar file, or an uncompressed volume set.
        report: the report to fill.
        expected: blobs a differential bundle leaves to its base: missing, they go in
            ``report.expected``, no problem.

    Returns:
        ``report``, one line per problem.
    """
    try:
        store = open_archive(path, on_volume_problem=report.problems.append)
    except BundleError as exc:
        report.problems.append(str(exc))
        return report
    found = None if is_plain_tar_file(path) else find_volumes(Path(path))
    if found is not None and not checksum_path(found[0]).exists():
        report.warnings.append(
            f"{found[0]}: no checksum file {checksum_path(found[0]).name}; the volumes "
            "were checked through the digests of the blobs they hold")
    with store:
        report.warnings.extend(getattr(store, "notes", ()))
        bad: dict[Digest, str] = {}
        reached: set[Digest] = set()

        def visit(name: str, descriptor: Descriptor, is_entry: bool) -> Iterable[Descriptor]:
            reached.add(descriptor.digest)
            under: Iterable[Descriptor] = ()
            size = store.blob_size(descriptor.digest)
            if size is None:
                if descriptor.digest in expected and not is_entry:
                    report.expected.append(descriptor.digest)
                elif is_non_distributable(descriptor) and not is_entry:
                    report.skipped.append(descriptor.digest)
                else:
                    bad[descriptor.digest] = f"{descriptor.digest} is missing from the archive"
                return ()
            if size != descriptor.size:
                bad[descriptor.digest] = (f"{descriptor.digest} has {size} bytes in the "
                                          f"archive, the descriptor says {descriptor.size}")
                return ()
            try:
                if descriptor.is_manifest or is_entry:
                    item = store.get_manifest(descriptor)
                    under = item.manifests if isinstance(item, Index) else item.blobs
                else:
                    with store.open_blob(descriptor) as reader:
                        for _ in reader:
                            pass
                report.blobs += 1
                report.bytes += descriptor.size
            except BundlerError as exc:
                bad[descriptor.digest] = str(exc)
            return under

        report.images, problems = check_reachable(store.read_index(), visit, bad)
        report.problems.extend(problems)
        for name in store.blob_names():
            digest = Digest.parse(name[len("blobs/"):].replace("/", ":", 1))
            if digest not in reached:
                report.warnings.append(f"{store.where}: {name} is named by no manifest; "
                                       "it is ignored")
    return report

"""``bundler verify`` of a bundle directory: every descriptor reachable from
``index.json`` read and hashed (a blob shared by several images once), each manifest
parsed, each referrer's subject among the images.

A non-distributable layer the bundle does not hold is ``skipped``; a blob a
differential bundle leaves to its base (``expected``, from its receipt) is no problem
either. Each problem names every image that needs the content.

Spec: image-spec ``image-layout.md``, ``descriptor.md``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from ..errors import BundleError, BundlerError, IntegrityError
from ..oci.content import Descriptor, Index
from ..oci.digest import Digest
from ..oci.graph import check_reachable
from ..stores.layout import LayoutStore
from .archive_check import VerifyReport
from .importing import not_distributed
from .referrer_bundle import missing_subjects

__all__ = ["verify_layout"]


def verify_layout(store: LayoutStore, entries: list[Descriptor], report: VerifyReport,
                  expected: Collection[Digest] = ()) -> VerifyReport:
    """Check an open bundle directory (see the module docstring).

    Args:
        store: the bundle. entries: its ``index.json`` descriptors.
        report: the report to fill.
        expected: blobs the bundle leaves to its base: missing, they go in
            ``report.expected``.

    Returns:
        ``report``, one line per problem.
    """
    bad: dict[Digest, str] = {}  # digest -> its problem, named below by every image
    reached: set[Digest] = set()  # the manifests of the images: a subject must be one

    def visit(name: str, descriptor: Descriptor, is_entry: bool) -> Iterable[Descriptor]:
        under: Iterable[Descriptor] = ()
        try:
            if descriptor.is_manifest or is_entry:
                item = store.get_manifest(descriptor)
                under = item.manifests if isinstance(item, Index) else item.blobs
                reached.add(descriptor.digest)
            elif not_distributed(store, descriptor):
                report.skipped.append(descriptor.digest)
                return ()
            elif descriptor.digest in expected and not store.has_blob(descriptor.digest):
                report.expected.append(descriptor.digest)
                return ()
            else:
                with store.open_blob(descriptor) as reader:
                    for _ in reader:
                        pass
            report.blobs += 1
            report.bytes += descriptor.size
        except IntegrityError as exc:  # export reuses blobs by size: it must go first
            bad[descriptor.digest] = (
                f"{exc}; delete {store.blob_path(descriptor.digest)} and run the export "
                "again to fetch it anew")
        except BundleError as exc:
            bad[descriptor.digest] = str(exc)
        except BundlerError as exc:
            bad[descriptor.digest] = f"{descriptor.digest}: {exc}"
        return under

    report.images, problems = check_reachable(entries, visit, bad)
    report.problems.extend(problems)
    report.problems.extend(missing_subjects(entries, reached.__contains__))
    return report

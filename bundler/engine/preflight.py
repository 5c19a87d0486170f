"""The check a differential import makes before it pushes anything: is every blob its
bundle omits available to every destination repository that needs it?

A differential bundle (``export --since``) holds every manifest of its images but only
the blobs its base does not hold; its receipt lists the others (``omitted``). For each
omitted blob that a repository still needs (its image is not complete there), the blob
must be, in this order:

1. present: the repository has it (``HEAD``; a repository the registry does not know
   has nothing, and is not asked);
2. mountable: another repository of the same destination registry has it: one that
   holds a complete image of this import, one where it was found present, or another
   destination repository of this import (asked with ``HEAD``); the ladder mounts it;
3. from the base: the local base bundle given with ``--base`` holds it; the ladder
   uploads it from there, verified while streaming;
4. else missing: the import stops before its first push, naming the base, how many
   blobs are missing and the first few with the images that need them.

The checks fold into the plan of the push: the ``HEAD`` answers are kept on the
:class:`~bundler.engine.pushplan.BlobPush` (``present``, ``headed``, ``mount_from``),
so that the ladder does not ask again.

Spec: distribution-spec "Checking if content exists", "Mounting a blob from another
repository".
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from ..errors import BundleError, BundlerError
from ..oci.content import Descriptor
from ..oci.digest import Digest, VerifyingReader
from ..oci.graph import ImagePlan
from ..stores import Store
from .naming import Target
from .parallel import ClientPool, run_parallel
from .pushplan import BlobPush

__all__ = ["FIRST_FEW", "MISSING", "ChainReport", "MissingBlob", "MissingBlobsError", "OmittedSource",
           "WrongBaseError", "check_omitted"]

#: How many missing blobs an error names (the count says how many there are).
FIRST_FEW = 5
#: How many images an error names per missing blob.
FEW_IMAGES = 3

PRESENT, MOUNT, BASE, MISSING = "present", "mountable", "from base", "missing"
_RANK = {PRESENT: 0, MOUNT: 1, BASE: 2, MISSING: 3}


class MissingBlobsError(BundlerError):
    """A differential bundle whose omitted blobs some destination repositories cannot
    get (not there, not mountable, not in ``--base``); nothing was pushed (exit 1).

    Attributes:
        report: the :class:`ChainReport` (``missing`` lists them).
    """

    def __init__(self, where: str, report: ChainReport) -> None:
        self.report = report
        missing = report.missing
        shown = []
        for blob in missing[:FIRST_FEW]:
            images = ", ".join(blob.images[:FEW_IMAGES]) + (
                f" and {len(blob.images) - FEW_IMAGES} more" if len(blob.images) > FEW_IMAGES
                else "")
            shown.append(f"{blob.digest} ({blob.size} bytes, needed by {images})")
        more = f"; and {len(missing) - FIRST_FEW} more" if len(missing) > FIRST_FEW else ""
        blobs = "blob is" if len(missing) == 1 else "blobs are"
        super().__init__(
            f"{where}: differential bundle on base {report.base_id}: {len(missing)} omitted "
            f"{blobs} in no destination repository, mountable from none, and not in a "
            f"base bundle: {'; '.join(shown)}{more}; nothing was pushed; import base "
            f"{report.base_id} first, or give --base BUNDLE")


class WrongBaseError(BundlerError):
    """``--base`` names another bundle than the base the differential bundle names
    (a usage error, exit 2, before anything moves)."""


@dataclass
class MissingBlob:
    """An omitted blob some destination repository cannot get.

    Attributes:
        digest: the blob. size: its bytes.
        images: the names of the images that need it (as the bundle names them).
    """

    digest: Digest
    size: int
    images: list[str]


@dataclass
class ChainReport:
    """What a differential import found about its base (and the dry run shows).

    Attributes:
        base_id: the base's bundle id. base_created: when the base was exported.
        receipt: the registry receipt of the base asked for (``REG/REPO:TAG``), or "".
        imported: when the base was imported, by that receipt; None when not found.
        omitted: omitted blobs the images of this import need.
        present: of those, in every destination repository that needs them (an
            image complete there counts: it holds its blobs).
        mountable: to mount from another repository of the registry.
        from_base: to upload from the ``--base`` bundle.
        missing: the others (the import refuses them).
        base_bundle: the ``--base`` bundle given, or "".
        receipt_error: why the registry receipt could not be read (the registry
            answered an error other than 404), or "".
    """

    base_id: str
    base_created: str = ""
    receipt: str = ""
    imported: str | None = None
    omitted: int = 0
    present: int = 0
    mountable: int = 0
    from_base: int = 0
    missing: list[MissingBlob] = field(default_factory=list)
    base_bundle: str = ""
    receipt_error: str = ""

    @property
    def complete(self) -> bool:
        """Whether every omitted blob is available (the chain holds)."""
        return not self.missing

    def imported_line(self) -> str:
        """``base ID was imported on DATE`` or why it cannot be told."""
        if self.imported is not None:
            return f"base {self.base_id} was imported on {self.imported or '(no date)'}" + (
                f" (receipt {self.receipt})" if self.receipt else "")
        if not self.receipt:
            return f"base {self.base_id}: its registry receipt was not looked for"
        if self.receipt_error:
            return (f"base {self.base_id}: its registry receipt {self.receipt} could not be "
                    f"read ({self.receipt_error}); the omitted blobs were checked all the "
                    "same")
        return (f"base {self.base_id}: no registry receipt ({self.receipt} not found); "
                "the omitted blobs were checked all the same")

    def blobs_line(self) -> str:
        """``omitted blobs: N (P present, M mountable, B from --base, X missing)``."""
        return (f"omitted blobs: {self.omitted} ({self.present} present, {self.mountable} "
                f"mountable, {self.from_base} from --base, {len(self.missing)} missing)")

    def to_json(self) -> dict[str, object]:
        """The report as JSON values (``--dry-run --json``)."""
        return {
            "bundleId": self.base_id, "created": self.base_created,
            "receipt": self.receipt or None, "receiptFound": self.imported is not None,
            "receiptError": self.receipt_error or None,
            "imported": self.imported, "baseBundle": self.base_bundle or None,
            "omitted": self.omitted, "present": self.present, "mountable": self.mountable,
            "fromBase": self.from_base, "missing": len(self.missing),
            "missingBlobs": [{"digest": str(b.digest), "size": b.size, "images": b.images}
                             for b in self.missing],
            "complete": self.complete,
        }


class OmittedSource:
    """The source of an omitted blob that the base bundle does not hold: it is mounted
    or present; should the mount be refused, there are no bytes to upload instead."""

    def __init__(self, where: str, base_id: str) -> None:
        self.where, self.base_id = where, base_id

    def open_blob(self, descriptor: Descriptor) -> AbstractContextManager[VerifyingReader]:
        """Raises BundleError: the bundle omits the blob (it is its base's)."""
        raise BundleError(f"{self.where}: blob {descriptor.digest} is omitted from this "
                          f"differential bundle (it is base {self.base_id}'s) and the "
                          "registry refused to mount it; give --base BUNDLE to upload it")


def check_omitted(
    blobs: Iterable[BlobPush],
    omitted: Collection[Digest],
    clients: ClientPool,
    *,
    headed: bool,
    base: Store | None,
    candidates: Mapping[str, Sequence[str]],
    jobs: int,
    stop: threading.Event | None = None,
) -> dict[tuple[str, Digest], str]:
    """Decide how each omitted blob reaches each repository that needs it (module
    docstring); set ``present``, ``headed`` and ``mount_from`` on the blob pushes.

    Args:
        blobs: the blob pushes of the plan (one per registry and digest); those not in
            ``omitted`` are left alone.
        omitted: the digests the bundle omits.
        clients: the destination registries' clients.
        headed: ``present`` was asked already (an archive read once asks every blob).
        base: the ``--base`` bundle, or None.
        candidates: per registry, other destination repositories that may hold a blob
            (asked with ``HEAD`` only when nothing else is known to).
        jobs: concurrent requests. stop: set to cancel.

    Returns:
        (registry, digest) -> ``present``, ``mountable``, ``from base`` or ``missing``.

    Raises:
        RegistryError: a ``HEAD`` failed (the first failure).
    """
    wanted = [b for b in blobs if b.digest in omitted]
    found: dict[tuple[str, Digest], str] = {}
    lock = threading.Lock()

    def decide(blob: BlobPush) -> None:
        client = clients.get(blob.registry)
        if not headed and not blob.headed:
            blob.present = [r for r in blob.repositories
                            if r not in blob.new and client.has_blob(r, blob.digest)]
        blob.headed = True
        if not blob.missing:
            state = PRESENT
        elif blob.present or blob.mount_from is not None:
            blob.mount_from = blob.mount_from or blob.present[0]
            state = MOUNT
        else:
            state = _elsewhere(blob, clients, candidates.get(blob.registry, ()), base)
        with lock:
            found[(blob.registry, blob.digest)] = state

    failures = run_parallel(wanted, decide, jobs=jobs, stop=stop)
    if failures:
        raise next(iter(failures.values()))
    return found


def _elsewhere(blob: BlobPush, clients: ClientPool, candidates: Sequence[str],
               base: Store | None) -> str:
    """A blob no repository of its own has: another destination repository that holds
    it (set as ``mount_from``), else the base bundle, else missing."""
    client = clients.get(blob.registry)
    for repository in candidates:
        if repository not in blob.repositories and client.has_blob(repository, blob.digest):
            blob.mount_from = repository
            return MOUNT
    if base is not None and base.has_blob(blob.digest):
        return BASE
    return MISSING


def fill_report(report: ChainReport, states: Mapping[tuple[str, Digest], str],
                omitted: Mapping[Digest, int], targets: Sequence[Target],
                plans: Mapping[Target, ImagePlan]) -> ChainReport:
    """Count the omitted blobs the images need by how they are available (the worst
    state over the registries), and list the missing ones with their images.

    Args:
        report: filled in place (and returned).
        states: from :func:`check_omitted`.
        omitted: the omitted digests with their sizes (bytes).
        targets, plans: every image of the import and its plan.
    """
    needed: dict[Digest, list[Target]] = {}
    for target in targets:
        for digest in plans[target].blobs if target in plans else ():
            if digest in omitted:
                needed.setdefault(digest, []).append(target)
    worst: dict[Digest, str] = {digest: PRESENT for digest in needed}
    for (_registry, digest), state in states.items():
        if digest in worst and _RANK[state] > _RANK[worst[digest]]:
            worst[digest] = state
    report.omitted = len(worst)
    report.present = sum(1 for s in worst.values() if s == PRESENT)
    report.mountable = sum(1 for s in worst.values() if s == MOUNT)
    report.from_base = sum(1 for s in worst.values() if s == BASE)
    report.missing = []
    for digest in sorted(d for d, s in worst.items() if s == MISSING):
        registries = {r for (r, d), s in states.items() if d == digest and s == MISSING}
        images = [t.name for t in needed[digest] if t.destination.registry in registries]
        report.missing.append(MissingBlob(digest, omitted[digest], images))
    return report

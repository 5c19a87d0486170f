"""The receipt side of one import: the bundle's receipt, its base, the check of a
differential bundle before the first push, and the registry receipt after the last tag.

:class:`ImportChain` goes with every import (a directory, a ``.tar``, a ``.tar.zst``,
volumes, ``-``):

1. :meth:`ImportChain.open` opens ``--base``, and the driver hands over the bundle's
   receipt (:meth:`ImportChain.take_store`; an archive read once,
   :meth:`ImportChain.take_receipt`): ``--base`` is a directory or a
   plain ``.tar`` (read at random), whose bundle id must be the base the receipt names
   (else :class:`~bundler.engine.preflight.WrongBaseError`, before anything moves);
2. for a differential bundle, :meth:`check` (a driver that has planned already: an
   archive read once) or :meth:`check_store` (a random-access store, before the rounds
   of :func:`~bundler.engine.referrer_push.push_with_referrers`) reads the base's
   registry receipt and decides how each omitted blob reaches each repository
   (:mod:`bundler.engine.preflight`), or refuses the import with nothing pushed;
3. :meth:`apply` hands those decisions to the run (no ``HEAD`` is asked twice), and
   :meth:`source` says where an omitted blob's bytes come from (the base);
4. :meth:`finish`, once every image is tagged, pushes the registry receipt
   (:mod:`bundler.engine.registry_receipt`).

Spec: distribution-spec "Checking if content exists", "Mounting a blob from another
repository", "Pushing manifests".
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from ..errors import BundleError, BundlerError
from ..events import NullReporter
from ..oci.content import Descriptor, Index, Manifest, parse_layout_index
from ..oci.digest import Digest
from ..oci.graph import ImagePlan, walk
from ..oci.limits import INDEX_LIMIT, RECEIPT_LIMIT
from ..registry.client import TransportOptions
from ..stores import Store
from ..stores.archive import RECEIPT_MEMBER, is_archive
from ..stores.archive_files import open_archive, reads_at_random
from ..stores.contained import read_inside
from ..stores.docker_archive import DockerArchive
from ..stores.layout import LayoutStore
from .importing import push_images
from .ladder import BlobSource, ImportResult
from .naming import Target, resolve_targets
from .parallel import ClientPool
from .preflight import (
    MISSING,
    ChainReport,
    MissingBlobsError,
    OmittedSource,
    WrongBaseError,
    check_omitted,
    fill_report,
)
from .pushplan import BlobPush, PlanMemo, new_repositories, plan_push
from .receipts import (
    Receipt,
    ReceiptError,
    base_annotation,
    bundle_id_of,
    compute_receipt,
    now,
    read_receipt,
)
from .referrer_push import place_referrers, referrer_levels
from .referrers import subject_of
from .registry_receipt import (
    ReceiptLocation,
    base_repositories,
    found_receipt,
    push_receipt,
    receipt_location,
    receipt_tag,
)

__all__ = ["ImportChain", "checked_receipt"]


class ImportChain:
    """The receipt side of one import (module docstring).

    Attributes:
        where: the bundle's name, for messages.
        receipt: the bundle's receipt (None until an archive read from ``-`` gives it).
        location: where registry receipts live in the destination.
        push: push this import's registry receipt (False: ``--no-receipt``).
        to: ``--to REGISTRY[/PREFIX]`` (None with ``--mapping``): where the base's
            images went, as its registry receipt names them (mount sources).
        base: the ``--base`` bundle opened, or None; base_path: as given.
        report: what the check found (differential bundles), or None.
        memo: the plan's answers kept for the push (random-access stores).
    """

    def __init__(self, where: str, location: ReceiptLocation, *, push: bool,
                 base: Store | None = None, base_path: str = "",
                 base_id: str | None = None, to: str | None = None) -> None:
        self.where, self.location, self.push, self.to = where, location, push, to
        self.base, self.base_path, self.base_id = base, base_path, base_id
        self.receipt: Receipt | None = None
        self.report: ChainReport | None = None
        self.memo = PlanMemo()
        self._facts: dict[tuple[str, Digest], BlobPush] = {}

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, bundle: str | os.PathLike[str], *, to: str | None,
             mapping: list[tuple[str, str]] | None, base: str | os.PathLike[str] | None,
             receipt_repository: str | None = None, push: bool = True) -> ImportChain:
        """Open the base (the driver hands over the bundle's receipt later).

        Raises:
            MappingError: a bad ``--receipt-repository`` (or no destination).
            WrongBaseError: ``--base`` cannot be read at random (a ``.tar.zst``), is
            not a bundle, has a bad receipt, or is not the base the bundle names.
        """
        location = receipt_location(to=to, mapping=mapping, override=receipt_repository)
        base_store, base_id = _open_base(base) if base is not None else (None, None)
        return cls(str(bundle), location, push=push, base=base_store,
                   base_path=str(base or ""), base_id=base_id, to=to)

    def take_store(self, bundle: str | os.PathLike[str], store: Store) -> None:
        """Read the receipt of a bundle opened at random (a layout, an archive file):
        its own, or one computed from its layout; none for a docker archive (no bundle
        id). Then as :meth:`take_receipt`.

        Raises:
            ReceiptError, BundleError: the receipt is malformed, of another
            ``index.json``, or missing from a differential bundle.
            WrongBaseError: see :meth:`take_receipt`.
        """
        if isinstance(store, DockerArchive):
            return
        if isinstance(store, LayoutStore) and store.blob_root != store.root / "blobs":
            index_json = read_inside(store.root, "index.json", limit=INDEX_LIMIT)
            if index_json is not None and base_annotation(index_json, self.where) is None \
                    and read_inside(store.root, RECEIPT_MEMBER, limit=RECEIPT_LIMIT) is None:
                # blobs in a shared directory: the receipt computed from this store
                self.take_receipt(compute_receipt(index_json, store, created=now()))
                return
        self.take_receipt(read_receipt(bundle))

    def take_receipt(self, receipt: Receipt) -> None:
        """The bundle's receipt is known: check ``--base`` against the base it names.

        Raises:
            WrongBaseError: ``--base`` is another bundle, or the bundle is no
            differential bundle.
        """
        self.receipt = receipt
        if self.base_id is None:
            return
        if receipt.base is None:
            raise WrongBaseError(f"--base {self.base_path}: {self.where} is a full bundle "
                                 f"({receipt.bundle_id}); it needs no base")
        if receipt.base.bundle_id != self.base_id:
            raise WrongBaseError(
                f"--base {self.base_path} is bundle {self.base_id}, but {self.where} is a "
                f"differential bundle on base {receipt.base.bundle_id}; give that bundle")

    def close(self) -> None:
        """Close the base bundle."""
        close = getattr(self.base, "close", None)
        if close is not None:
            close()

    @property
    def differential(self) -> bool:
        return self.receipt is not None and self.receipt.differential

    @property
    def omitted(self) -> dict[Digest, int]:
        """The digests the bundle omits, with their sizes (bytes)."""
        if self.receipt is None:
            return {}
        return {Digest.parse(b.digest): b.size for b in self.receipt.omitted}

    # -- the check -------------------------------------------------------------------
    def check(self, clients: ClientPool, pushes: Sequence[BlobPush], targets: Sequence[Target],
              plans: dict[Target, ImagePlan], *, headed: bool, new: set[tuple[str, str]],
              jobs: int, stop: threading.Event | None = None,
              refuse: bool = True) -> ChainReport | None:
        """Decide how each omitted blob reaches each repository that needs it (see
        :mod:`bundler.engine.preflight`); for a full bundle, nothing.

        Args:
            clients: the destination clients.
            pushes: the plan's blob pushes (``present`` asked already when ``headed``).
            targets, plans: every image of the import and its plan.
            headed: the blobs were asked about already.
            new: the (registry, repository) pairs the registry does not know.
            jobs: concurrent requests. stop: set to cancel.
            refuse: raise when a blob is missing (False: a dry run reports it).

        Returns:
            The :class:`ChainReport` (None for a full bundle).

        Raises:
            MissingBlobsError: an omitted blob is missing; nothing was pushed.
            RegistryError: a ``HEAD`` failed.
        """
        if not self.differential:
            return None
        assert self.receipt is not None and self.receipt.base is not None
        report = ChainReport(self.receipt.base.bundle_id, self.receipt.base.created,
                             base_bundle=self.base_path)
        report.receipt, report.imported, report.receipt_error = self._base_receipt(
            clients, report.base_id)
        candidates: dict[str, list[str]] = {}
        for target in targets:
            dest = target.destination
            if (dest.registry, dest.repository) not in new:
                repos = candidates.setdefault(dest.registry, [])
                if dest.repository not in repos:
                    repos.append(dest.repository)
        omitted = self.omitted
        states = check_omitted(pushes, omitted, clients, headed=headed, base=self.base,
                               candidates=candidates, jobs=jobs, stop=stop)
        missing = [b for b in pushes if states.get((b.registry, b.digest)) == MISSING]
        if missing and report.imported is not None and self.to is not None:
            # the repositories the base went to, by its registry receipt: mount from them
            elsewhere = base_repositories(clients.get(self.location.registry),
                                          self.location.repository, report.base_id, self.to)
            states.update(check_omitted(missing, omitted, clients, headed=True,
                                        base=self.base, candidates=elsewhere, jobs=jobs,
                                        stop=stop))
        self.report = fill_report(report, states, omitted, targets, plans)
        if report.missing and refuse:
            raise MissingBlobsError(self.where, report)
        return report

    def _base_receipt(self, clients: ClientPool,
                      base_id: str) -> tuple[str, str | None, str]:
        """Where the base's registry receipt was asked for, its date (None: none) and
        why it could not be read ("" when it was, or when there is none)."""
        where = f"{self.location}:{receipt_tag(base_id)}"
        try:
            return where, found_receipt(clients.get(self.location.registry),
                                        self.location.repository, base_id), ""
        except BundlerError as exc:  # unreadable: the blobs decide all the same
            return where, None, str(exc)

    def check_store(self, store: Store, entries: Sequence[Descriptor], *, to: str | None,
                    mapping: list[tuple[str, str]] | None, options: TransportOptions | None,
                    jobs: int, stop: threading.Event | None = None) -> None:
        """The check of a random-access store, before the first round of its push: every
        image and every referrer the rounds would push, planned as the push will (its
        answers kept in :attr:`memo` for the push).

        Raises:
            MissingBlobsError, RegistryError: see :meth:`check`. BundleError,
            MappingError: as the push would raise them.
        """
        if not self.differential:
            return
        images, levels = referrer_levels(entries)
        targets = resolve_targets(images if levels else list(entries), to=to, mapping=mapping)
        plans = {t: walk(t.descriptor, store.get_manifest, name=t.name) for t in targets}
        held = {d.digest for plan in plans.values() for d, _ in plan.manifests}
        for level in levels:  # the referrers the rounds push: their subjects are held
            placed = place_referrers([e for e in level if subject_of(e) in held], targets)
            for target in placed:
                plans[target] = walk(target.descriptor, store.get_manifest, name=target.name)
                held.update(d.digest for d, _ in plans[target].manifests)
            targets += placed
        with ClientPool(options) as clients:
            push = plan_push(targets, plans, clients, jobs=jobs, report=NullReporter(),
                             stop=stop, head_blobs=False, record_new=False, memo=self.memo)
            if push.failures:
                raise next(iter(push.failures.values()))
            new, _ = new_repositories(push, clients, jobs=jobs, stop=stop, memo=self.memo,
                                      journal_new=False)
            for blob in push.blobs:
                blob.new = frozenset(r for r in blob.repositories if (blob.registry, r) in new)
            self.check(clients, push.blobs, targets, plans, headed=False, new=new, jobs=jobs,
                       stop=stop)
        self.memo.record = False
        self._facts = {(b.registry, b.digest): b for b in push.blobs if b.headed}

    def apply(self, pending: Sequence[BlobPush]) -> None:
        """Hand the check's answers to a round of the push: the repositories that have
        each omitted blob, and where to mount it from (each answer serves once)."""
        for blob in pending:
            fact = self._facts.get((blob.registry, blob.digest))
            if fact is None or not set(blob.repositories) <= set(fact.repositories):
                continue
            del self._facts[(blob.registry, blob.digest)]
            blob.present = [r for r in blob.repositories if r in fact.present]
            blob.headed = True
            others = [r for r in fact.present if r not in blob.repositories]
            blob.mount_from = blob.mount_from or fact.mount_from or (others[0] if others
                                                                    else None)

    def source(self, digest: Digest, store: BlobSource) -> BlobSource:
        """Where a blob's bytes come from: the bundle, or for an omitted blob the base
        bundle (else a source that explains why there are no bytes)."""
        return self.omitted_source(digest) if digest in self.omitted else store

    def omitted_source(self, digest: Digest) -> BlobSource:
        """Where the bytes of an omitted blob come from: the base bundle, or (when it
        does not hold it: the blob is mounted or present) a source that explains why
        there are none."""
        if self.base is not None and self.base.has_blob(digest):
            return self.base
        assert self.receipt is not None and self.receipt.base is not None
        return OmittedSource(self.where, self.receipt.base.bundle_id)

    # -- the end ---------------------------------------------------------------------
    def finish(self, result: ImportResult, options: TransportOptions | None) -> ImportResult:
        """Every image is tagged: push the registry receipt (unless ``--no-receipt``) and
        note what the check found on the result.

        A receipt the registry refuses is a note on the result, not a failure: every
        image is in.
        """
        result.chain = self.report
        if self.push and self.receipt is not None:
            try:
                where, pushed = push_receipt(
                    self.location, self.receipt.to_bytes(), self.receipt.bundle_id,
                    options=options, push=lambda store, targets: push_images(
                        store, targets, options=options, jobs=2))
                result.receipt = where if pushed else f"{where} (there already)"
            except BundlerError as exc:  # the images are in: a note, not a failure
                result.notes.append(
                    f"the registry receipt of {self.receipt.bundle_id} could not be pushed "
                    f"to {self.location}: {exc}; a later differential import will not "
                    "find it (it checks the blobs all the same)")
        return result


def _open_base(path: str | os.PathLike[str]) -> tuple[Store, str]:
    """Open ``--base`` for reading at random, with its bundle id.

    Raises:
        WrongBaseError: a ``.tar.zst``, ``-`` or compressed volumes (read once only), not
        a bundle, or its receipt unreadable.
    """
    shown = os.fspath(path)
    try:
        if shown == "-" or (is_archive(path) and not reads_at_random(path)):
            raise WrongBaseError(f"--base {shown}: a base is read at random; give it as a "
                                 "directory or a .tar (a .tar.zst or - is read only once, "
                                 "front to back)")
        receipt = read_receipt(path)
        if Path(path).is_file() and _is_json(Path(path)):
            raise WrongBaseError(f"--base {shown} is a receipt: import reads the omitted "
                                 "blobs from the base bundle itself (a directory or a "
                                 ".tar); a receipt serves export --since and verify --base")
        store: Store = open_archive(path) if is_archive(path) else LayoutStore(Path(path))
    except (ReceiptError, BundleError) as exc:
        raise WrongBaseError(f"--base {shown}: {exc}") from exc
    return store, receipt.bundle_id


def _is_json(path: Path) -> bool:
    """Whether a file starts as JSON does (a receipt, not an archive)."""
    with open(path, "rb") as f:
        return f.read(64).lstrip().startswith(b"{")


def checked_receipt(receipt: Receipt | None, index_json: bytes, where: str,
                    manifests: dict[Digest, Manifest | Index]) -> Receipt | None:
    """The receipt of an archive read once: its receipt member, checked against its
    ``index.json``; for a bundle without one, computed from ``index.json`` and the
    manifests (now as its time), or None when not every image's manifests were read
    (``--mapping`` names some of them).

    Args:
        receipt: the receipt member parsed, or None. index_json: its exact bytes.
        where: the archive's name. manifests: every manifest read, by digest.

    Raises:
        BundleError: the receipt is of another ``index.json``; ``index.json`` names a
        base (``dev.bundler.base``) and no receipt names that base.
    """
    bundle_id = bundle_id_of(index_json)
    annotated = base_annotation(index_json, where)
    if receipt is not None and receipt.bundle_id != bundle_id:
        raise BundleError(f"{where}: {RECEIPT_MEMBER} is the receipt of bundle "
                          f"{receipt.bundle_id}, not of this index.json ({bundle_id})")
    if annotated is not None and (receipt is None or receipt.base is None
                                  or receipt.base.bundle_id != annotated):
        named = "no receipt" if receipt is None else \
            f"a receipt naming base {receipt.base.bundle_id if receipt.base else 'none'}"
        raise BundleError(f"{where}: a differential bundle (index.json names base "
                          f"{annotated}) with {named}; it cannot be imported")
    if receipt is not None:
        return receipt
    entries = parse_layout_index(index_json, where)

    class Held:
        def read_index(self) -> list[Descriptor]:
            return entries

        def get_manifest(self, descriptor: Descriptor) -> Manifest | Index:
            return manifests[descriptor.digest]

    try:
        return compute_receipt(index_json, Held(), created=now())
    except KeyError:  # --mapping: the manifests of the other images were read past
        return None

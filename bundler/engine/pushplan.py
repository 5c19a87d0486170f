"""Planning a push: which images the destinations already have, and for the others,
which blobs each destination repository needs, grouped by (registry, digest).

One plan serves the directory import, the one-pass archive import and ``--dry-run``:

1. ``HEAD`` each image at its destination (by tag, else by digest): an image whose
   digest is already there is complete and is skipped whole.
2. A complete image's repository holds all its blobs: it becomes the cross-repository
   mount source for those blobs in the same registry.
3. A destination repository that holds none of these images is asked once whether it
   exists (``GET tags/list?n=1``): one the registry does not know (``NAME_UNKNOWN``)
   holds none of the blobs, so none of them is asked about there (unless the upload
   journal says an earlier run was cut while pushing into it: then it may hold blobs
   without a tag).
4. The blobs of the other images are grouped into one :class:`BlobPush` per
   (registry, digest), listing every repository that needs it; with ``head_blobs``
   each repository not known to be new is asked (``HEAD``) whether it already has the
   blob.

Spec: distribution-spec "Checking if content exists" (manifests and blobs), "Mounting
a blob from another repository".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..events import Event, Reporter
from ..oci.content import Descriptor
from ..oci.digest import Digest
from ..oci.graph import ImagePlan
from .naming import Target
from .parallel import ClientPool, run_parallel

__all__ = ["BlobPush", "PlanMemo", "PushPlan", "new_repositories", "plan_push"]


@dataclass(eq=False)
class BlobPush:
    """One blob in one destination registry.

    Attributes:
        registry: the destination registry (``host[:port]``).
        descriptor: the blob's descriptor.
        repositories: the repositories of that registry that need it, in plan order.
        owner: the first image that needs it (for messages).
        present: the repositories that already have it (after ``HEAD``).
        mount_from: a repository holding it already (a complete image's), or None.
        new: the repositories the registry does not know yet (they lack the blob: no
            ``HEAD`` is needed there).
        headed: ``present`` was asked already (a differential import's check of the
            blobs its bundle omits): the ladder does not ask again.
    """

    registry: str
    descriptor: Descriptor
    repositories: list[str]
    owner: Target
    present: list[str] = field(default_factory=list)
    mount_from: str | None = None
    new: frozenset[str] = frozenset()
    headed: bool = False

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest

    @property
    def missing(self) -> list[str]:
        """The repositories that still need the blob."""
        return [r for r in self.repositories if r not in self.present]


@dataclass
class PlanMemo:
    """Answers a plan got from the destinations, kept for the next plan of the same
    images (a differential import checks its base before the rounds of its push, which
    then do not ask again). Each answer serves one later plan, then is forgotten.

    Attributes:
        record: keep the answers (True), or hand them out (False).
        resolved: (registry, repository, tag or digest) -> the digest found, or None.
        repositories: (registry, repository) -> whether the registry knows it (None:
            it could not say).
    """

    record: bool = True
    resolved: dict[tuple[str, str, str], Digest | None] = field(default_factory=dict)
    repositories: dict[tuple[str, str], bool | None] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def resolve(self, clients: ClientPool, registry: str, repository: str,
                identifier: str) -> Digest | None:
        """``resolve`` through the memo (see the class docstring)."""
        key = (registry, repository, identifier)
        with self.lock:
            if not self.record and key in self.resolved:
                return self.resolved.pop(key)
        have = clients.get(registry).resolve(repository, identifier)
        if self.record:
            with self.lock:
                self.resolved[key] = have
        return have

    def has_repository(self, clients: ClientPool, registry: str, repository: str
                       ) -> bool | None:
        """``has_repository`` through the memo (see the class docstring)."""
        key = (registry, repository)
        with self.lock:
            if not self.record and key in self.repositories:
                return self.repositories.pop(key)
        known = clients.get(registry).has_repository(repository)
        if self.record:
            with self.lock:
                self.repositories[key] = known
        return known


@dataclass
class PushPlan:
    """What a push has to do.

    Attributes:
        complete: images whose destination already holds their digest (skipped).
        todo: the images to push, in the order given.
        blobs: one :class:`BlobPush` per (registry, digest) the ``todo`` images need.
        failures: a ``HEAD`` that failed, keyed by the image (Target) or the blob
            (BlobPush) it was about.
    """

    complete: list[Target] = field(default_factory=list)
    todo: list[Target] = field(default_factory=list)
    blobs: list[BlobPush] = field(default_factory=list)
    failures: dict[object, BaseException] = field(default_factory=dict)
    new_repositories: set[tuple[str, str]] = field(default_factory=set)
    journaled: set[tuple[str, str]] = field(default_factory=set)
    _users: dict[tuple[str, Digest], list[Target]] | None = field(default=None, repr=False)

    def needing(self, blob: BlobPush, plans: dict[Target, ImagePlan]) -> list[Target]:
        """The images to push that need ``blob`` in its registry (an index built once:
        one lookup per call, whatever the number of images)."""
        if self._users is None:
            self._users = {}
            for target in self.todo:
                for digest in plans[target].blobs:
                    self._users.setdefault((target.destination.registry, digest),
                                           []).append(target)
        return list(self._users.get((blob.registry, blob.digest), ()))

    def culprits(self, key: object, plans: dict[Target, ImagePlan]) -> list[Target]:
        """The images a failure in :attr:`failures` fails: the image itself, or every
        image that needs the blob."""
        return [key] if isinstance(key, Target) else self.needing(key, plans)  # type: ignore[arg-type]


def plan_push(
    targets: list[Target],
    plans: dict[Target, ImagePlan],
    clients: ClientPool,
    *,
    jobs: int,
    report: Reporter,
    stop: threading.Event | None = None,
    keep_going: bool = False,
    head_blobs: bool = True,
    leave_out: Callable[[Descriptor], bool] | None = None,
    record_new: bool = True,
    memo: PlanMemo | None = None,
) -> PushPlan:
    """Ask the destinations what they have and group the blobs to push.

    Args:
        targets: the images and their destinations (each must have a plan).
        plans: the manifests and blobs of each image.
        clients: the destination registry clients.
        jobs: concurrent ``HEAD`` requests.
        report: receives the ``plan`` event (images, bytes of the blobs to push), then per
            image an ``image skipped`` event (complete) or ``image start`` (to push).
        stop: set to cancel.
        keep_going: ask about everything even after a failed ``HEAD``; else the plan
            stops at the first failure (see ``PushPlan.failures``).
        head_blobs: ask each repository about each blob.
        leave_out: blobs not to push at all (non-distributable layers not held).
        record_new: ask whether each destination repository is new (``GET tags/list``),
            ``HEAD`` no image in one that is (see :func:`_first_heads`), and record those
            in the upload journal until the run ends; False for a dry run (which asks
            only ``HEAD``).
        memo: answers an earlier plan of the same images kept (see :class:`PlanMemo`).

    Returns:
        A :class:`PushPlan`.
    """
    plan = PushPlan()
    lock = threading.Lock()
    complete: set[Target] = set()

    def check(target: Target) -> None:
        dest = target.destination
        identifier = dest.tag or str(dest.digest)
        have = clients.get(dest.registry).resolve(dest.repository, identifier) if memo is None \
            else memo.resolve(clients, dest.registry, dest.repository, identifier)
        if have == target.descriptor.digest:
            with lock:
                complete.add(target)

    asked_new = False
    if record_new:  # into a repository the registry does not know, no manifest HEADs
        plan.new_repositories, plan.journaled = _first_heads(
            targets, check, plan, complete, clients, jobs=jobs, stop=stop,
            keep_going=keep_going, memo=memo)
        asked_new = True
    else:
        plan.failures.update(run_parallel(targets, check, jobs=jobs, stop=stop,
                                          keep_going=keep_going))
    plan.complete = [t for t in targets if t in complete]
    plan.todo = [t for t in targets if t not in complete and t not in plan.failures]
    if plan.failures and not keep_going:
        return _announced(plan, targets, plans, report)
    sources: dict[tuple[str, Digest], str] = {}
    for target in plan.complete:
        for digest in plans[target].blobs:
            sources.setdefault((target.destination.registry, digest),
                               target.destination.repository)
    by_key: dict[tuple[str, Digest], BlobPush] = {}
    for target in plan.todo:
        dest = target.destination
        for digest, descriptor in plans[target].blobs.items():
            if leave_out is not None and leave_out(descriptor):
                continue
            key = (dest.registry, digest)
            blob = by_key.get(key)
            if blob is None:
                blob = by_key[key] = BlobPush(dest.registry, descriptor, [], target,
                                              mount_from=sources.get(key))
            if dest.repository not in blob.repositories:
                blob.repositories.append(dest.repository)
    plan.blobs = list(by_key.values())
    if record_new and not asked_new:  # not in a dry run: it only asks HEAD
        plan.new_repositories, plan.journaled = new_repositories(plan, clients, jobs=jobs,
                                                                  stop=stop, memo=memo)
    for blob in plan.blobs:
        blob.new = frozenset(r for r in blob.repositories
                             if (blob.registry, r) in plan.new_repositories)
    if head_blobs:

        def head(blob: BlobPush) -> None:
            client = clients.get(blob.registry)
            blob.present = [r for r in blob.repositories
                            if r not in blob.new and client.has_blob(r, blob.digest)]

        plan.failures.update(run_parallel(plan.blobs, head, jobs=jobs, stop=stop,
                                          keep_going=keep_going))
    return _announced(plan, targets, plans, report)


def _first_heads(targets: list[Target], check: Callable[[Target], None], plan: PushPlan,
                 complete: set[Target], clients: ClientPool, *, jobs: int,
                 stop: threading.Event | None, keep_going: bool, memo: PlanMemo | None
                 ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """``HEAD`` the first image of each destination repository; ask each repository
    whose first image is not there whether the registry knows it
    (:func:`new_repositories`); then ``HEAD`` the other images, except in the
    repositories found new: a repository the registry does not know holds no manifest.
    A run into an empty registry asks one ``HEAD`` and one ``tags/list`` per repository
    instead of one ``HEAD`` per image; a run where everything is there asks one ``HEAD``
    per image, as before. Failed ``HEAD`` requests go to ``plan.failures``.

    Returns:
        What :func:`new_repositories` returns.
    """
    firsts: dict[tuple[str, str], Target] = {}
    for target in targets:
        firsts.setdefault((target.destination.registry, target.destination.repository), target)
    first = list(firsts.values())
    plan.failures.update(run_parallel(first, check, jobs=jobs, stop=stop,
                                      keep_going=keep_going))
    if plan.failures and not keep_going:
        return set(), set()
    probe = PushPlan(complete=[t for t in first if t in complete],
                     todo=[t for t in first if t not in complete and t not in plan.failures])
    new, journaled = new_repositories(probe, clients, jobs=jobs, stop=stop, memo=memo)
    chosen = set(first)
    rest = [t for t in targets if t not in chosen
            and (t.destination.registry, t.destination.repository) not in new]
    plan.failures.update(run_parallel(rest, check, jobs=jobs, stop=stop,
                                      keep_going=keep_going))
    return new, journaled


def new_repositories(plan: PushPlan, clients: ClientPool, *, jobs: int,
                     stop: threading.Event | None, memo: PlanMemo | None = None,
                     journal_new: bool = True
                     ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """The (registry, repository) pairs of ``plan.todo`` that the registry does not know
    (one ``GET tags/list?n=1`` each, for repositories that hold no complete image and
    that the upload journal does not name as cut short by an earlier run); and every
    pair the journal names once this run has begun (those found new, and those an
    earlier run left), to forget when the run ends. ``journal_new=False`` only asks (a
    check before the run: nothing is recorded)."""
    known = {(t.destination.registry, t.destination.repository) for t in plan.complete}
    asked = list(dict.fromkeys(
        (t.destination.registry, t.destination.repository) for t in plan.todo
        if (t.destination.registry, t.destination.repository) not in known))
    journal = {registry: clients.get(registry).options.journal
               for registry in {registry for registry, _ in asked}}
    asked = [(registry, repository) for registry, repository in asked
             if journal[registry] is not None]
    left = {key for key in asked if journal[key[0]].unfinished(*key)}  # type: ignore[union-attr]
    asked = [key for key in asked if key not in left]
    new: set[tuple[str, str]] = set()
    lock = threading.Lock()

    def ask(key: tuple[str, str]) -> None:
        registry, repository = key
        known = clients.get(registry).has_repository(repository) if memo is None \
            else memo.has_repository(clients, registry, repository)
        if known is False:
            with lock:
                new.add(key)

    run_parallel(asked, ask, jobs=jobs, stop=stop, keep_going=True)  # unknown: ask as usual
    if not journal_new:
        return new, left
    for registry, repository in sorted(new):  # not new once pushed into
        journal[registry].begin(registry, repository)  # type: ignore[union-attr]
    return new, new | left


def _announced(plan: PushPlan, targets: list[Target], plans: dict[Target, ImagePlan],
               report: Reporter) -> PushPlan:
    """Report the ``plan`` event, then each image: ``skipped`` if found complete, else
    ``start`` (unless its planning failed); returns ``plan``."""
    report(Event("plan", "import", "start", images=len(targets),
                 total=sum(b.descriptor.size for b in plan.blobs if b not in plan.failures)))
    complete = set(plan.complete)
    for target in targets:
        if target in complete:
            report(Event("image", target.name, "skipped", total=plans[target].size,
                         detail=str(target.destination)))
        elif target not in plan.failures:
            report(Event("image", target.name, "start", total=plans[target].size,
                         detail=str(target.destination)))
    return plan

"""Referrer discovery: the signatures, attestations and SBOMs that refer to the images an
export or a mirror moves, found so that they travel with them.

For every manifest of every image (an image's manifest, an index and each of its
children), :class:`ReferrerDiscovery` asks the source registry what refers to it:

- the cosign tag scheme: tags ``sha256-<hex>.sig``, ``.att``, ``.sbom`` of the same
  repository, looked up in ONE ``tags/list`` per repository (never a ``HEAD`` per tag);
- the OCI 1.1 referrers API, ``GET /v2/<name>/referrers/<digest>`` (``artifactType``
  filter); a registry that answers 404 is not asked again in the run;
- without the API, the referrers tag schema: the tag ``sha256-<hex>`` (in the same tag
  list) holding an index of referrers.

A manifest nothing refers to costs at most two requests (the referrers request and its
share of its repository's tag list). Each referrer found is planned like an image (by
tag for the tag scheme, so the tag is kept; by digest otherwise), and its own referrers
are looked for in turn (a signature of an attestation), down to ``max_depth`` levels;
each digest is taken once.

A referrer's ``index.json`` entry is annotated with :data:`SUBJECT` (the digest of the
manifest it refers to) and :data:`SCHEME` (``tag``, ``api`` or ``tag-schema``), next to
the usual names (``org.opencontainers.image.ref.name``: the source reference by tag or
by digest). See ``docs/bundle-format.md``.

A referrer that cannot be listed or fetched is a warning naming it (logged on the
``bundler`` logger; the image still counts), or a :class:`~bundler.errors.TransferError`
with ``required``.

Spec: distribution-spec v1.1 "Listing Referrers", "Referrers Tag Schema"; cosign
``specs/SIGNATURE_SPEC.md``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import BundlerError, NotFoundError, TransferError
from ..oci.content import CONTAINERD_NAME, REF_NAME, Descriptor, entry_name
from ..oci.digest import Digest
from ..oci.graph import ImagePlan, walk
from ..oci.reference import Reference
from ..registry.client import RegistryClient
from ..registry.pool import ClientPool
from ..registry.referrers import (
    ReferrersApi,
    cosign_tags,
    fallback_tag,
    list_referrers,
    read_fallback_index,
    referrer_descriptor,
)
from ..registry.workers import worker_pool
from ..stores.registry import RegistrySource
from .export_sources import StoreImage, StoreSource

_log = logging.getLogger("bundler")

__all__ = ["DEFAULT_REFERRERS", "SCHEME", "SUBJECT", "ReferrerDiscovery", "ReferrerPolicy", "discover_in_source",
           "referrer_annotations", "subject_of"]

#: ``index.json`` annotation of a referrer: the digest of the manifest it refers to.
SUBJECT = "dev.bundler.referrer.subject"
#: ``index.json`` annotation of a referrer: how it was found (``tag``, ``api``,
#: ``tag-schema``).
SCHEME = "dev.bundler.referrer.scheme"
SCHEMES = ("tag", "api", "tag-schema")


@dataclass(frozen=True)
class ReferrerPolicy:
    """What an export or mirror does about referrers.

    Attributes:
        enabled: look for referrers at all (``--no-referrers`` turns it off).
        artifact_types: keep only referrers of these artifact types (the manifest's
            ``artifactType``, else its config's media type); empty: all.
        required: a referrer that cannot be listed or fetched fails the run
            (``--require-referrers``) instead of a warning.
        max_depth: levels of referrers of referrers to follow (1: only direct ones).
    """

    enabled: bool = True
    artifact_types: tuple[str, ...] = ()
    required: bool = False
    max_depth: int = 4


#: Referrers travel with their images unless told otherwise.
DEFAULT_REFERRERS = ReferrerPolicy()


def referrer_annotations(descriptor: Descriptor) -> dict[str, str]:
    """The referrer annotations (:data:`SUBJECT`, :data:`SCHEME`) a descriptor carries."""
    return {k: v for k, v in descriptor.annotations.items() if k in (SUBJECT, SCHEME)}


def subject_of(descriptor: Descriptor) -> Digest | None:
    """The subject digest an ``index.json`` entry names with :data:`SUBJECT`, or None
    (not a referrer, or an unreadable value)."""
    value = descriptor.annotations.get(SUBJECT)
    if not value:
        return None
    try:
        return Digest.parse(value)
    except BundlerError:
        return None


@dataclass(frozen=True, eq=False)
class _Found:
    """A referrer to plan: how to read it, its subject and the scheme that found it."""

    image: StoreImage
    subject: Digest
    scheme: str
    check_type: bool  # artifact type known only once the manifest is read


@dataclass
class ReferrerDiscovery:
    """Finds, plans and names the referrers of planned images (see the module doc).

    Args:
        clients: the source side's clients.
        policy: what to look for.

    Attributes:
        found: names of the referrers planned, in order.
        warnings: one line per referrer (or listing) that could not be read.
    """

    clients: ClientPool
    policy: ReferrerPolicy = field(default_factory=ReferrerPolicy)
    found: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._api = ReferrersApi()
        self._tags: dict[tuple[str, str], frozenset[str]] = {}
        self._tag_locks: dict[tuple[str, str], threading.Lock] = {}
        self._asked: set[tuple[str, str, Digest]] = set()
        self._lock = threading.Lock()

    # -- the export hook --------------------------------------------------------------
    def extend(self, source: StoreSource, images: Sequence[StoreImage],
               plans: dict[StoreImage, ImagePlan], pool: ThreadPoolExecutor,
               held: Callable[[Digest, int], bool] | None = None) -> list[StoreImage]:
        """Find the referrers of ``images`` (planned in ``plans``), plan them into
        ``plans`` with their annotations, recursively; return them in order (each after
        its subject). A source that is not a registry adds nothing. Each blob of a
        referrer that ``held(digest, size)`` (the bundle) does not hold is asked for
        with a ``HEAD``: a referrer the source cannot serve whole is left out (a
        warning) rather than failing its image.

        Raises:
            TransferError: with ``required``, a referrer that cannot be read.
        """
        if not self.policy.enabled or not isinstance(source.store, RegistrySource):
            return []
        taken = {str(i) for i in images}  # by name: a repository's referrer is its own
        level = [i for i in images if i.reference is not None and i in plans]
        added: list[StoreImage] = []
        for _depth in range(self.policy.max_depth):
            candidates = [f for f in self._look(level, plans, pool) if str(f.image) not in taken]
            level = []
            for found in candidates:
                name = str(found.image)
                if name in taken:
                    continue
                taken.add(name)
                plan = self._plan(source, found, pool, held)
                if plan is None:
                    continue
                plan.descriptor = plan.descriptor.with_annotations(
                    {SUBJECT: str(found.subject), SCHEME: found.scheme})
                plans[found.image] = plan
                added.append(found.image)
                level.append(found.image)
                self.found.append(name)
            if not level:
                break
        return added

    def _plan(self, source: StoreSource, found: _Found, pool: ThreadPoolExecutor,
              held: Callable[[Digest, int], bool] | None = None) -> ImagePlan | None:
        try:
            plan = source.plan(found.image, pool)
        except BundlerError as exc:
            self._problem(f"referrer {found.image} of {found.subject}", exc)
            return None
        types = self.policy.artifact_types
        if found.check_type and types and \
                referrer_descriptor(plan.top).artifact_type not in types:
            return None
        try:  # a blob the source no longer serves: the referrer is left out, not the image
            self._check_blobs(found, plan, held)
        except BundlerError as exc:
            self._problem(f"referrer {found.image} of {found.subject}", exc)
            return None
        return plan

    def _check_blobs(self, found: _Found, plan: ImagePlan,
                     held: Callable[[Digest, int], bool] | None) -> None:
        """``HEAD`` each blob of a referrer that the bundle does not hold yet.

        Raises:
            NotFoundError: the source does not serve one. RegistryError.
        """
        ref = found.image.reference
        assert ref is not None
        client = self.clients.get(ref.registry)
        for digest, descriptor in plan.blobs.items():
            if held is not None and held(digest, descriptor.size):
                continue
            if not client.has_blob(ref.repository, digest):
                raise NotFoundError(f"blob {digest} of {ref.registry}/{ref.repository} is "
                                    "not served", status=404, registry=ref.registry)

    def _problem(self, what: str, exc: BaseException) -> None:
        detail = str(exc)  # the registry's error may already start with ``what``
        if detail.startswith(f"{what}: "):
            detail = detail[len(what) + 2:]
        if self.policy.required:
            raise TransferError(what, BundlerError(detail)) from exc
        line = f"{what} cannot be read (left out): {detail}"
        with self._lock:
            self.warnings.append(line)
        _log.warning("%s", line)

    # -- finding ----------------------------------------------------------------------
    def _look(self, images: Sequence[StoreImage], plans: Mapping[StoreImage, ImagePlan],
              pool: ThreadPoolExecutor) -> list[_Found]:
        """The referrers of every manifest of ``images``, not yet asked for."""
        asks: list[tuple[Reference, Digest]] = []
        for image in images:
            ref = image.reference
            assert ref is not None
            for descriptor, _item in plans[image].manifests:
                key = (ref.registry, ref.repository, descriptor.digest)
                if key not in self._asked:
                    self._asked.add(key)
                    asks.append((ref, descriptor.digest))
        results = list(pool.map(lambda a: self._referrers_of(*a), asks))
        return [found for result in results for found in result]

    def _referrers_of(self, ref: Reference, subject: Digest) -> list[_Found]:
        client = self.clients.get(ref.registry)
        tags = self._tag_list(client, ref.repository)
        found = [_Found(StoreImage.of(Reference(ref.registry, ref.repository, tag)), subject,
                        "tag", True)
                 for tag in cosign_tags(subject) if tag in tags]
        where = f"referrers of {ref.registry}/{ref.repository}@{subject}"
        types = self.policy.artifact_types
        try:
            listed = list_referrers(client, ref.repository, subject, artifact_types=types,
                                    api=self._api)
        except BundlerError as exc:
            self._problem(where, exc)
            return found
        scheme = "api"
        if listed is None:
            listed, scheme = [], "tag-schema"
            if fallback_tag(subject) in tags:
                try:
                    index = read_fallback_index(client, ref.repository, subject)
                except BundlerError as exc:
                    self._problem(f"{where} (tag {fallback_tag(subject)})", exc)
                    return found
                listed = [d for d in (index.manifests if index is not None else ())
                          if not types or d.artifact_type in types]
        for descriptor in listed:
            by_digest = Reference(ref.registry, ref.repository, None, descriptor.digest)
            found.append(_Found(StoreImage.of(by_digest), subject, scheme, False))
        return found

    def _tag_list(self, client: RegistryClient, repository: str) -> frozenset[str]:
        """The repository's tags, listed once per run (a repository that cannot be
        listed counts as having none, with a warning)."""
        key = (client.registry, repository)
        with self._lock:
            lock = self._tag_locks.setdefault(key, threading.Lock())
        with lock:  # one listing per repository, however many threads ask
            held = self._tags.get(key)
            if held is None:
                try:
                    held = frozenset(client.list_tags(repository))
                except NotFoundError:
                    held = frozenset()
                except BundlerError as exc:
                    self._problem(f"tags of {client.registry}/{repository}", exc)
                    held = frozenset()
                self._tags[key] = held
            return held


def discover_in_source(discovery: ReferrerDiscovery, source: RegistrySource,
                       jobs: int) -> list[Descriptor]:
    """The entries of a mirror: the images ``source`` resolved, then their referrers
    (resolved into ``source`` too), annotated as an export annotates them.

    Each image's manifests are read through ``source`` (fetched once: the push that
    follows reads them from its memory).

    Raises:
        RegistryError, ManifestError: an image's manifests cannot be read.
        TransferError: with ``required``, a referrer that cannot be read.
    """
    entries = source.read_index()
    images = [StoreImage(entry_name(e), e, Reference.parse(entry_name(e))) for e in entries]
    with worker_pool(jobs, "bundler-referrers") as pool:
        plans = {i: walk(i.descriptor, source.get_manifest, name=i.name, pool=pool)
                 for i in images if i.descriptor is not None}
        added = discovery.extend(StoreSource(source), images, plans, pool)
    found = []
    for image in added:
        descriptor = plans[image].descriptor
        found.append(descriptor.with_annotations(
            {REF_NAME: image.name, CONTAINERD_NAME: image.name, **descriptor.annotations}))
    return entries + found

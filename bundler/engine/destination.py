"""Where the push engine (:class:`~bundler.engine.push.PushRun`) puts images: registries,
or a bundle being written.

A :class:`Destination` gives, per registry, the verbs the engine calls
(:class:`DestinationStore`: ``resolve``, ``has_blob``, ``put_blob``, ``put_manifest``, each
taking the repository) and plans a push (:meth:`Destination.plan`). Two kinds:

- :class:`RegistryDestination`: registries, through one
  :class:`~bundler.registry.client.RegistryClient` each (import, mirror, archive
  import); a blob is checked with ``HEAD``, mounted or uploaded, a manifest is ``PUT``,
  the tag goes last;
- :class:`~bundler.engine.bundle_destination.BundleDestination`: a bundle being
  written (export), over a :class:`~bundler.stores.BundleStore`; its one "registry" and
  "repository" are the bundle, and an image's "tag" is its ``index.json`` entry
  (:class:`BundleEntry`), written last for all images at once.

Optional abilities are small separate protocols, checked with ``isinstance``:
:class:`BlobMount` (a destination that can mount a blob from another repository),
:class:`StagedManifests` (a destination that stores manifests when it commits, and
reports them then), and on the source side :class:`BlobStream` (a source that serves a
blob's bytes from a byte offset, unverified, to a destination that checks them itself
and continues a partial blob).

Spec: distribution-spec "Checking if content exists", "Mounting a blob from another
repository", "Pushing blobs", "Pushing manifests"; image-spec ``image-layout.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import BundlerError, RegistryError, TransportError
from ..events import Reporter
from ..oci.content import Descriptor
from ..oci.digest import Digest
from ..oci.graph import ImagePlan
from .naming import Target
from .parallel import ClientPool
from .pushplan import PlanMemo, PushPlan, plan_push

__all__ = ["BlobMount", "BlobStream", "BundleEntry", "Destination", "DestinationStore",
           "LeftOut", "RegistryDestination", "StagedManifests", "foreign_refused",
           "sparse_refused"]


class DestinationStore(Protocol):
    """The verbs the push engine uses on one destination registry (or bundle); each
    takes the repository (a bundle has one, ``""``).

    :class:`~bundler.registry.client.RegistryClient` has them as they are.
    """

    def resolve(self, repository: str, identifier: str) -> Digest | None:
        """The digest a tag or digest names there, or None.

        Raises:
            RegistryError: the destination cannot be asked.
        """
        ...

    def has_blob(self, repository: str, digest: Digest) -> bool:
        """Whether the repository holds the blob."""
        ...

    def put_blob(self, repository: str, digest: Digest, size: int,
                 open_source: Callable[..., Iterable[bytes]], *, upload_url: str = "") -> object:
        """Store a blob of ``size`` bytes streamed from ``open_source()`` (a destination
        that checks the digest itself may call ``open_source(offset)`` to continue a
        partial blob).

        Raises:
            IntegrityError: wrong size or digest. RegistryError, BundleError.
            LeftOut: a non-distributable layer the source does not serve (not an error).
        """
        ...

    def put_manifest(self, repository: str, identifier: str, raw: bytes,
                     media_type: str) -> object:
        """Store a manifest's exact bytes under a digest or tag.

        Raises:
            RegistryError, BundleError, DigestMismatchError.
        """
        ...


@runtime_checkable
class BlobMount(Protocol):
    """An optional ability of a :class:`DestinationStore`: a cross-repository mount."""

    def mount_blob(self, repository: str, digest: Digest, from_repository: str) -> str | None:
        """Mount the blob: None when mounted, else the URL of the upload session the
        refusal opened (``""``: none).

        Raises:
            RegistryError: the mount failed (the caller uploads instead).

        Spec: distribution-spec "Mounting a blob from another repository".
        """
        ...


@runtime_checkable
class StagedManifests(Protocol):
    """An optional ability of a :class:`DestinationStore`: manifests are kept by
    ``put_manifest`` and stored when the destination commits (a bundle: after every
    blob, before ``index.json``), which reports each ``manifest`` event then."""

    def staged_manifests(self) -> dict[Digest, bytes]:
        """The manifests kept so far, by digest."""
        ...


@runtime_checkable
class BlobStream(Protocol):
    """An optional ability of a blob source: its bytes from a byte offset, unverified,
    for a destination that checks them itself (a bundle continues a partial blob, and
    hashes the bytes once)."""

    def stream_blob(self, descriptor: Descriptor, offset: int) -> Iterator[bytes]:
        """Chunks of the blob from byte ``offset``.

        Raises (when read):
            NotFoundError, RegistryError, TransportError, BundleError, IntegrityError.
        """
        ...

    def explain(self, descriptor: Descriptor, exc: BaseException) -> BaseException:
        """``exc`` (a failed store of the blob) as the error to report: a foreign layer
        names the URL that served wrong bytes; else ``exc`` itself."""
        ...


class LeftOut(BundlerError):
    """A blob left out on purpose (not an error): a non-distributable layer that its
    source does not serve. ``str()`` says why."""


@dataclass(frozen=True)
class BundleEntry:
    """Where an image goes in a bundle: its ``index.json`` entry.

    It answers as a destination :class:`~bundler.oci.reference.Reference` does: the
    bundle is its one ``registry`` and ``repository`` (``""``); ``tag`` is the entry's
    name (None: an entry without a name).

    Attributes:
        name: the ``org.opencontainers.image.ref.name`` the entry gets, or None.
        digest: the image's digest.
    """

    name: str | None
    digest: Digest
    registry: str = ""
    repository: str = ""

    @property
    def tag(self) -> str | None:
        return self.name

    def __str__(self) -> str:
        return self.name or f"@{self.digest}"


class Destination(Protocol):
    """Where a :class:`~bundler.engine.push.PushRun` puts images."""

    def get(self, registry: str) -> DestinationStore:
        """The store of one destination registry (a bundle: itself, for ``""``)."""
        ...

    def plan(self, targets: list[Target], plans: dict[Target, ImagePlan], *, jobs: int,
             report: Reporter, stop: threading.Event | None, keep_going: bool,
             head_blobs: bool, leave_out: Callable[[Descriptor], bool] | None) -> PushPlan:
        """What the destination already has, and the blobs to place (see
        :func:`~bundler.engine.pushplan.plan_push`); reports the ``plan`` event and each
        image's ``start`` or ``skipped``."""
        ...


class RegistryDestination:
    """Registries as a :class:`Destination`, one client each.

    Args:
        clients: the destination side's clients (the caller closes the pool).
        memo: answers an earlier plan of the same images kept (a differential import's
            check before its push: see :class:`~bundler.engine.pushplan.PlanMemo`).
    """

    def __init__(self, clients: ClientPool, memo: PlanMemo | None = None) -> None:
        self.clients, self.memo = clients, memo

    def get(self, registry: str) -> DestinationStore:
        """The client of ``registry`` (a :class:`BlobMount` too)."""
        return self.clients.get(registry)

    def plan(self, targets: list[Target], plans: dict[Target, ImagePlan], *, jobs: int,
             report: Reporter, stop: threading.Event | None, keep_going: bool,
             head_blobs: bool, leave_out: Callable[[Descriptor], bool] | None) -> PushPlan:
        """``HEAD`` each image (and with ``head_blobs`` each blob): see
        :func:`~bundler.engine.pushplan.plan_push`."""
        return plan_push(targets, plans, self.clients, jobs=jobs, report=report, stop=stop,
                         keep_going=keep_going, head_blobs=head_blobs, leave_out=leave_out,
                         memo=self.memo)


def foreign_refused(exc: RegistryError, foreign: list[Digest],
                    listed: list[Digest] | None = None) -> RegistryError:
    """``exc`` (a refused manifest push), told apart when the manifest references
    non-distributable layers that were not pushed, or layers whose descriptors list
    ``urls`` (pushed or not): some registries refuse those.

    Args:
        exc: the error of the manifest push.
        foreign: the image's non-distributable layers that were not pushed.
        listed: the image's layers that were pushed and whose descriptors list ``urls``
            (a foreign layer the bundle holds).

    Returns:
        ``exc`` itself, or a RegistryError with the same status and codes that says why.

    Spec: image-spec ``layer.md`` "Non-Distributable Layers"; distribution
    ``validation.manifests.urls``.
    """
    if (not foreign and not listed) or isinstance(exc, TransportError) \
            or exc.status in (401, 403, 404, 429):
        return exc
    if foreign:
        why = (f"the manifest references non-distributable layers the bundle does not hold "
               f"({', '.join(str(d) for d in foreign)}); this registry refuses them")
    else:
        why = (f"the blobs were pushed, but this registry refuses the layer URLs of "
               f"{', '.join(str(d) for d in listed or [])}")
    return RegistryError(
        f"{exc} ({why}: it must accept foreign layer URLs, e.g. "
        f"distribution's validation.manifests.urls.allow)",
        status=exc.status, codes=exc.codes, url=exc.url, registry=exc.registry,
    )


def sparse_refused(exc: RegistryError, plan: ImagePlan) -> RegistryError:
    """``exc`` (a refused push of a sparse index), told apart: the registry wants every
    child of an index in the repository, and the bundle holds only the chosen platforms'.

    Args:
        exc: the error of the index's push.
        plan: the image (its :attr:`~bundler.oci.graph.ImagePlan.omitted` children).

    Returns:
        ``exc`` itself (a whole image, or an error that is no refusal: a transport error,
        401, 403, 429, 5xx), or a RegistryError with the same status and codes that names
        ``--platform-mode strip``.

    Spec: distribution-spec "Pushing Manifests" (a registry MAY refuse a manifest whose
    referenced content it does not hold: MANIFEST_BLOB_UNKNOWN, MANIFEST_UNKNOWN).
    """
    if not plan.omitted or isinstance(exc, TransportError) or exc.status is None \
            or exc.status in (401, 403, 429) or exc.status >= 500:
        return exc
    return RegistryError(
        f"{exc} (the index is sparse: only its {plan.sparse} manifests were pushed, "
        f"{len(plan.omitted)} of its children were not, and this registry refuses an index "
        "whose children it does not hold; use --platform-mode strip for a new index of the "
        "chosen platforms)",
        status=exc.status, codes=exc.codes, url=exc.url, registry=exc.registry,
    )

"""Mirror: copy images from registries straight into other registries, as
``oc image mirror`` does, with the import engine over a registry source.

The sources are resolved (their top manifests fetched, an index kept whole) into a
:class:`~bundler.stores.registry.RegistrySource`, named by their full references as an
export names bundle entries, and given destinations by the import's naming rules
(``--to REGISTRY[/PREFIX]``, ``--mapping`` lines). Then :func:`push_images` moves them:
an image the destination already has is skipped after one ``HEAD``; each blob climbs the
ladder (present -> cross-repository mount -> upload) and streams from the source response
into the destination upload through the verifying reader, never whole in memory and
never on disk; a blob that several destination repositories of one registry need is
pulled once and mounted for the others; manifests go after their blobs, children before
their index, tags last. A rerun after an interruption skips what landed.

Spec: distribution-spec "Pulling manifests", "Pulling blobs", "Pushing blobs",
"Mounting a blob from another repository", "Pushing manifests".
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence

from ..errors import BundlerError, MappingError, PartialFailureError, TransferError
from ..events import Event, NullReporter, Reporter
from ..oci.content import CONTAINERD_NAME, REF_NAME, Descriptor
from ..oci.digest import Digest
from ..oci.reference import Reference
from ..registry.client import TransportOptions
from ..stores.registry import RegistrySource
from .exporting import unique_references
from .importing import ImportResult, push_images
from .naming import Target, resolve_targets
from .parallel import ClientPool
from .planning import ImportPlan, plan_targets
from .referrer_push import push_with_referrers
from .referrers import DEFAULT_REFERRERS, ReferrerDiscovery, ReferrerPolicy, discover_in_source

__all__ = ["check_mirror", "mirror_images", "plan_mirror"]


def check_mirror(
    references: Sequence[str | Reference],
    *,
    to: str | None = None,
    mapping: list[tuple[str, str]] | None = None,
) -> tuple[list[Reference], list[tuple[str, str]] | None]:
    """Check a mirror's sources and destinations without any I/O.

    Args:
        references: the source references (may be empty with a mapping).
        to: ``REGISTRY[/PREFIX]``, or None.
        mapping: ``(SOURCE, DESTINATION)`` pairs, or None; SOURCE is a reference (no
            tag: ``latest``).

    Returns:
        The parsed source references (each once, in order) and the mapping pairs that
        name them (None without a mapping).

    Raises:
        InvalidReferenceError: a bad source reference.
        MappingError: neither or both of ``to``/``mapping``; a source no mapping line
            names; two sources to one destination; a destination equal to its source.
        BundlerError: no images at all.
    """
    if (to is None) == (mapping is None):
        raise MappingError("give exactly one of --to REGISTRY[/PREFIX] or --mapping FILE")
    pairs = None if mapping is None else list(dict.fromkeys(mapping))
    for source, _ in pairs or []:
        if re.fullmatch(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}", source):
            raise MappingError(f"mapping source {source!r} is a bare digest; a mirror reads "
                               "from registries: write REGISTRY/REPOSITORY@DIGEST")
    if pairs is not None and not references:
        references = [source for source, _ in pairs]
    refs = unique_references(references)
    if not refs:
        raise BundlerError("no images to mirror: give references, --images-file or "
                           "--mapping")
    if pairs is not None:
        pairs = _named(refs, pairs)
    # the destinations, worked out from the names alone (each digest a stand-in)
    entries = [_entry(ref, ref.digest or Digest.of(str(ref).encode())) for ref in refs]
    loose = None if pairs is None else [(s, d.split("@", 1)[0]) for s, d in pairs]
    refuse_same(resolve_targets(entries, to=to, mapping=loose))
    return refs, pairs


def mirror_images(
    references: Sequence[str | Reference],
    *,
    to: str | None = None,
    mapping: list[tuple[str, str]] | None = None,
    src_options: TransportOptions | None = None,
    dest_options: TransportOptions | None = None,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    keep_going: bool = False,
    make_source: Callable[[ClientPool], RegistrySource] = RegistrySource,
    referrers: ReferrerPolicy | None = DEFAULT_REFERRERS,
) -> ImportResult:
    """Copy images from their registries into destination registries, digests kept.

    Args:
        references: source references (``registry.example/team/app:1.0``,
            ``host/repo@sha256:...``); with a mapping and none given, the mapping's
            sources.
        to: ``REGISTRY[/PREFIX]``: destination = PREFIX + source repository, tag kept.
        mapping: ``(SOURCE, DESTINATION)`` pairs (``oc image mirror`` style, see
            :func:`bundler.engine.naming.parse_mapping`); exactly one of ``to`` and
            ``mapping``.
        src_options: transport options of the source registries.
        dest_options: transport options of the destination registries.
        jobs: concurrent manifest requests and blob transfers.
        reporter: receives progress events (as an import's).
        stop: set to cancel (Ctrl-C); a rerun skips what landed.
        keep_going: mirror every image that can be; fail at the end for the others.
        make_source: makes the source store from the source clients (a
            :class:`~bundler.stores.platform_source.PlatformSource` for ``--platform``).
        referrers: carry the referrers of every manifest too, pushed after their
            subjects (see :mod:`bundler.engine.referrers`); None: none.

    Returns:
        An :class:`~bundler.engine.importing.ImportResult` (``targets``: each image and
        where it went; blob counts per destination repository).

    Raises:
        InvalidReferenceError, MappingError, BundlerError: as :func:`check_mirror`,
            before any request.
        TransferError: an image could not be read or pushed (naming it, wrapping the
            cause); nothing is tagged for an image whose content did not all arrive.
        PartialFailureError: with ``keep_going``, some images failed (``.result`` says
            what was mirrored).
    """
    refs, pairs = check_mirror(references, to=to, mapping=mapping)
    report = reporter or NullReporter()
    stop = stop or threading.Event()
    with ClientPool(src_options) as clients:
        source = make_source(clients)
        failures = source.resolve(refs, jobs=jobs, stop=stop, keep_going=keep_going)
        errors: list[TransferError] = []
        for ref, exc in failures.items():
            error = exc if isinstance(exc, TransferError) else TransferError(str(ref), exc)
            if not keep_going:
                raise error from exc
            errors.append(error)
            report(Event("image", str(ref), "failed", detail=str(exc)))
        if pairs is not None and failures:
            gone = {str(r) for r in failures}
            pairs = [(s, d) for s, d in pairs if _source_name(s) not in gone]
        result = ImportResult()
        if source.read_index():
            entries = source.read_index() if referrers is None else discover_in_source(
                ReferrerDiscovery(clients, referrers), source, jobs)  # engine/referrers.py
            try:
                result = push_with_referrers(
                    source, entries, to=to, mapping=pairs, options=dest_options,
                    push=lambda targets: push_images(source, targets, options=dest_options,
                                                     jobs=jobs, reporter=report, stop=stop,
                                                     keep_going=keep_going))
            except PartialFailureError as exc:
                errors.extend(exc.failures)  # type: ignore[arg-type]
                result = exc.result  # type: ignore[assignment]
    if errors:
        order = {str(r): i for i, r in enumerate(refs)}
        errors.sort(key=lambda e: order.get(e.image, len(order)))  # the order asked
        raise PartialFailureError(errors, result)
    return result


def plan_mirror(
    references: Sequence[str | Reference],
    *,
    to: str | None = None,
    mapping: list[tuple[str, str]] | None = None,
    src_options: TransportOptions | None = None,
    dest_options: TransportOptions | None = None,
    jobs: int = 8,
    make_source: Callable[[ClientPool], RegistrySource] = RegistrySource,
) -> ImportPlan:
    """Work out what :func:`mirror_images` would move; move nothing.

    The sources' manifests are read (GET) and the destinations asked (HEAD) which
    images and blobs they hold; no blob is downloaded or uploaded, no manifest pushed.
    ``make_source``: as for :func:`mirror_images`.

    Returns:
        An :class:`~bundler.engine.planning.ImportPlan` (image names are the source
        references).

    Raises:
        InvalidReferenceError, MappingError, BundlerError: as :func:`check_mirror`.
        TransferError: a source or destination cannot be read or asked (naming the
        image).
    """
    refs, pairs = check_mirror(references, to=to, mapping=mapping)
    with ClientPool(src_options) as clients:
        source = make_source(clients)
        for ref, exc in source.resolve(refs, jobs=jobs).items():
            raise TransferError(str(ref), exc) from exc
        targets = resolve_targets(source.read_index(), to=to, mapping=pairs)
        try:
            return plan_targets(source, targets, options=dest_options, jobs=jobs)
        except TransferError:
            raise
        except BundlerError as exc:  # a child manifest of a source image
            raise TransferError(", ".join(t.name for t in targets), exc) from exc


def refuse_same(targets: list[Target]) -> None:
    """Refuse a destination that is its own source (same registry, repository and tag;
    by digest only on both sides).

    Raises:
        MappingError: naming the image and the accepted forms.
    """
    for target in targets:
        src, dest = Reference.parse(target.name), target.destination
        same_name = (src.registry, src.repository) == (dest.registry, dest.repository)
        if same_name and src.tag == dest.tag:
            raise MappingError(
                f"the destination of {target.name} is its own source; mirror into another "
                "registry or repository (--to REGISTRY[/PREFIX], or a mapping line "
                "SOURCE=REGISTRY/REPOSITORY[:TAG])")


def _entry(ref: Reference, digest: Digest) -> Descriptor:
    """A stand-in ``index.json`` entry named after ``ref`` (for checking names)."""
    name = str(ref)
    return Descriptor(media_type="", digest=digest, size=0,
                      annotations={REF_NAME: name, CONTAINERD_NAME: name})


def _source_name(source: str) -> str:
    """A mapping source as the full reference it names (``latest`` when untagged)."""
    return str(Reference.parse(source))


def _named(refs: list[Reference], pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The mapping lines whose sources are among ``refs``; every ref needs one.

    Raises:
        InvalidReferenceError: a mapping source that is no reference.
        MappingError: a source that no mapping line names.
    """
    wanted = {str(r) for r in refs}
    kept = [(s, d) for s, d in pairs if _source_name(s) in wanted]
    named = {_source_name(s) for s, _ in kept}
    for ref in refs:
        if str(ref) not in named:
            raise MappingError(f"no mapping line names {ref}; add a line {ref}=DESTINATION")
    return kept

"""Pushing referrers: after their subjects, into their subjects' repositories, and into
the referrers tag schema where the destination has no referrers API.

An import or a mirror pushes in rounds: first the images, then the referrers of each
level (a signature of an attestation goes after the attestation), each round through
the ordinary push engine (blobs first, children before parents, every digest kept). A
referrer goes to the repository its subject's image went to, by digest, or under its
tag for the cosign tag scheme (``sha256-<hex>.sig`` keeps its name).

Then, for every pushed manifest with a ``subject``: if the destination registry does
not serve the referrers API (it answers the referrers request with 404, so it did not
answer the manifest PUT with ``OCI-Subject`` either), the subject's referrers tag schema
index (tag ``sha256-<hex>``) gets the referrer's descriptor, merged with the descriptors
already there (another tool's referrers stay); an index that already lists it is left
as it is.

Spec: distribution-spec v1.1 "Pushing Manifests with Subject", "Referrers Tag Schema".
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import BundlerError, PartialFailureError
from ..oci.content import Descriptor, Manifest, entry_name
from ..oci.digest import Digest
from ..oci.graph import walk
from ..oci.reference import Reference
from ..registry.client import TransportOptions
from ..registry.pool import ClientPool
from ..registry.referrers import (
    ReferrersApi,
    list_referrers,
    merge_fallback_index,
    referrer_descriptor,
)
from ..stores import Store
from .ladder import ImportResult
from .naming import Target, resolve_targets
from .referrers import subject_of

__all__ = ["maintain_fallback_indexes", "merge_results", "place_referrers",
           "push_with_referrers", "referrer_levels", "referrer_targets"]

_log = logging.getLogger("bundler")


def referrer_levels(entries: Sequence[Descriptor]) -> tuple[list[Descriptor],
                                                            list[list[Descriptor]]]:
    """Split ``index.json`` entries into the images and the referrers by level: level 0
    refers to images (or to manifests no referrer is), level n to a referrer of level
    n - 1."""
    images = [e for e in entries if subject_of(e) is None]
    referrers = [e for e in entries if subject_of(e) is not None]
    level_of: dict[Digest, int] = {}
    by_digest = {e.digest: e for e in referrers}

    def level(entry: Descriptor, seen: frozenset[Digest] = frozenset()) -> int:
        if entry.digest in level_of:
            return level_of[entry.digest]
        subject = subject_of(entry)
        parent = by_digest.get(subject) if subject is not None else None
        found = 0 if parent is None or parent.digest in seen else \
            level(parent, seen | {entry.digest}) + 1
        level_of[entry.digest] = found
        return found

    levels: list[list[Descriptor]] = []
    for entry in referrers:
        at = level(entry)
        while len(levels) <= at:
            levels.append([])
        levels[at].append(entry)
    return images, levels


def place_referrers(referrers: Sequence[Descriptor], targets: Sequence[Target]) -> list[Target]:
    """The targets of referrer entries: the destination repository of an image from
    the same source repository; by digest, with the entry's tag if it has one. A
    referrer no image of its repository goes with is left out."""
    where: dict[str, Reference] = {}
    for target in targets:
        source = _reference(target.name)
        if source is not None:
            where.setdefault(source.name, target.destination)
    placed = []
    for entry in referrers:
        name = entry_name(entry)
        source = _reference(name)
        dest = where.get(source.name) if source is not None else None
        if source is not None and dest is not None:
            placed.append(Target(name, entry, Reference(dest.registry, dest.repository,
                                                        source.tag, entry.digest)))
    return placed


def push_with_referrers(
    store: Store,
    entries: Sequence[Descriptor],
    *,
    to: str | None,
    mapping: list[tuple[str, str]] | None,
    push: Callable[[list[Target]], ImportResult],
    options: TransportOptions | None,
) -> ImportResult:
    """Push the images of ``entries``, then their referrers level by level, then keep the
    referrers tag schema of destinations without the referrers API.

    Args:
        store: where the entries are read from (a layout, a registry source).
        entries: ``index.json`` descriptors (referrers annotated, see
            :mod:`bundler.engine.referrers`).
        to, mapping: where the images go (see :func:`~bundler.engine.naming.resolve_targets`).
        push: pushes a list of targets with the push engine.
        options: transport options of the destinations.

    Returns:
        The :class:`ImportResult` of all rounds together.

    Raises:
        TransferError, MappingError: as the push engine. PartialFailureError: with
        ``keep_going`` (in ``push``), some images or referrers failed (``.result`` holds
        every round).
    """
    images, levels = referrer_levels(entries)
    if not levels:
        return push(resolve_targets(list(entries), to=to, mapping=mapping))
    targets = resolve_targets(images, to=to, mapping=mapping)
    result, errors = _round(push, targets, ImportResult(), [])
    pushed: list[Target] = []
    held = _manifests_of(store, entries)
    for entry in (e for level in levels for e in level if subject_of(e) not in held):
        _log.warning("referrer %s left out: its subject %s is not in the bundle",
                     entry_name(entry) or entry.digest, subject_of(entry))
    for level in levels:  # a referrer goes only once its subject is in place
        done = _pushed_manifests(store, result.targets)
        placed = place_referrers([e for e in level if subject_of(e) in done], targets)
        if placed:
            result, errors = _round(push, placed, result, errors)
            pushed += [t for t in placed if t in result.targets]
    maintain_fallback_indexes(store, pushed, options)
    if errors:
        raise PartialFailureError(errors, result)
    return result


def _pushed_manifests(store: Store, targets: Sequence[Target]) -> set[Digest]:
    """Digests of every manifest the pushed ``targets`` hold (an index's children too)."""
    digests: set[Digest] = set()
    for target in targets:
        digests.update(d.digest for d, _ in walk(target.descriptor, store.get_manifest,
                                                 name=target.name).manifests)
    return digests


def _manifests_of(store: Store, entries: Sequence[Descriptor]) -> set[Digest]:
    """Digests of every manifest of ``entries`` (an index's children too)."""
    digests: set[Digest] = set()
    for entry in entries:
        try:
            digests.update(d.digest for d, _ in walk(entry, store.get_manifest,
                                                     name=entry_name(entry)).manifests)
        except BundlerError:  # the push names it
            digests.add(entry.digest)
    return digests


def _round(push: Callable[[list[Target]], ImportResult], targets: list[Target],
           result: ImportResult, errors: list) -> tuple[ImportResult, list]:
    try:
        got = push(targets)
    except PartialFailureError as exc:
        errors = errors + list(exc.failures)
        got = exc.result  # type: ignore[assignment]
    return merge_results(result, got), errors


def merge_results(a: ImportResult, b: ImportResult) -> ImportResult:
    """Two rounds' results as one: counts added, lists joined."""
    merged: dict[str, Any] = {}
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        merged[f.name] = x + y if isinstance(x, (int, list)) else {**x, **y} \
            if isinstance(x, dict) else y
    return ImportResult(**merged)


def referrer_targets(targets: Sequence[Target]) -> list[Target]:
    """The targets whose entries are referrers (annotated with their subject)."""
    return [t for t in targets if subject_of(t.descriptor) is not None]


def maintain_fallback_indexes(store: Store, targets: Sequence[Target],
                              options: TransportOptions | None) -> list[str]:
    """Merge each pushed referrer with a ``subject`` into its subject's referrers tag
    schema index, on destinations that do not serve the referrers API.

    Returns:
        ``registry/repository:tag`` of each index written.

    Raises:
        RegistryError: a destination refused the index.
    """
    groups: dict[tuple[str, str, Digest], list[Descriptor]] = {}
    for target in targets:
        item = store.get_manifest(target.descriptor)
        if not isinstance(item, Manifest) or item.subject is None:
            continue  # a cosign tag-scheme signature: its tag is how it is found
        key = (target.destination.registry, target.destination.repository,
               item.subject.digest)
        groups.setdefault(key, []).append(referrer_descriptor(item))
    written: list[str] = []
    if not groups:
        return written
    api = ReferrersApi()
    with ClientPool(options) as clients:
        for (registry, repository, subject), descriptors in groups.items():
            client = clients.get(registry)
            try:
                if list_referrers(client, repository, subject, api=api) is not None:
                    continue  # the registry lists referrers itself
            except BundlerError:
                pass  # unanswerable: keep the tag schema, which every client reads
            if merge_fallback_index(client, repository, subject, descriptors):
                written.append(f"{registry}/{repository}:{subject.algorithm}-{subject.hex}")
    return written


def _reference(name: str) -> Reference | None:
    try:
        return Reference.parse(name, default_tag=None) if name else None
    except BundlerError:
        return None

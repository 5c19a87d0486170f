"""Referrers inside a bundle: which entry each one refers to (for ``list``), and whether
its subject is there (for ``verify``).

A referrer's ``index.json`` entry names its subject's digest in
:data:`~bundler.engine.referrers.SUBJECT`. The subject is an image of the bundle, a
child manifest of an index image, or another referrer (a signature of an attestation).

Spec: image-spec ``image-layout.md``, ``manifest.md`` (``subject``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..oci.content import Descriptor, entry_name
from ..oci.digest import Digest
from ..oci.graph import ImagePlan
from .referrers import subject_of

__all__ = ["missing_subjects", "referrer_owners"]


def referrer_owners(plans: Sequence[ImagePlan]) -> dict[int, int]:
    """Position of each referrer plan -> position of the plan holding its subject (as
    its top manifest or as an index child). A referrer whose subject no other plan
    holds is left out (it is listed on its own).

    Args:
        plans: the bundle's images, their descriptors annotated as ``index.json`` has
            them.
    """
    holder: dict[Digest, int] = {}
    for images in (True, False):  # an image's manifests first, then referrers'
        for position, plan in enumerate(plans):
            if (subject_of(plan.descriptor) is None) == images:
                for descriptor, _item in plan.manifests:
                    holder.setdefault(descriptor.digest, position)
    owners: dict[int, int] = {}
    for position, plan in enumerate(plans):
        subject = subject_of(plan.descriptor)
        owner = holder.get(subject) if subject is not None else None
        if owner is not None and owner != position:
            owners[position] = owner
    # a cycle (two entries naming each other) is no nesting: keep both on their own
    for position in list(owners):
        seen, at = {position}, owners.get(position)
        while at is not None and at not in seen:
            seen.add(at)
            at = owners.get(at)
        if at is not None:
            owners.pop(position, None)
    return owners


def missing_subjects(entries: Sequence[Descriptor],
                     has_manifest: Callable[[Digest], bool]) -> list[str]:
    """One problem line per referrer entry whose subject the bundle does not hold.

    Args:
        entries: the ``index.json`` descriptors.
        has_manifest: whether the bundle holds a manifest of that digest.
    """
    problems = []
    for entry in entries:
        subject = subject_of(entry)
        if subject is not None and not has_manifest(subject):
            name = entry_name(entry) or str(entry.digest)
            problems.append(f"referrer {name}: its subject {subject} is not in the bundle")
    return problems

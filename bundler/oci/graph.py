"""The content graph of images: what one image reaches (index -> manifests -> config
and layers), keyed by digest so that a blob shared by many images is counted once. No
I/O: manifests come from a ``load`` or ``visit`` callback.

Which children of an image's top index are walked is decided in one place, a child
filter (:data:`ChildFilter`): by default
:func:`~bundler.oci.platforms.kept_children`, which leaves out the children a sparse
index's bundle does not hold (``dev.bundler.platforms.sparse`` on its entry).

Spec: image-spec ``image-index.md`` and ``manifest.md`` (what a manifest references),
``image-layout.md`` (``index.json``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import ManifestError
from .content import INDEX_MEDIA_TYPES, Descriptor, Index, Manifest, entry_name
from .digest import Digest
from .platforms import SPARSE, kept_children

__all__ = ["MAX_NESTING", "ChildFilter", "ImagePlan", "check_reachable", "name_images",
           "visit_reachable", "walk"]

#: ``children(top, index_children) -> the children to walk``: called for an image's top
#: index only (its descriptor is the ``index.json`` entry or the resolved reference).
#: Raises ManifestError when the children cannot be chosen.
ChildFilter = Callable[[Descriptor, Sequence[Descriptor]], list[Descriptor]]


@dataclass
class ImagePlan:
    """Everything one image needs, in push order.

    Attributes:
        name: the image as the user knows it (a reference or layout name).
        descriptor: the top-level descriptor (manifest or index).
        manifests: (descriptor, raw bytes, parsed) of every manifest and index reachable,
            children before parents; the top-level one is last.
        blobs: every config and layer descriptor, keyed by digest.
        omitted: the children of the top index the child filter left out (a sparse
            index: their content is not part of the image here).
    """

    name: str
    descriptor: Descriptor
    manifests: list[tuple[Descriptor, Manifest | Index]] = field(default_factory=list)
    blobs: dict[Digest, Descriptor] = field(default_factory=dict)
    omitted: list[Descriptor] = field(default_factory=list)

    @property
    def sparse(self) -> str | None:
        """The platforms a sparse index holds (its ``dev.bundler.platforms.sparse``
        annotation), or None for a whole image."""
        return self.descriptor.annotations.get(SPARSE)

    @property
    def top(self) -> Manifest | Index:
        return self.manifests[-1][1]

    @property
    def size(self) -> int:
        """Bytes of all manifests and blobs of this image, counted once each."""
        return sum(d.size for d in self.blobs.values()) + sum(
            len(m.raw) for _, m in self.manifests
        )

    @property
    def platforms(self) -> list[str]:
        """``os/arch[/variant]`` of the index children that name a real platform (of a
        sparse index, those it holds)."""
        top = self.top
        if not isinstance(top, Index):
            return []
        left_out = {id(d) for d in self.omitted}
        return [
            str(d.platform)
            for d in top.manifests
            if d.platform and d.platform.os != "unknown" and d.platform.architecture != "unknown"
            and id(d) not in left_out
        ]


#: Indexes nested deeper than this are refused (a guard against reference cycles and
#: absurd content).
MAX_NESTING = 8


def walk(
    top: Descriptor,
    load: Callable[[Descriptor], Manifest | Index],
    *,
    name: str,
    pool: ThreadPoolExecutor | None = None,
    children: ChildFilter = kept_children,
) -> ImagePlan:
    """Load an image's manifests depth-first and collect its blobs.

    Args:
        top: the descriptor of the image's manifest or index.
        load: returns the parsed (and digest-checked) manifest a descriptor points at.
        name: the image name for the plan and for errors.
        pool: loads the children of an index concurrently when given.
        children: chooses the children of the top index to walk (see
            :data:`ChildFilter`); the others are :attr:`ImagePlan.omitted`.

    Returns:
        The :class:`ImagePlan`, manifests in children-first order.

    Raises:
        Whatever ``load`` raises; ManifestError for a reference cycle, or from
        ``children`` (e.g. a sparse index without a child of its platforms).
    """
    plan = ImagePlan(name=name, descriptor=top)
    seen: set[Digest] = set()

    def visit(descriptor: Descriptor, item: Manifest | Index, depth: int) -> None:
        if depth > MAX_NESTING:
            raise ManifestError(f"{name}: indexes nested deeper than {MAX_NESTING} levels")
        if isinstance(item, Index):
            under = list(item.manifests)
            if depth == 0:
                under = children(descriptor, under)
                kept = {id(c) for c in under}
                plan.omitted = [c for c in item.manifests if id(c) not in kept]
            fresh = [c for c in under if c.digest not in seen]
            seen.update(c.digest for c in fresh)
            loaded = list(pool.map(load, fresh)) if pool and len(fresh) > 1 else [
                load(c) for c in fresh
            ]
            for child, child_item in zip(fresh, loaded, strict=True):
                visit(child, child_item, depth + 1)
        for blob in item.blobs:
            plan.blobs.setdefault(blob.digest, blob)
        plan.manifests.append((descriptor, item))

    seen.add(top.digest)
    visit(top, load(top), 0)
    return plan


def visit_reachable(
    entries: list[Descriptor],
    visit: Callable[[str, Descriptor, bool], Iterable[Descriptor]],
    reached: dict[Digest, list[str]] | None = None,
    too_deep: Callable[[str, Descriptor], None] | None = None,
    children: ChildFilter = kept_children,
) -> int:
    """Call ``visit`` once per digest reachable from a layout's ``index.json`` entries.

    Args:
        entries: the ``index.json`` descriptors.
        visit: called as ``visit(image name, descriptor, is_entry)``, depth first, with
            the first image that reaches the digest; returns the descriptors under it (an
            index's children, a manifest's blobs), or ``()`` for a blob or for content it
            could not read.
        reached: if given, filled with digest -> the names of every image that reaches
            it, in ``index.json`` order.
        too_deep: called (instead of ``visit``) for a manifest under more than
            :data:`MAX_NESTING` levels of indexes, which :func:`walk` refuses; nothing
            under it is visited.
        children: chooses the children of an entry that is an index, as in
            :func:`walk` (a sparse index: those its bundle holds).

    Returns:
        The number of images (entries).

    Raises:
        What ``children`` raises (ManifestError).

    Spec: image-spec ``image-layout.md`` (``index.json``), ``image-index.md``, ``manifest.md``.
    """
    under: dict[Digest, list[Descriptor]] = {}
    expanded: set[Digest] = set()  # digests whose whole content went on a stack
    for position, entry in enumerate(entries):
        name = entry_name(entry) or f"#{position} ({entry.digest})"
        stack: list[tuple[Descriptor, int]] = [(entry, 0)]
        here: set[Digest] = set()
        while stack:
            descriptor, depth = stack.pop()
            if descriptor.digest in here:
                continue
            here.add(descriptor.digest)
            if reached is not None:
                reached.setdefault(descriptor.digest, []).append(name)
            if depth > MAX_NESTING and descriptor.is_manifest:
                if too_deep is not None and descriptor.digest not in under:
                    too_deep(name, descriptor)
                under.setdefault(descriptor.digest, [])
                continue
            if descriptor.digest not in under:
                under[descriptor.digest] = list(visit(name, descriptor, descriptor is entry))
            below = under[descriptor.digest]
            if descriptor is entry and entry.media_type in INDEX_MEDIA_TYPES and below:
                kept = children(entry, below)
                if len(kept) < len(below):  # a sparse index: not all of it
                    stack.extend((child, depth + 1) for child in kept)
                    continue
            if descriptor.digest in expanded and reached is None:
                continue  # its content was walked for an earlier image
            expanded.add(descriptor.digest)
            stack.extend((child, depth + 1) for child in below)
    return len(entries)


def name_images(names: list[str], most: int = 3) -> str:
    """``a, b, c`` or ``a, b, c and N more``: the images a problem concerns."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def check_reachable(
    entries: list[Descriptor],
    visit: Callable[[str, Descriptor, bool], Iterable[Descriptor]],
    bad: dict[Digest, str],
) -> tuple[int, list[str]]:
    """:func:`visit_reachable` for a check: ``visit`` records a digest's problem in
    ``bad``; each problem comes back named by every image that reaches the digest.

    Returns:
        (the number of images, one line per problem: ``IMAGES: problem``).
    """
    reached: dict[Digest, list[str]] = {}

    def too_deep(_name: str, descriptor: Descriptor) -> None:
        bad.setdefault(descriptor.digest, f"manifest {descriptor.digest} is under more "
                                          f"than {MAX_NESTING} levels of indexes")

    def children(top: Descriptor, under: Sequence[Descriptor]) -> list[Descriptor]:
        try:
            return kept_children(top, under)
        except ManifestError as exc:  # an unreadable annotation, or no child it names
            bad.setdefault(top.digest, str(exc))
            return []

    images = visit_reachable(entries, visit, reached, too_deep=too_deep, children=children)
    return images, [f"{name_images(reached[d])}: {why}" for d, why in bad.items()]

"""The manifests an archive read once reaches from its roots (``index.json`` entries or
import targets), parsed as their members arrive, in any order.

Spec: image-spec ``image-layout.md``, ``image-index.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..errors import BundlerError, ManifestError, SizeMismatchError
from ..oci.content import Descriptor, Index, Manifest, parse_manifest
from ..oci.digest import Digest
from ..oci.platforms import kept_children

__all__ = ["HeadManifests"]


class HeadManifests:
    """The manifests reachable from root descriptors, parsed as their members arrive.

    Members may come in any order: bytes offered before anything reaches them are held
    (:attr:`held`) and parsed once the roots or a parsed index reach them. :attr:`missing`
    (reachable, not loaded yet) is kept up to date as manifests are parsed, so asking
    what is still to come costs nothing, however many members there are. A root that
    is a sparse index (``dev.bundler.platforms.sparse``) reaches only its kept children
    (:func:`~bundler.oci.platforms.kept_children`), unless the same index is also a whole
    root.

    Args:
        on_bad: receives (digest, error) for a manifest that does not parse or whose size
            differs from its descriptor's; when None, the :class:`ManifestError` or
            :class:`SizeMismatchError` is raised.
        check_sizes: compare each manifest's size with its descriptor's (verify does it
            itself, for every descriptor, naming the image).
        where: the archive's name, for messages.

    Attributes:
        manifests: the parsed manifests and indexes, by digest.
        held: offered bytes nothing has reached yet (configs, unordered manifests).
        missing: reachable manifests not loaded yet.
        bad: digests known to be unusable (they are not waited for).
    """

    def __init__(self, on_bad: Callable[[Digest, BundlerError], None] | None = None, *,
                 check_sizes: bool = True, where: str = "") -> None:
        self.manifests: dict[Digest, Manifest | Index] = {}
        self.held: dict[Digest, bytes] = {}
        self.missing: dict[Digest, Descriptor] = {}
        self.bad: set[Digest] = set()
        self.rooted = False
        self._reached: set[Digest] = set()
        self._roots: dict[Digest, list[Descriptor]] = {}
        self._on_bad = on_bad
        self._check_sizes = check_sizes
        self._where = where

    @property
    def complete(self) -> bool:
        """True once the roots are known and every manifest they reach is loaded."""
        return self.rooted and not self.missing

    def root(self, descriptors: Iterable[Descriptor]) -> None:
        """The descriptors to start from (``index.json`` entries, or the import targets).

        Raises:
            ManifestError: a held manifest does not parse (and ``on_bad`` is None).
        """
        self.rooted = True
        descriptors = list(descriptors)
        for root in descriptors:  # an index that is also a whole root is read whole
            self._roots.setdefault(root.digest, []).append(root)
        self._reach(descriptors)

    def offer(self, digest: Digest, data: bytes) -> None:
        """Bytes of a member (already verified against ``digest``).

        Raises:
            ManifestError: a wanted manifest does not parse (and ``on_bad`` is None).
            SizeMismatchError: its size is not its descriptor's (and ``on_bad`` is None).
        """
        descriptor = self.missing.pop(digest, None)
        if descriptor is None:
            self.held[digest] = data
        else:
            self._reach(self._parse(descriptor, data))

    def mark_bad(self, digest: Digest) -> None:
        """``digest`` cannot be used (its member is damaged): do not wait for it."""
        self.bad.add(digest)
        self.missing.pop(digest, None)
        self.held.pop(digest, None)

    def _reach(self, stack: list[Descriptor]) -> None:
        while stack:
            descriptor = stack.pop()
            digest = descriptor.digest
            if digest in self._reached or digest in self.bad:
                continue
            self._reached.add(digest)
            raw = self.held.pop(digest, None)
            if raw is None:
                self.missing[digest] = descriptor
            else:
                stack.extend(self._parse(descriptor, raw))

    @staticmethod
    def _kept(roots: list[Descriptor], under: list[Descriptor]) -> list[Descriptor]:
        """The children of an index that is a root (or several): those of the sparse
        roots' platforms (:func:`~bundler.oci.platforms.kept_children`), all of them if
        one root is whole.

        Raises:
            ManifestError: an unreadable sparse annotation, or no child it names.
        """
        kept: set[int] = set()
        for root in roots:
            kept.update(id(c) for c in kept_children(root, under))
        return [c for c in under if id(c) in kept]

    def _parse(self, descriptor: Descriptor, raw: bytes) -> list[Descriptor]:
        """Parse a reached manifest; the children an index reaches next."""
        try:
            if self._check_sizes and len(raw) != descriptor.size:  # as in a directory
                digest = descriptor.digest
                raise SizeMismatchError(
                    digest=str(digest), expected=descriptor.size, actual=len(raw),
                    where=f"{self._where}: blobs/{digest.algorithm}/{digest.hex}")
            item = parse_manifest(raw, descriptor.media_type, digest=descriptor.digest)
            under = list(item.manifests) if isinstance(item, Index) else []
            if under and descriptor.digest in self._roots:  # a sparse index: its kept ones
                under = self._kept(self._roots[descriptor.digest], under)
        except (ManifestError, SizeMismatchError) as exc:
            if self._on_bad is None:
                if isinstance(exc, ManifestError):  # name the member: import has no image yet
                    digest = descriptor.digest
                    raise ManifestError(f"{self._where}: blobs/{digest.algorithm}/{digest.hex}"
                                        f": {exc}") from exc
                raise
            self.bad.add(descriptor.digest)
            self._on_bad(descriptor.digest, exc)
            return []
        self.manifests[descriptor.digest] = item
        return under

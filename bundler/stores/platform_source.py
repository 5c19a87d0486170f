"""A registry source that keeps only some platforms of each multi-arch index.

:class:`PlatformSource` is a :class:`~bundler.stores.registry.RegistrySource` whose
resolved images are, for an index:

* ``strip``: a new index holding only the chosen platforms' manifests (and the
  attestation manifests that refer to them), written by
  :func:`bundler.oci.platforms.strip_index`; its children keep their digests, the index
  gets a new one and records the original's in the ``dev.bundler.platforms.source-digest``
  annotation;
* ``sparse``: the index itself, bytes and digest unchanged, its descriptor annotated
  with ``dev.bundler.platforms.sparse`` (the chosen platforms), so that walking it
  (:func:`bundler.oci.graph.walk`) reaches only the chosen children;
* ``single``: the chosen platform's manifest itself, with its original digest.

An image that is no index is kept as it is. :attr:`PlatformSource.changed` says which
references changed digest, and which are sparse.

Spec: image-spec ``image-index.md``; distribution-spec "Pulling manifests".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ManifestError
from ..oci.content import CONTAINERD_NAME, REF_NAME, Descriptor, Index, parse_manifest
from ..oci.digest import Digest
from ..oci.platforms import SPARSE, PlatformChoice, choose_children, single_child, strip_index
from ..oci.reference import Reference
from ..registry.pool import ClientPool
from .registry import RegistrySource

__all__ = ["DigestChange", "PlatformSource"]


@dataclass(frozen=True)
class DigestChange:
    """A reference stored otherwise than the registry serves it: under another digest
    (``strip``, ``single``), or as a sparse index (``sparse``: the same digest).

    Attributes:
        reference: the reference (``str``). original: the registry's index digest.
        digest: the digest in the bundle. mode: ``strip``, ``sparse`` or ``single``.
        platforms: the platforms kept (``linux/amd64,linux/arm64``).
    """

    reference: str
    original: Digest
    digest: Digest
    mode: str
    platforms: str = ""


class PlatformSource(RegistrySource):
    """Images read from registries, each index narrowed to ``choice``'s platforms.

    Args:
        clients: the source side's clients.
        choice: the platforms and the mode (no platforms: every index kept whole).
        choices: reference (``str``) -> its own choice instead of ``choice``.
    """

    def __init__(self, clients: ClientPool, choice: PlatformChoice,
                 choices: Mapping[str, PlatformChoice] | None = None) -> None:
        super().__init__(clients)
        self.choice = choice
        self.choices = dict(choices or {})
        self.changed: list[DigestChange] = []

    def resolve_one(self, reference: Reference) -> Descriptor:
        """Resolve as :meth:`RegistrySource.resolve_one`, then narrow an index.

        Raises:
            ManifestError: an index without a manifest of a chosen platform (or, in
            ``single`` mode, with several). What ``resolve_one`` raises.
        """
        entry = super().resolve_one(reference)
        name = str(reference)
        choice = self.choices.get(name, self.choice)
        if not choice.platforms or entry.media_type not in (
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json"):
            return entry
        index = self.get_manifest(entry)
        if not isinstance(index, Index):
            return entry
        try:
            if choice.mode == "sparse":
                choose_children(index, choice)  # one at least, or say which there are
                narrowed = entry.with_annotations({REF_NAME: name, CONTAINERD_NAME: name,
                                                   SPARSE: str(choice)})
                with self._lock:
                    self._entries[name] = narrowed
                    self.changed.append(DigestChange(name, entry.digest, entry.digest,
                                                     choice.mode, str(choice)))
                return narrowed
            if choice.mode == "single":
                child = single_child(index, choice)
                narrowed = Descriptor(media_type=child.media_type, digest=child.digest,
                                      size=child.size, artifact_type=child.artifact_type,
                                      annotations={REF_NAME: name, CONTAINERD_NAME: name})
            else:
                raw = strip_index(index, choice)
                digest = Digest.of(raw)
                parsed = parse_manifest(raw, index.media_type, digest=digest)
                narrowed = Descriptor(media_type=parsed.media_type, digest=digest,
                                      size=len(raw), artifact_type=parsed.artifact_type,
                                      annotations={REF_NAME: name, CONTAINERD_NAME: name})
                with self._lock:
                    self._raw.setdefault(digest, (raw, parsed.media_type))
                    self._where.setdefault(digest, self._where[entry.digest])
        except ManifestError as exc:
            raise ManifestError(f"{reference}: {exc}") from exc
        with self._lock:
            self._entries[name] = narrowed
            self.changed.append(DigestChange(name, entry.digest, narrowed.digest,
                                             choice.mode, str(choice)))
        return narrowed

"""Platform selection in multi-arch indexes: parse ``OS/ARCH[/VARIANT]``, pick an
index's children, write the stripped index, and read the sparse index annotation. No I/O.

A chosen platform without a variant matches every variant of its architecture
(``linux/arm64`` matches ``linux/arm64/v8``); with one, only that variant. An
attestation manifest (BuildKit: ``vnd.docker.reference.type: attestation-manifest``) is
kept when the manifest it refers to (``vnd.docker.reference.digest``) is kept.

A sparse index is the original index, bytes and digest unchanged, of which a bundle
holds only the chosen children: its ``index.json`` entry carries :data:`SPARSE` (the
chosen platforms), and :func:`kept_children` is the one rule that says which children
of such an index are there (the child filter of :func:`bundler.oci.graph.walk`).

Spec: image-spec ``image-index.md`` (``platform``), ``annotations.md``; BuildKit
attestation storage (``vnd.docker.reference.*``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ManifestError
from .content import INDEX_MEDIA_TYPES, Descriptor, Index, Platform

__all__ = ["PLATFORMS", "PLATFORM_MODES", "SOURCE_DIGEST", "SPARSE", "PlatformChoice",
           "choose_children", "keep_children", "kept_children", "parse_platform",
           "single_child", "sparse_annotations", "sparse_choice", "strip_index"]

#: ``--platform-mode`` values this version implements.
PLATFORM_MODES = ("strip", "sparse", "single")
#: Annotation of a stripped index: the digest of the index it was made from.
SOURCE_DIGEST = "dev.bundler.platforms.source-digest"
#: Annotation of a stripped index: the platforms kept, comma-separated.
PLATFORMS = "dev.bundler.platforms"
#: Annotation of an ``index.json`` entry whose index is sparse: the chosen platforms,
#: comma-separated (``linux/amd64,linux/arm64``); only their children are in the bundle.
SPARSE = "dev.bundler.platforms.sparse"
_ATTESTATION = "attestation-manifest"
_PART = re.compile(r"[a-z0-9][a-z0-9._-]*")


def parse_platform(text: str) -> Platform:
    """``linux/amd64``, ``linux/arm64/v8`` -> a :class:`Platform`.

    Raises:
        ValueError: not ``OS/ARCH[/VARIANT]`` in lowercase letters, digits, ``._-``.
    """
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(_PART.fullmatch(p) for p in parts):
        raise ValueError(f"{text!r} is not OS/ARCH[/VARIANT] (e.g. linux/amd64, "
                         "linux/arm64/v8) or all")
    return Platform(os=parts[0], architecture=parts[1],
                    variant=parts[2] if len(parts) == 3 else None)


@dataclass(frozen=True)
class PlatformChoice:
    """The platforms to keep of each index, and how.

    Attributes:
        platforms: the chosen platforms (none: all, the index untouched).
        mode: ``strip`` (a new index of the chosen children), ``sparse`` (the index
            unchanged, only the chosen children's content) or ``single`` (the one chosen
            child manifest instead of the index).
    """

    platforms: tuple[Platform, ...] = ()
    mode: str = "strip"

    def matches(self, platform: Platform | None) -> bool:
        """Whether an index child of ``platform`` is chosen."""
        if platform is None:
            return False
        return any(p.os == platform.os and p.architecture == platform.architecture and
                   (p.variant is None or p.variant == platform.variant)
                   for p in self.platforms)

    def __str__(self) -> str:
        return ",".join(str(p) for p in self.platforms) or "all"


def choose_children(index: Index, choice: PlatformChoice) -> list[Descriptor]:
    """The children of ``index`` that ``choice`` keeps, in index order: the chosen
    platforms' manifests and the attestation manifests that refer to them.

    Raises:
        ManifestError: no child is of a chosen platform (names those the index has).
    """
    return keep_children(index.manifests, choice, f"index {index.digest}")


def keep_children(children: Sequence[Descriptor], choice: PlatformChoice,
                  what: str) -> list[Descriptor]:
    """:func:`choose_children` over an index's child descriptors.

    Args:
        children: the ``manifests`` of an index, in order.
        choice: the platforms to keep.
        what: the index, for the error (``index sha256:...``).

    Raises:
        ManifestError: no child is of a chosen platform (names those there are).
    """
    kept = [d for d in children if choice.matches(d.platform)
            and d.annotations.get("vnd.docker.reference.type") != _ATTESTATION]
    if not kept:
        has = sorted({str(d.platform) for d in children if d.platform and
                      d.annotations.get("vnd.docker.reference.type") != _ATTESTATION})
        raise ManifestError(f"{what} has no manifest for {choice} (it has "
                            f"{', '.join(has) or 'no platforms'})")
    digests = {str(d.digest) for d in kept}
    return [d for d in children if d in kept or (
        d.annotations.get("vnd.docker.reference.type") == _ATTESTATION
        and d.annotations.get("vnd.docker.reference.digest") in digests)]


def sparse_choice(top: Descriptor) -> PlatformChoice | None:
    """The platforms a sparse index holds, from its ``index.json`` entry's
    :data:`SPARSE` annotation; None when the entry has none (a whole index).

    Raises:
        ManifestError: the annotation is on no index, or is no list of
        ``OS/ARCH[/VARIANT]``.
    """
    value = top.annotations.get(SPARSE)
    if value is None:
        return None
    if top.media_type not in INDEX_MEDIA_TYPES:
        raise ManifestError(f"{top.digest}: annotation {SPARSE} on a {top.media_type or 'descriptor'}"
                            ", not on an index")
    try:
        platforms = tuple(parse_platform(p) for p in value.split(","))
    except ValueError as exc:
        raise ManifestError(f"index {top.digest}: annotation {SPARSE}: {exc}") from None
    return PlatformChoice(platforms, "sparse")


def sparse_annotations(top: Descriptor) -> dict[str, str]:
    """The :data:`SPARSE` annotation of a descriptor, as a map (empty if none)."""
    value = top.annotations.get(SPARSE)
    return {} if value is None else {SPARSE: value}


def kept_children(top: Descriptor, children: Sequence[Descriptor]) -> list[Descriptor]:
    """The children of an image's top index that its bundle holds: those of the
    platforms its :data:`SPARSE` annotation names (and their attestations), or every
    child (no annotation). The child filter of :func:`bundler.oci.graph.walk` and
    :func:`bundler.oci.graph.visit_reachable`.

    Args:
        top: the image's top descriptor (its ``index.json`` entry, or a resolved
            reference carrying the annotation).
        children: the index's ``manifests``.

    Raises:
        ManifestError: an unreadable annotation; no child of the platforms it names.
    """
    choice = sparse_choice(top)
    if choice is None:
        return list(children)
    return keep_children(children, choice, f"sparse index {top.digest}")


def strip_index(index: Index, choice: PlatformChoice) -> bytes:
    """The bytes of a new index holding only the children ``choice`` keeps.

    Every other field of the index is kept as it was; the kept descriptors are copied as
    read. Its annotations gain :data:`SOURCE_DIGEST` (the original index's digest) and
    :data:`PLATFORMS`.

    Raises:
        ManifestError: no child of a chosen platform; the index is no JSON object.
    """
    keep = {id(d) for d in choose_children(index, choice)}
    doc = json.loads(index.raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        raise ManifestError(f"index {index.digest}: no manifests list")
    doc["manifests"] = [raw for raw, d in zip(doc["manifests"], index.manifests, strict=True)
                        if id(d) in keep]
    annotations = dict(doc.get("annotations") or {})
    annotations[SOURCE_DIGEST] = str(index.digest)
    annotations[PLATFORMS] = str(choice)
    doc["annotations"] = annotations
    return json.dumps(doc, indent=2).encode()


def single_child(index: Index, choice: PlatformChoice) -> Descriptor:
    """The one child manifest of the chosen platform (``single`` mode).

    Raises:
        ManifestError: none, or several (say which).
    """
    kept = [d for d in choose_children(index, choice)
            if d.annotations.get("vnd.docker.reference.type") != _ATTESTATION]
    if len(kept) > 1:
        raise ManifestError(f"index {index.digest} has {len(kept)} manifests for {choice} "
                            f"({', '.join(str(d.platform) for d in kept)}); name one variant")
    return kept[0]

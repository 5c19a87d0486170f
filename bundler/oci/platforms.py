"""Platform selection in multi-arch indexes: parse ``OS/ARCH[/VARIANT]``, pick an
index's children, and write the stripped index. No I/O.

A chosen platform without a variant matches every variant of its architecture
(``linux/arm64`` matches ``linux/arm64/v8``); with one, only that variant. An
attestation manifest (BuildKit: ``vnd.docker.reference.type: attestation-manifest``) is
kept when the manifest it refers to (``vnd.docker.reference.digest``) is kept.

Spec: image-spec ``image-index.md`` (``platform``), ``annotations.md``; BuildKit
attestation storage (``vnd.docker.reference.*``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..errors import ManifestError
from .content import Descriptor, Index, Platform

__all__ = ["PLATFORMS", "PLATFORM_MODES", "SOURCE_DIGEST", "PlatformChoice",
           "choose_children", "parse_platform", "single_child", "strip_index"]

#: ``--platform-mode`` values this version implements.
PLATFORM_MODES = ("strip", "single")
#: Annotation of a stripped index: the digest of the index it was made from.
SOURCE_DIGEST = "dev.bundler.platforms.source-digest"
#: Annotation of a stripped index: the platforms kept, comma-separated.
PLATFORMS = "dev.bundler.platforms"
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
        mode: ``strip`` (a new index of the chosen children) or ``single`` (the one
            chosen child manifest instead of the index).
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
    kept = [d for d in index.manifests if choice.matches(d.platform)
            and d.annotations.get("vnd.docker.reference.type") != _ATTESTATION]
    if not kept:
        has = sorted({str(d.platform) for d in index.manifests if d.platform and
                      d.annotations.get("vnd.docker.reference.type") != _ATTESTATION})
        raise ManifestError(f"index {index.digest} has no manifest for {choice} (it has "
                            f"{', '.join(has) or 'no platforms'})")
    digests = {str(d.digest) for d in kept}
    return [d for d in index.manifests if d in kept or (
        d.annotations.get("vnd.docker.reference.type") == _ATTESTATION
        and d.annotations.get("vnd.docker.reference.digest") in digests)]


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

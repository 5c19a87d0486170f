"""``bundler list``: images with their referrers (signatures, attestations, SBOMs)
under them, as table rows or JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import bundle as api

__all__ = ["listed_json", "with_referrers"]


def with_referrers(images: list[api.BundleImage],
                   indent: str = "") -> Iterator[tuple[api.BundleImage, str]]:
    """Each image, then its referrers (recursively), with the prefix its table row
    gets (``"  referrer: "`` per level)."""
    for image in images:
        yield image, indent
        yield from with_referrers(image.referrers, "  " + indent if indent else "  referrer: ")


def listed_json(image: api.BundleImage) -> dict[str, Any]:
    """An image as ``list --json`` shows it: its referrers nested under ``referrers``
    (each with ``subject`` and ``scheme``); ``"sparse": true`` for a sparse index."""
    out: dict[str, Any] = {"reference": image.name, "digest": str(image.digest),
                           "mediaType": image.media_type, "platforms": image.platforms,
                           "size": image.size}
    if image.sparse:  # the index is the original, the bundle holds these platforms only
        out["sparse"] = True
    if image.subject is not None:
        out["subject"], out["scheme"] = str(image.subject), image.scheme
    if image.referrers:
        out["referrers"] = [listed_json(r) for r in image.referrers]
    return out

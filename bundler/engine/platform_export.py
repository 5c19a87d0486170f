"""An export that keeps only some platforms of each multi-arch index (``--platform``).

The export engine unchanged, reading through a
:class:`~bundler.stores.platform_source.PlatformSource` instead of a plain registry
source: ``strip`` writes a new index of the chosen platforms (its children keep their
digests), ``single`` stores the chosen platform's manifest itself.

Spec: image-spec ``image-index.md``, ``image-layout.md``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence

from ..events import Reporter
from ..oci.platforms import PlatformChoice
from ..oci.reference import Reference
from ..registry.client import TransportOptions
from ..stores.platform_source import DigestChange, PlatformSource
from ..stores.registry import RegistrySource
from .export_sources import StoreImage
from .exporting import ExportResult, export_from_store, unique_references
from .parallel import ClientPool
from .receipts import Receipt

__all__ = ["DigestChange", "PlatformSources", "export_platforms"]


class PlatformSources:
    """Makes a mirror's source store (``make_source`` of
    :func:`bundler.engine.mirroring.mirror_images`): a plain
    :class:`~bundler.stores.registry.RegistrySource` when no platform is chosen, else a
    :class:`~bundler.stores.platform_source.PlatformSource`, whose digest changes it
    keeps.

    Args:
        choice: the platforms for every image, or None (all).
        choices: reference (``str``) -> its own choice.
    """

    def __init__(self, choice: PlatformChoice | None,
                 choices: Mapping[str, PlatformChoice] | None = None) -> None:
        self.choice = choice
        self.choices = dict(choices or {})
        self._made: list[PlatformSource] = []

    def __call__(self, clients: ClientPool) -> RegistrySource:
        if self.choice is None and not self.choices:
            return RegistrySource(clients)
        source = PlatformSource(clients, self.choice or PlatformChoice(), self.choices)
        self._made.append(source)
        return source

    @property
    def changed(self) -> list[DigestChange]:
        """The references stored under another digest than the registry's, sorted."""
        return sorted((c for s in self._made for c in s.changed), key=lambda c: c.reference)


def export_platforms(
    references: Sequence[str | Reference],
    output: str | os.PathLike[str],
    choice: PlatformChoice,
    *,
    choices: Mapping[str, PlatformChoice] | None = None,
    format: str | None = None,
    split_size: int | None = None,
    compression_level: int = 3,
    options: TransportOptions | None = None,
    jobs: int = 8,
    reporter: Reporter | None = None,
    stop: threading.Event | None = None,
    keep_going: bool = False,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    changed: list[DigestChange] | None = None,
    since: Receipt | None = None,
) -> ExportResult:
    """Export as :func:`bundler.export_bundle`, each index narrowed to ``choice``.

    Args:
        choice: the platforms and the mode (no platforms: indexes kept whole).
        choices: reference (``str``) -> its own choice (an image-set entry's
            ``platforms``). The others as :func:`bundler.export_bundle`.
        changed: receives a :class:`DigestChange` for each reference stored under
            another digest than the registry's (each narrowed index), even when the
            export fails for other images.
        since: a base bundle's receipt: a differential bundle (as
            :func:`bundler.export_bundle`).

    Returns:
        An :class:`ExportResult`.

    Raises:
        What :func:`bundler.export_bundle` raises; an index without a manifest of a
        chosen platform fails its image (TransferError wrapping a ManifestError).
    """
    images = [StoreImage.of(ref) for ref in unique_references(references)]
    with ClientPool(options) as clients:
        source = PlatformSource(clients, choice, choices)
        try:
            return export_from_store(source, images, output, format=format,
                                     split_size=split_size,
                                     compression_level=compression_level, jobs=jobs,
                                     reporter=reporter, stop=stop, keep_going=keep_going,
                                     wait=wait, on_wait=on_wait, since=since)
        finally:
            if changed is not None:
                changed.extend(sorted(source.changed, key=lambda c: c.reference))

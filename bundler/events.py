"""Progress as plain events sent to a reporter. The engine never draws anything.

An event says what happened to one piece of content (``kind`` = ``blob``, ``manifest``
or ``image``): ``state`` is ``start``, ``progress``, ``done``, ``skipped``, ``mounted``
or ``failed``; ``done``/``total`` are bytes (for ``image`` events, ``total`` is the
image's bytes).

One ``plan`` event (state ``start``) comes before the first blob moves: ``total`` is
the bytes of the blobs the run will move unless the destination turns out to have them
(each blob once per destination registry), ``images`` the images it will copy. A blob
that then needs no transfer is reported ``skipped`` (or only ``mounted``).

A ``wait`` event (state ``start``) comes before every wait of a second or more between
retries: ``name`` is the registry, ``total`` the seconds to wait, ``detail`` why (e.g. a
``Retry-After`` the registry sent).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Event", "NullReporter", "Reporter", "Tally"]


@dataclass(frozen=True)
class Event:
    """One progress event.

    Attributes:
        kind: ``blob``, ``manifest``, ``image``, ``plan`` or ``wait``.
        name: the digest (blob, manifest), the image reference, ``export``/``import``
            (plan), or the registry (wait).
        state: ``start``, ``progress``, ``done``, ``skipped``, ``mounted`` or ``failed``.
        done: ``progress``: the bytes moved since the item's previous event (add them
            up; ``--progress json`` prints the running sum); ``done``: the item's bytes.
        total: the item's size in bytes (plan: the bytes to move; wait: seconds).
        detail: free text (e.g. the destination repository, an error).
        images: plan only: how many images the run copies.
    """

    kind: str
    name: str
    state: str
    done: int = 0
    total: int = 0
    detail: str = ""
    images: int = 0


class Reporter(Protocol):
    """Receives events; must be thread-safe (workers call it concurrently)."""

    def __call__(self, event: Event) -> None: ...


class NullReporter:
    """Drops every event."""

    def __call__(self, event: Event) -> None:
        return None


class Tally:
    """A reporter that counts what happened, for summaries and tests; can forward.

    Attributes:
        transferred, skipped, mounted: blob counts.
        bytes_transferred: blob bytes moved over the wire.
        bytes_done: bytes of the blobs moved completely (``done``).
    """

    def __init__(self, forward: Reporter | None = None) -> None:
        self.forward = forward
        self._lock = threading.Lock()
        self.transferred = 0
        self.skipped = 0
        self.mounted = 0
        self.failed = 0
        self.bytes_transferred = 0
        self.bytes_done = 0
        self.manifests = 0
        self.images_done = 0

    def __call__(self, event: Event) -> None:
        with self._lock:
            if event.kind == "blob":
                if event.state == "progress":
                    self.bytes_transferred += event.done
                elif event.state == "done":
                    self.transferred += 1
                    self.bytes_done += event.total
                elif event.state == "skipped":
                    self.skipped += 1
                elif event.state == "mounted":
                    self.mounted += 1
                elif event.state == "failed":
                    self.failed += 1
            elif event.kind == "manifest" and event.state == "done":
                self.manifests += 1
            elif event.kind == "image" and event.state == "done":
                self.images_done += 1
        if self.forward is not None:
            self.forward(event)

"""Progress reporters for the command line (the engine only emits events).

- ``bar``: tqdm bars on a terminal: one overall bar (bytes, rate, ETA) and one bar for
  each of the largest transfers in flight.
- ``plain``: one line per finished image and per large finished blob (for logs).
- ``json``: one JSON object per event, per line (for machines).
- ``none``: nothing.
``auto`` picks ``bar`` when stderr is a terminal, else ``plain``.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

from .progress import Event, Tally

__all__ = ["make_reporter"]

_BIG_BLOB = 8 << 20
_MAX_BARS = 4


class _Base:
    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        self.tally(event)
        with self.lock:
            self.show(event)

    def show(self, event: Event) -> None:
        return None

    def close(self) -> None:
        return None


class _Json(_Base):
    def show(self, event: Event) -> None:
        doc: dict[str, Any] = {"kind": event.kind, "name": event.name, "state": event.state,
                               "done": event.done, "total": event.total}
        if event.detail:
            doc["detail"] = event.detail
        sys.stderr.write(json.dumps(doc) + "\n")


class _Plain(_Base):
    def show(self, event: Event) -> None:
        if event.kind == "image" and event.state in ("done", "skipped"):
            verb = "done" if event.state == "done" else "already there"
            target = f" -> {event.detail}" if event.detail else ""
            sys.stderr.write(f"image {event.name}{target}: {verb}\n")
        elif event.kind == "blob" and event.state == "done" and event.total >= _BIG_BLOB:
            sys.stderr.write(f"blob {event.name[:19]}: {event.total} bytes\n")
        elif event.kind == "blob" and event.state == "failed":
            sys.stderr.write(f"blob {event.name}: failed: {event.detail}\n")


class _Bars(_Base):
    def __init__(self, tally: Tally) -> None:
        super().__init__(tally)
        from tqdm import tqdm

        self._tqdm = tqdm
        self.overall = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024,
                            desc="total", position=0, dynamic_ncols=True, leave=True)
        self.bars: dict[str, Any] = {}
        self.images_done = 0

    def show(self, event: Event) -> None:
        if event.kind == "blob":
            if event.state == "start":
                self.overall.total += event.total
                self.overall.refresh()
                if event.total >= _BIG_BLOB and len(self.bars) < _MAX_BARS:
                    self.bars[event.name] = self._tqdm(
                        total=event.total, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=event.name[7:19], position=len(self.bars) + 1, leave=False,
                        dynamic_ncols=True)
            elif event.state == "progress":
                self.overall.update(event.done)
                bar = self.bars.get(event.name)
                if bar is not None:
                    bar.update(event.done)
            elif event.state in ("done", "failed"):
                bar = self.bars.pop(event.name, None)
                if bar is not None:
                    bar.close()
        elif event.kind == "image" and event.state in ("done", "skipped"):
            self.images_done += 1
            self.overall.set_postfix_str(f"{self.images_done} images", refresh=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.overall.close()


def make_reporter(mode: str, tally: Tally) -> _Base:
    """A reporter for ``--progress`` MODE that also feeds ``tally``."""
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "plain"
    return {"bar": _Bars, "plain": _Plain, "json": _Json}.get(mode, _Base)(tally)

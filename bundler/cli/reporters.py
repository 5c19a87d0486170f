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

from ..events import Event, Tally
from ..termsafe import escape
from .summary import human, plural, quiet_stream

__all__ = ["make_reporter"]

_BIG_BLOB = 8 << 20
_MAX_BARS = 4


class _Base:
    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.lock = threading.Lock()
        self.gone = False  # stderr's reader stopped reading: show nothing more

    def __call__(self, event: Event) -> None:
        self.tally(event)
        with self.lock:
            if self.gone:
                return
            try:
                self.show(event)
            except BrokenPipeError:  # the reader of stderr went away: the work goes on
                self.gone = True
                quiet_stream(sys.stderr)

    def show(self, event: Event) -> None:
        return None

    def close(self) -> None:
        return None


class _Json(_Base):
    """``done`` of a ``progress`` line is the bytes moved so far for that item (the sum of
    the engine's increments since the item's ``start``)."""

    def __init__(self, tally: Tally) -> None:
        super().__init__(tally)
        self.moved: dict[str, int] = {}

    def show(self, event: Event) -> None:
        done = event.done
        if event.kind == "blob":
            if event.state == "start":
                self.moved[event.name] = 0
            elif event.state == "progress":
                done = self.moved[event.name] = self.moved.get(event.name, 0) + event.done
            elif event.state in ("done", "failed"):
                self.moved.pop(event.name, None)
        doc: dict[str, Any] = {"kind": event.kind, "name": event.name, "state": event.state,
                               "done": done, "total": event.total}
        if event.detail:
            doc["detail"] = event.detail
        if event.kind == "plan":
            doc["images"] = event.images
        sys.stderr.write(json.dumps(doc) + "\n")


class _Plain(_Base):
    def show(self, event: Event) -> None:
        if event.kind == "plan":
            sys.stderr.write(f"{escape(event.name)}: {plural(event.images, 'image')}, "
                             f"up to {human(event.total)} to transfer\n")
        elif event.kind == "image" and event.state in ("done", "skipped"):
            verb = "done" if event.state == "done" else "already there"
            target = f" -> {escape(event.detail)}" if event.detail else ""
            sys.stderr.write(f"image {escape(event.name)}{target}: {verb}\n")
        elif event.kind == "blob" and event.state == "done" and event.total >= _BIG_BLOB:
            sys.stderr.write(f"blob {escape(event.name[:19])}: {human(event.total)}\n")
        elif event.kind == "blob" and event.state == "failed":
            sys.stderr.write(f"blob {escape(event.name)}: failed: {escape(event.detail)}\n")
        elif event.kind == "wait":
            sys.stderr.write(f"waiting for {escape(event.name)}: {escape(event.detail)}\n")


class _Bars(_Base):
    """Sizes and rates are in units of 1000 (``MB`` is 10**6 bytes, as in the summary's
    MB/s). The overall bar's total is the plan's bytes once the ``plan`` event came (minus
    the blobs that turn out to need no transfer, plus any blob sent twice); before it,
    the sum of the transfers started."""

    def __init__(self, tally: Tally) -> None:
        super().__init__(tally)
        from tqdm import tqdm

        self._tqdm = tqdm
        self.overall = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1000,
                            desc="total", position=0, dynamic_ncols=True, leave=True)
        self.bars: dict[str, Any] = {}
        self.images_done = 0
        self.images = 0
        self.planned = False
        self.started: set[str] = set()
        self.settled: set[str] = set()

    def _grow(self, size: int) -> None:
        self.overall.total = max(0, self.overall.total + size)
        self.overall.refresh()

    def _images(self) -> None:
        count = f"{self.images_done}/{self.images}" if self.images else str(self.images_done)
        self.overall.set_postfix_str(f"{count} images", refresh=True)

    def show(self, event: Event) -> None:
        if event.kind == "plan":
            self.planned, self.images = True, event.images
            self.overall.total = event.total
            self.overall.refresh()
            self._images()
        elif event.kind == "blob":
            self._blob(event)
        elif event.kind == "image" and event.state in ("done", "skipped"):
            self.images_done += 1
            self._images()
        elif event.kind == "wait":
            self._tqdm.write(f"waiting for {event.name}: {event.detail}", file=sys.stderr)

    def _blob(self, event: Event) -> None:
        name = event.name
        if event.state == "start":
            if not self.planned or name in self.started:
                self._grow(event.total)  # no plan yet, or a second upload of the blob
            elif name in self.settled:
                self.settled.discard(name)  # a refused mount: uploaded after all
                self._grow(event.total)
            self.started.add(name)
            if event.total >= _BIG_BLOB and len(self.bars) < _MAX_BARS:
                self.bars[name] = self._tqdm(
                    total=event.total, unit="B", unit_scale=True, unit_divisor=1000,
                    desc=escape(name[7:19]), position=len(self.bars) + 1, leave=False,
                    dynamic_ncols=True)
        elif event.state == "progress":
            self.overall.update(event.done)
            bar = self.bars.get(name)
            if bar is not None:
                bar.update(event.done)
        elif event.state in ("done", "failed"):
            bar = self.bars.pop(name, None)
            if bar is not None:
                bar.close()
        elif (event.state in ("skipped", "mounted") and self.planned
              and name not in self.started and name not in self.settled):
            self.settled.add(name)  # planned, but it needs no transfer
            self._grow(-event.total)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.overall.close()


def make_reporter(mode: str, tally: Tally) -> _Base:
    """A reporter for ``--progress`` MODE that also feeds ``tally``."""
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "plain"
    return {"bar": _Bars, "plain": _Plain, "json": _Json}.get(mode, _Base)(tally)

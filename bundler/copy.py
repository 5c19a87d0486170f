"""Plan and execute: the content graph of images, deduplicated by digest, and the
concurrent runner that moves it.

A plan walks index -> manifests -> config and layers and keys everything by digest, so
a blob shared by many images moves once. Execution moves blobs first (concurrently, up
to ``jobs`` at a time), then manifests children-first, then tags.

Spec: image-spec ``image-index.md`` and ``manifest.md`` (what a manifest references);
distribution-spec "Pushing manifests" (blobs must exist before the manifest).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TypeVar

from .content import Descriptor, Index, Manifest
from .digest import Digest
from .errors import Cancelled, TransferError
from .naming import entry_name
from .registry import RegistryClient, TransportOptions

__all__ = ["ClientPool", "ImagePlan", "raise_first", "run_parallel", "visit_reachable", "walk"]

T = TypeVar("T")


@dataclass
class ImagePlan:
    """Everything one image needs, in push order.

    Attributes:
        name: the image as the user knows it (a reference or layout name).
        descriptor: the top-level descriptor (manifest or index).
        manifests: (descriptor, raw bytes, parsed) of every manifest and index reachable,
            children before parents; the top-level one is last.
        blobs: every config and layer descriptor, keyed by digest.
    """

    name: str
    descriptor: Descriptor
    manifests: list[tuple[Descriptor, Manifest | Index]] = field(default_factory=list)
    blobs: dict[Digest, Descriptor] = field(default_factory=dict)

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
        """``os/arch[/variant]`` of the index children that name a real platform."""
        top = self.top
        if not isinstance(top, Index):
            return []
        return [
            str(d.platform)
            for d in top.manifests
            if d.platform and d.platform.os != "unknown" and d.platform.architecture != "unknown"
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
) -> ImagePlan:
    """Load an image's manifests depth-first and collect its blobs.

    Args:
        top: the descriptor of the image's manifest or index.
        load: returns the parsed (and digest-checked) manifest a descriptor points at.
        name: the image name for the plan and for errors.
        pool: loads the children of an index concurrently when given.

    Returns:
        The :class:`ImagePlan`, manifests in children-first order.

    Raises:
        Whatever ``load`` raises; ManifestError for a reference cycle.
    """
    plan = ImagePlan(name=name, descriptor=top)
    seen: set[Digest] = set()

    def visit(descriptor: Descriptor, item: Manifest | Index, depth: int) -> None:
        if depth > MAX_NESTING:
            from .errors import ManifestError

            raise ManifestError(f"{name}: indexes nested deeper than {MAX_NESTING} levels")
        if isinstance(item, Index):
            children = [c for c in item.manifests if c.digest not in seen]
            seen.update(c.digest for c in children)
            loaded = list(pool.map(load, children)) if pool and len(children) > 1 else [
                load(c) for c in children
            ]
            for child, child_item in zip(children, loaded, strict=True):
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

    Returns:
        The number of images (entries).

    Spec: image-spec ``image-layout.md`` (``index.json``), ``image-index.md``, ``manifest.md``.
    """
    under: dict[Digest, list[Descriptor]] = {}
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
            elif reached is None:
                continue  # its content was walked for an earlier image
            stack.extend((child, depth + 1) for child in under[descriptor.digest])
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

    images = visit_reachable(entries, visit, reached, too_deep=too_deep)
    return images, [f"{name_images(reached[d])}: {why}" for d, why in bad.items()]


def run_parallel(
    tasks: Iterable[T],
    work: Callable[[T], object],
    *,
    jobs: int,
    keep_going: bool = False,
    stop: threading.Event | None = None,
) -> dict[T, BaseException]:
    """Run ``work`` on every task with ``jobs`` threads.

    Args:
        tasks: hashable task values.
        work: the function; it should check ``stop`` between chunks to end early.
        jobs: thread count (>= 1).
        keep_going: run every task even after failures; else stop at the first failure.
        stop: set when the run should end (first failure, Ctrl-C); tasks not yet started
            are skipped.

    Returns:
        The failures, task -> exception (empty when all succeeded).
    """
    stop = stop or threading.Event()
    failures: dict[T, BaseException] = {}

    def guarded(task: T) -> object:
        if stop.is_set():
            raise Cancelled("cancelled")
        return work(task)

    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="bundler")
    futures: dict[Future, T] = {}
    try:
        futures = {pool.submit(guarded, task): task for task in tasks}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                exc = future.exception()
                if exc is not None and not isinstance(exc, Cancelled):
                    failures[futures[future]] = exc
            if failures and not keep_going:
                stop.set()
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return failures


def raise_first(failures: dict[T, BaseException], order: Iterable[T]) -> None:
    """Raise the failure of the first task in ``order`` that failed, if any.

    Raises:
        TransferError: naming the task (``str(task)``), caused by its exception.
    """
    for task in order:
        if task in failures:
            exc = failures[task]
            raise TransferError(str(task), exc) from exc


class ClientPool:
    """One :class:`RegistryClient` per registry host, created on first use (thread-safe).

    Args:
        options: the transport options of this side.
    """

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def get(self, registry: str) -> RegistryClient:
        with self._lock:
            client = self._clients.get(registry)
            if client is None:
                client = self._clients[registry] = RegistryClient(registry, self.options)
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

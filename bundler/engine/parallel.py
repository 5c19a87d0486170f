"""The concurrent runner that moves a plan (and :class:`ClientPool`, one registry
client per host, re-exported from :mod:`bundler.registry.pool`).

Execution moves blobs first (concurrently, up to ``jobs`` at a time), then manifests
children-first, then tags; a failure stops the tasks not yet started unless the run
keeps going.

Spec: distribution-spec "Pushing manifests" (blobs must exist before the manifest).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from queue import SimpleQueue
from typing import TypeVar

from ..errors import Cancelled, TransferError
from ..registry.pool import ClientPool  # re-exported: it lives with the registry client

__all__ = ["ClientPool", "raise_first", "run_parallel"]

T = TypeVar("T")

#: Tasks submitted ahead per thread: enough that a thread never waits for the next one,
#: few enough that the futures alive stay a handful whatever the number of tasks.
WINDOW_PER_JOB = 4
_END = object()


def run_parallel(
    tasks: Iterable[T],
    work: Callable[[T], object],
    *,
    jobs: int,
    keep_going: bool = False,
    stop: threading.Event | None = None,
) -> dict[T, BaseException]:
    """Run ``work`` on every task with ``jobs`` threads, in the order given.

    The tasks are taken from ``tasks`` as threads come free (at most ``4 * jobs``
    submitted and not finished at a time), so the cost in memory of the run does not
    grow with the number of tasks; ``tasks`` may be a generator.

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

    jobs = max(1, jobs)
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="bundler")
    queue = iter(tasks)
    running: dict[Future, T] = {}
    finished: SimpleQueue[Future] = SimpleQueue()  # each future once, as it ends

    def submit_more() -> None:
        # a bounded window of submitted tasks: memory stays flat in the number of tasks
        # (one future per task alive at a time, not one per task of the whole run)
        while len(running) < jobs * WINDOW_PER_JOB and not stop.is_set():
            task = next(queue, _END)
            if task is _END:
                return
            future = pool.submit(guarded, task)
            running[future] = task  # type: ignore[index]
            future.add_done_callback(finished.put)

    try:
        submit_more()
        while running:
            future = finished.get()
            task = running.pop(future)
            exc = future.exception()
            if exc is not None and not isinstance(exc, Cancelled):
                failures[task] = exc
            if failures and not keep_going:
                stop.set()
            submit_more()
    except KeyboardInterrupt:  # Ctrl-C: a stalled request is not waited for
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
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

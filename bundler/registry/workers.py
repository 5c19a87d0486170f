"""The thread pool of a run's registry requests, which Ctrl-C does not wait for.

``concurrent.futures.ThreadPoolExecutor`` used as a context manager waits for its
running tasks when the block ends, on an exception too. A registry that stalls a
response keeps a thread in ``recv`` until the read timeout, so Ctrl-C would wait that
long. :func:`worker_pool` waits on a normal end and on an ordinary error (the tasks see
the run's stop event and end soon), and on ``KeyboardInterrupt`` (Ctrl-C, and SIGTERM,
which the commands turn into one) cancels what has not started and returns at once; the
command then ends the process without joining the stalled threads
(``bundler.cli.summary.exit_now``).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

__all__ = ["worker_pool"]


@contextmanager
def worker_pool(jobs: int, name: str = "bundler") -> Iterator[ThreadPoolExecutor]:
    """A ``ThreadPoolExecutor`` of ``max(1, jobs)`` threads named ``name_N``.

    Yields:
        The pool. When the block ends it is shut down: waiting for its tasks, except
        when the block ends with ``KeyboardInterrupt``, which cancels the tasks not yet
        started and propagates without waiting for the running ones.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix=name)
    try:
        yield pool
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)

"""run_parallel takes its tasks as threads come free: what it holds at a time does not
grow with the number of tasks (a 20,000-image run has some 45,000 blob tasks)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from bundler.engine.parallel import WINDOW_PER_JOB, run_parallel
from bundler.errors import TransferError


class Counted:
    """A task generator that counts how many tasks were taken from it."""

    def __init__(self, count: int) -> None:
        self.count, self.taken = count, 0

    def __iter__(self) -> Iterator[int]:
        for task in range(self.count):
            self.taken += 1
            yield task


@pytest.mark.parametrize("jobs", [1, 3, 8])
def test_tasks_are_taken_a_window_ahead_of_the_work(jobs: int) -> None:
    tasks, lock = Counted(5000), threading.Lock()
    ahead: list[int] = []
    ran: list[int] = []

    def work(task: int) -> None:
        with lock:
            ahead.append(tasks.taken - len(ran))  # taken but not yet finished
            ran.append(task)

    assert run_parallel(tasks, work, jobs=jobs) == {}
    assert sorted(ran) == list(range(5000))
    assert max(ahead) <= jobs * WINDOW_PER_JOB
    if jobs == 1:
        assert ran == list(range(5000))  # one thread: exactly the order given


def test_a_failure_stops_taking_tasks() -> None:
    tasks = Counted(10_000)

    def work(task: int) -> None:
        if task == 5:
            raise OSError("disk full")

    failures = run_parallel(tasks, work, jobs=2)
    assert list(failures) == [5] and str(failures[5]) == "disk full"
    assert tasks.taken <= 6 + 2 * WINDOW_PER_JOB  # the rest never left the generator


def test_keep_going_runs_every_task_and_reports_each_failure() -> None:
    def work(task: int) -> None:
        if task % 1000 == 999:
            raise TransferError(f"image {task}", OSError("gone"))

    failures = run_parallel(range(5000), work, jobs=4, keep_going=True)
    assert sorted(failures) == [999, 1999, 2999, 3999, 4999]


def test_stop_set_from_outside_ends_the_run() -> None:
    stop, tasks = threading.Event(), Counted(10_000)

    def work(task: int) -> None:
        if task == 100:
            stop.set()

    assert run_parallel(tasks, work, jobs=4, stop=stop) == {}
    assert tasks.taken <= 101 + 4 * WINDOW_PER_JOB

"""A run's files written by one background thread while training goes on (issue 24).

Only work whose inputs are already copied goes here (a checkpoint's tensors cloned, the metrics
rows so far as a new list), so what is written is what it would have been in the loop's own
thread; the write itself stays atomic (temp file + rename), so a run killed meanwhile leaves the
previous file. Jobs run one at a time, in the order given: a checkpoint's state.json still follows
its tensors, and the next checkpoint the one before it. `wait` returns once every job is done and
raises the first job's error (a full disk is reported, not lost); leaving the `with` block waits too.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class BackgroundWriter:
    """One writer thread, started by the first job."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        """Run job(*args) after the jobs before it; first raise the error of one that has failed."""
        for future in self._pending:
            if future.done() and future.exception() is not None:
                self._pending = []
                raise future.exception()
        self._pending = [f for f in self._pending if not f.done()]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparseae-writer")
        self._pending.append(self._pool.submit(job, *args))

    def wait(self) -> None:
        """Block until every job given so far has finished; raise the first error of one."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if error is None:
                self.wait()
            else:  # the run failed already: let its writes end (the folder may be discarded), keep its error
                for future in self._pending:
                    future.exception()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

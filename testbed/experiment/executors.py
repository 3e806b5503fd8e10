"""Where cells run: one small interface, two implementations (local processes, a Dask cluster).

Each yields result rows as cells finish; each worker process runs its own
reactor through testbed.runtime (cell.ensure_reactor), started once.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import Callable, Iterable, Iterator, Protocol, Sequence


class Executor(Protocol):
    """Runs ``fn(*args)`` for each argument tuple and yields the results as they finish."""

    def run(self, fn: Callable, calls: Sequence[tuple]) -> Iterator: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """``jobs`` worker processes on this machine (spawned, so no parent reactor thread is forked)."""

    def __init__(self, jobs: int = 1):
        self.jobs = max(1, jobs)
        self._pool = concurrent.futures.ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"))
        self._futures: list[concurrent.futures.Future] = []

    def run(self, fn: Callable, calls: Iterable[tuple]) -> Iterator:
        self._futures = [self._pool.submit(fn, *args) for args in calls]
        for future in concurrent.futures.as_completed(self._futures):
            if not future.cancelled():
                yield future.result()

    def cancel(self) -> None:
        for future in self._futures:
            future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """Cells as tasks on a Dask cluster (``--dask tcp://scheduler:8786``, extra ``twisted-testbed[distributed]``)."""

    def __init__(self, address):
        try:
            from distributed import Client
        except ImportError:
            raise RuntimeError("--dask needs dask.distributed: pip install 'twisted-testbed[distributed]'") from None
        self._client = address if isinstance(address, Client) else Client(address)
        self._owns = not isinstance(address, Client)
        self._futures: list = []

    def run(self, fn: Callable, calls: Iterable[tuple]) -> Iterator:
        from distributed import as_completed

        self._futures = [self._client.submit(fn, *args, pure=False) for args in calls]
        for future in as_completed(self._futures):
            if future.status != "cancelled":
                yield future.result()

    def cancel(self) -> None:
        self._client.cancel(self._futures)

    def close(self) -> None:
        if self._owns:
            self._client.close()

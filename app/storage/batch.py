"""Coalesce concurrent point reads into one query per batch.

Under load, hundreds of requests on one process ask for single rows by id at
the same moment. Each lookup on its own costs a pool checkout, a transaction
and a statement — about a millisecond of CPU, far more than the row. A
:class:`BatchLoader` gathers the keys asked for while the event loop runs
one iteration (and while earlier batches are still in the database) and
fetches them with one ``IN (...)`` query.

Consistency: a lookup never joins a batch that has already been sent, so a
read that arrives after a commit on this process always sees that commit —
the same guarantee as one query per request. With no load a batch holds one
key and is sent on the next loop iteration, so latency does not grow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger("watchpost.storage.batch")

Fetch = Callable[[list[K]], Awaitable[Mapping[K, V]]]


class BatchLoader(Generic[K, V]):
    """``await loader.load(key)`` → the value or None; concurrent loads share queries.

    ``fetch(keys)`` runs at most ``max_concurrent`` times at once with at most
    ``max_batch`` distinct keys, and returns a mapping of the keys it found.
    An exception from ``fetch`` reaches every waiter of that batch.
    """

    def __init__(self, fetch: Fetch[K, V], *, max_batch: int = 256, max_concurrent: int = 2) -> None:
        if max_batch < 1 or max_concurrent < 1:
            raise ValueError("max_batch and max_concurrent must be at least 1")
        self._fetch = fetch
        self.max_batch = max_batch
        self.max_concurrent = max_concurrent
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._scheduled = False
        #: Counters for tests and metrics: batches sent and keys asked for.
        self.batches = 0
        self.loads = 0

    async def load(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.create_future()
        waiters = self._waiting.get(key)
        if waiters is None:
            self._waiting[key] = [future]
        else:
            waiters.append(future)
        self.loads += 1
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and len(self._running) < self.max_concurrent:
            self._scheduled = True
            loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._waiting and len(self._running) < self.max_concurrent:
            if len(self._waiting) <= self.max_batch:
                batch, self._waiting = self._waiting, {}
            else:
                keys = list(self._waiting)[: self.max_batch]
                batch = {key: self._waiting.pop(key) for key in keys}
            self.batches += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._waiting:
            self._schedule(asyncio.get_running_loop())

    async def _run(self, batch: dict[K, list[asyncio.Future[V | None]]]) -> None:
        try:
            found = await self._fetch(list(batch))
        except asyncio.CancelledError:
            for waiters in batch.values():
                for future in waiters:
                    future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every waiter, who maps it
            for waiters in batch.values():
                for future in waiters:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, waiters in batch.items():
            value = found.get(key)
            for future in waiters:
                # A waiter whose request was cancelled (deadline, disconnect) is skipped.
                if not future.done():
                    future.set_result(value)

    async def close(self) -> None:
        """Cancel batches in flight and fail anything still waiting (shutdown)."""
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        for waiters in self._waiting.values():
            for future in waiters:
                future.cancel()
        self._waiting.clear()


def padded(keys: list[K]) -> list[K]:
    """``keys`` repeated at the end up to the next power of two.

    ``IN (...)`` renders one placeholder per key, and each distinct count is a
    distinct prepared statement; padding keeps that to a handful.
    """
    size = 1
    while size < len(keys):
        size *= 2
    return keys + [keys[-1]] * (size - len(keys)) if keys else keys

"""BatchLoader: concurrent point reads share queries without ever reading stale data."""

from __future__ import annotations

import asyncio

import pytest

from app.storage.batch import BatchLoader, padded


class Table:
    """A fetch function over a dict that records each batch and can be held open."""

    def __init__(self, rows: dict[int, str]) -> None:
        self.rows = rows
        self.batches: list[list[int]] = []
        self.gate: asyncio.Event | None = None
        self.running = 0
        self.most_running = 0
        self.fail_with: Exception | None = None

    async def fetch(self, keys: list[int]) -> dict[int, str]:
        self.batches.append(list(keys))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            # Read the rows as they are when the query "starts".
            snapshot = {k: self.rows[k] for k in keys if k in self.rows}
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0)
            if self.fail_with is not None:
                raise self.fail_with
            return snapshot
        finally:
            self.running -= 1


async def test_concurrent_loads_share_one_query_and_missing_keys_are_none() -> None:
    table = Table({1: "a", 2: "b", 3: "c"})
    loader = BatchLoader(table.fetch)
    results = await asyncio.gather(*(loader.load(k) for k in (1, 2, 2, 3, 99)))
    assert results == ["a", "b", "b", "c", None]
    assert table.batches == [[1, 2, 3, 99]], "one query, each key once"
    assert (loader.loads, loader.batches) == (5, 1)


async def test_a_lone_load_is_sent_at_once() -> None:
    table = Table({7: "x"})
    loader = BatchLoader(table.fetch)
    assert await asyncio.wait_for(loader.load(7), 1.0) == "x"
    assert table.batches == [[7]]


async def test_a_load_never_joins_a_query_already_sent() -> None:
    """Read-after-write: a load that arrives after the query started must see later data."""
    table = Table({1: "old"})
    table.gate = asyncio.Event()
    loader = BatchLoader(table.fetch, max_concurrent=1)
    first = asyncio.create_task(loader.load(1))
    await asyncio.sleep(0.01)
    assert table.batches == [[1]], "the first query has started"
    table.rows[1] = "new"  # committed after the first query read the row
    second = asyncio.create_task(loader.load(1))
    await asyncio.sleep(0.01)
    assert len(table.batches) == 1, "the second load waits for its own query"
    table.gate.set()
    assert await first == "old"
    assert await second == "new"
    assert table.batches == [[1], [1]]


async def test_batches_are_bounded_in_size_and_concurrency() -> None:
    table = Table({k: str(k) for k in range(100)})
    table.gate = asyncio.Event()
    loader = BatchLoader(table.fetch, max_batch=16, max_concurrent=2)
    tasks = [asyncio.create_task(loader.load(k)) for k in range(100)]
    await asyncio.sleep(0.01)
    assert len(table.batches) == 2 and table.running == 2, "only two queries at once"
    table.gate.set()
    assert await asyncio.gather(*tasks) == [str(k) for k in range(100)]
    assert max(len(b) for b in table.batches) == 16
    assert sorted(k for b in table.batches for k in b) == list(range(100))
    assert table.most_running == 2


async def test_a_failed_query_reaches_every_waiter_and_the_loader_recovers() -> None:
    table = Table({1: "a", 2: "b"})
    loader = BatchLoader(table.fetch)
    table.fail_with = ConnectionError("database went away")
    results = await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results), results
    table.fail_with = None
    assert await asyncio.gather(loader.load(1), loader.load(2)) == ["a", "b"]


async def test_a_cancelled_waiter_does_not_disturb_the_others() -> None:
    table = Table({1: "a"})
    table.gate = asyncio.Event()
    loader = BatchLoader(table.fetch)
    doomed = asyncio.create_task(loader.load(1))
    kept = asyncio.create_task(loader.load(1))
    await asyncio.sleep(0.01)
    doomed.cancel()
    table.gate.set()
    assert await kept == "a"
    with pytest.raises(asyncio.CancelledError):
        await doomed


async def test_close_cancels_what_is_in_flight() -> None:
    table = Table({1: "a"})
    table.gate = asyncio.Event()
    loader = BatchLoader(table.fetch)
    waiting = asyncio.create_task(loader.load(1))
    await asyncio.sleep(0.01)
    await loader.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting


def test_padding_keeps_the_number_of_distinct_statements_small() -> None:
    assert padded([]) == []
    assert padded([5]) == [5]
    assert padded([1, 2, 3]) == [1, 2, 3, 3]
    assert len(padded(list(range(17)))) == 32
    assert {len(padded(list(range(n)))) for n in range(1, 257)} == {1, 2, 4, 8, 16, 32, 64, 128, 256}

"""One contract for every limiter backend (in-process and Redis), plus Redis-only behaviour."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.limits import Limiter, create_limiter
from app.limits.memory import MemoryLimiter
from app.limits.redis import FAIL_CLOSED_RETRY_MS, RedisLimiter

LimiterFactory = Callable[..., Awaitable[Limiter]]
RedisLimiterFactory = Callable[..., Awaitable[RedisLimiter]]


@pytest.fixture
async def redis_admin(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    keys = [key async for key in client.scan_iter(match=redis_prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def make_redis_limiter(
    redis_url: str, redis_prefix: str, redis_admin: aioredis.Redis
) -> AsyncIterator[RedisLimiterFactory]:
    limiters: list[RedisLimiter] = []

    async def make(**kwargs: Any) -> RedisLimiter:
        limiter = RedisLimiter(redis_url, prefix=redis_prefix, **kwargs)
        await limiter.start()
        limiters.append(limiter)
        return limiter

    yield make
    for limiter in limiters:
        await limiter.close()


@pytest.fixture(params=["memory", "redis"])
async def make_limiter(
    request: pytest.FixtureRequest, make_redis_limiter: RedisLimiterFactory
) -> AsyncIterator[LimiterFactory]:
    async def make(**kwargs: Any) -> Limiter:
        if request.param == "memory":
            return MemoryLimiter(**kwargs)
        return await make_redis_limiter(**kwargs)

    yield make


async def hits(limiter: Limiter, user: str, n: int) -> list[int | None]:
    return [await limiter.hit_message(user) for _ in range(n)]


async def test_message_limit_allows_the_budget_then_answers_retry_after(make_limiter: LimiterFactory) -> None:
    limiter = await make_limiter(message_rate_per_minute=10)
    assert await hits(limiter, "u1", 10) == [None] * 10
    retry = await limiter.hit_message("u1")
    assert retry is not None and 0 < retry <= 6000  # one token per 6 s
    assert await limiter.hit_message("u2") is None  # per user


async def test_message_budget_refills_at_the_rate(make_limiter: LimiterFactory) -> None:
    limiter = await make_limiter(message_rate_per_minute=600)
    results = await hits(limiter, "u1", 650)
    allowed = results.count(None)
    assert 600 <= allowed < 650
    retry = await limiter.hit_message("u1")
    assert retry is not None and 0 < retry <= 200  # 10 tokens per second
    await asyncio.sleep(retry / 1000 + 0.3)
    assert await limiter.hit_message("u1") is None


async def test_connection_limit_refuses_at_max_and_release_frees(make_limiter: LimiterFactory) -> None:
    limiter = await make_limiter(max_connections_per_user=3)
    assert [await limiter.acquire_connection("u1", f"c{i}") for i in range(3)] == [True] * 3
    assert await limiter.acquire_connection("u1", "c3") is False
    assert await limiter.acquire_connection("u1", "c0") is True  # already registered
    assert await limiter.acquire_connection("u2", "x0") is True  # per user
    await limiter.release_connection("u1", "c1")
    await limiter.release_connection("u1", "c1")  # twice is harmless
    assert await limiter.acquire_connection("u1", "c3") is True
    assert await limiter.acquire_connection("u1", "c4") is False
    await limiter.refresh_connections("u1", ["c0", "c2", "c3"])
    assert await limiter.acquire_connection("u1", "c4") is False


async def test_a_key_may_have_its_own_connection_limit(make_limiter: LimiterFactory) -> None:
    """Anonymous status-page sockets count per address and per page, each with its own limit."""
    limiter = await make_limiter(max_connections_per_user=2)
    assert [await limiter.acquire_connection("spv:1", f"c{i}", 5) for i in range(5)] == [True] * 5
    assert await limiter.acquire_connection("spv:1", "c5", 5) is False
    assert [await limiter.acquire_connection("u1", f"c{i}") for i in range(3)] == [True, True, False]
    await limiter.release_connection("spv:1", "c0")
    assert await limiter.acquire_connection("spv:1", "c5", 5) is True


async def test_http_bucket_allows_the_burst_then_refills(make_limiter: LimiterFactory) -> None:
    limiter = await make_limiter(http_per_minute=120, http_burst=3)
    assert [await limiter.hit_http("10.0.0.1") for _ in range(3)] == [None] * 3
    retry = await limiter.hit_http("10.0.0.1")
    assert retry is not None and 0 < retry <= 500  # two tokens per second
    assert await limiter.hit_http("10.0.0.2") is None
    await asyncio.sleep(retry / 1000 + 0.3)
    assert await limiter.hit_http("10.0.0.1") is None


async def test_scaled_http_bucket_is_larger_and_refills_faster(make_limiter: LimiterFactory) -> None:
    limiter = await make_limiter(http_per_minute=60, http_burst=2)
    assert [await limiter.hit_http("ip:10.0.0.1", scale=5) for _ in range(10)] == [None] * 10
    retry = await limiter.hit_http("ip:10.0.0.1", scale=5)
    assert retry is not None and 0 < retry <= 200  # five tokens per second
    assert [await limiter.hit_http("user:10.0.0.1") for _ in range(2)] == [None] * 2
    assert await limiter.hit_http("user:10.0.0.1") is not None


async def test_create_limiter_picks_the_backend(redis_url: str, redis_prefix: str) -> None:
    memory = create_limiter(None, message_rate_per_minute=5)
    assert isinstance(memory, MemoryLimiter) and memory.message_rate_per_minute == 5
    remote = create_limiter(redis_url, prefix=redis_prefix, fail_open=False, max_connections_per_user=2)
    assert isinstance(remote, RedisLimiter) and remote.fail_open is False
    assert remote.max_connections_per_user == 2
    await remote.close()


# -- Redis only -----------------------------------------------------------------


async def test_message_limit_reserves_in_batches(make_redis_limiter: RedisLimiterFactory) -> None:
    limiter = await make_redis_limiter(message_rate_per_minute=6000, reserve_batch=20)
    assert await hits(limiter, "u1", 200) == [None] * 200
    # The batch doubles 1, 2, 4, 8, 16, 20...: about a dozen round trips, not 200.
    assert limiter.reservations <= 20


async def test_a_denied_user_does_not_cost_round_trips(make_redis_limiter: RedisLimiterFactory) -> None:
    limiter = await make_redis_limiter(message_rate_per_minute=5, reserve_batch=5)
    await hits(limiter, "u1", 5)
    before = limiter.reservations
    denied = await hits(limiter, "u1", 100)
    assert all(r is not None and r > 0 for r in denied)
    assert limiter.reservations - before <= 1


async def test_two_instances_share_the_message_budget(make_redis_limiter: RedisLimiterFactory) -> None:
    rate, batch = 20, 5
    a = await make_redis_limiter(message_rate_per_minute=rate, reserve_batch=batch)
    b = await make_redis_limiter(message_rate_per_minute=rate, reserve_batch=batch)
    started = time.monotonic()
    allowed = 0
    for i in range(120):
        if await (a if i % 2 else b).hit_message("u1") is None:
            allowed += 1
    refill = math.ceil((time.monotonic() - started) * rate / 60) + 1
    documented_error = 2 * (batch - 1)  # k instances x (reserve_batch - 1)
    assert rate - documented_error <= allowed <= rate + refill + documented_error
    # Either alone would have allowed the whole budget: the budget really is shared.
    assert allowed < 2 * rate


async def test_connections_count_across_instances(make_redis_limiter: RedisLimiterFactory) -> None:
    a = await make_redis_limiter(max_connections_per_user=3)
    b = await make_redis_limiter(max_connections_per_user=3)
    assert await a.acquire_connection("u1", "a1") and await a.acquire_connection("u1", "a2")
    assert await b.acquire_connection("u1", "b1") is True
    assert await b.acquire_connection("u1", "b2") is False
    await a.release_connection("u1", "a1")
    assert await b.acquire_connection("u1", "b2") is True


async def test_a_crashed_instances_connections_expire_and_live_ones_are_refreshed(
    make_redis_limiter: RedisLimiterFactory, redis_url: str, redis_prefix: str
) -> None:
    crashed = RedisLimiter(redis_url, prefix=redis_prefix, max_connections_per_user=3, connection_ttl=0.6)
    await crashed.start()
    assert await crashed.acquire_connection("u1", "dead1") and await crashed.acquire_connection("u1", "dead2")
    await crashed.close()  # stops its heartbeat without releasing: like a crash
    alive = await make_redis_limiter(max_connections_per_user=3, connection_ttl=0.6)
    assert await alive.acquire_connection("u1", "live1") is True
    other = await make_redis_limiter(max_connections_per_user=3, connection_ttl=0.6)
    assert await other.acquire_connection("u1", "x") is False
    await asyncio.sleep(1.5)  # dead ones expired; live1 was refreshed every 0.2 s
    assert await other.acquire_connection("u1", "x") is True
    assert await other.acquire_connection("u1", "y") is True
    assert await other.acquire_connection("u1", "z") is False  # live1 still counts


@pytest.mark.parametrize("fail_open", [True, False])
async def test_unreachable_redis_follows_the_fail_setting(redis_prefix: str, fail_open: bool) -> None:
    seen: list[str] = []

    def hook(operation: str) -> None:
        seen.append(operation)
        raise RuntimeError("a broken metrics hook must not break limits")

    limiter = RedisLimiter(
        "redis://127.0.0.1:1/0",
        prefix=redis_prefix,
        fail_open=fail_open,
        retry_interval=0.0,
        socket_timeout=1.0,
        on_redis_error=hook,
    )
    await limiter.start()
    try:
        message = await limiter.hit_message("u1")
        connection = await limiter.acquire_connection("u1", "c1")
        http = await limiter.hit_http("10.0.0.1")
        await limiter.release_connection("u1", "c1")
        await limiter.refresh_connections("u1", ["c1"])
        if fail_open:
            assert (message, connection, http) == (None, True, None)
        else:
            assert (message, connection, http) == (FAIL_CLOSED_RETRY_MS, False, FAIL_CLOSED_RETRY_MS)
        assert limiter.redis_errors >= 4
        assert {"message", "connection", "http"} <= set(seen)
    finally:
        await limiter.close()
        await limiter.close()  # idempotent


async def test_after_a_failure_redis_is_skipped_for_the_retry_interval(redis_prefix: str) -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0", prefix=redis_prefix, retry_interval=30.0)
    try:
        assert await hits(limiter, "u1", 50) == [None] * 50
        assert limiter.redis_errors == 1
    finally:
        await limiter.close()


async def test_a_connect_storm_beyond_the_pool_waits_instead_of_failing_open(
    make_redis_limiter: RedisLimiterFactory,
) -> None:
    """Hundreds of users connecting and sending their first message at once, through 3 connections."""
    limiter = await make_redis_limiter(
        max_connections=3, max_connections_per_user=1, message_rate_per_minute=1
    )
    users = [f"storm-{i}" for i in range(300)]
    admitted = await asyncio.gather(*(limiter.acquire_connection(u, "c1") for u in users))
    assert all(admitted)
    first = await asyncio.gather(*(limiter.hit_message(u) for u in users))
    assert first == [None] * len(users)
    # Every decision came from Redis: limits still hold, and no call was counted as an outage.
    assert not any(await asyncio.gather(*(limiter.acquire_connection(u, "c2") for u in users)))
    assert all(r is not None for r in await asyncio.gather(*(limiter.hit_message(u) for u in users)))
    assert limiter.redis_errors == 0


async def test_a_pool_busy_past_its_timeout_is_logged_as_such_not_as_an_outage(
    make_redis_limiter: RedisLimiterFactory, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = await make_redis_limiter(max_connections=1, pool_timeout=0.2)
    pool = limiter._redis.connection_pool
    held = await pool.get_connection()  # the only pooled connection
    try:
        with caplog.at_level("WARNING", logger="app.limits.redis"):
            assert await limiter.hit_http("busy") is None  # fail open after the wait
    finally:
        await pool.release(held)
    assert limiter.redis_errors == 1
    assert "No pooled Redis connection was free within 0.2 s (REDIS_POOL_TIMEOUT)" in caplog.text
    assert "unreachable" not in caplog.text


async def test_concurrent_handshakes_of_one_user_at_the_cap_get_exactly_the_cap(
    make_redis_limiter: RedisLimiterFactory, redis_admin: aioredis.Redis, redis_prefix: str
) -> None:
    """A reconnect storm of one user: the registrations share round trips, the cap stays exact."""
    limiter = await make_redis_limiter(max_connections_per_user=3)
    other = await make_redis_limiter(max_connections_per_user=3)  # another instance
    assert await other.acquire_connection("u1", "elsewhere") is True
    admitted = await asyncio.gather(*(limiter.acquire_connection("u1", f"c{i}") for i in range(12)))
    assert sum(admitted) == 2  # the other instance holds the third slot
    assert admitted == [True, True] + [False] * 10  # in the order they asked
    assert limiter.connection_batches < 12  # batched, not one round trip each
    registered = await redis_admin.zrange(f"{redis_prefix}lim:conn:u1", 0, -1)
    assert sorted(registered) == ["c0", "c1", "elsewhere"]
    assert limiter.registered_connections() == {"u1": {"c0", "c1"}}


async def test_batched_releases_free_the_slots(
    make_redis_limiter: RedisLimiterFactory, redis_admin: aioredis.Redis, redis_prefix: str
) -> None:
    limiter = await make_redis_limiter(max_connections_per_user=4)
    users = [f"u{i}" for i in range(20)]
    assert all(
        await asyncio.gather(*(limiter.acquire_connection(u, f"{u}-c{j}") for u in users for j in range(4)))
    )
    batches = limiter.connection_batches
    await asyncio.gather(*(limiter.release_connection(u, f"{u}-c{j}") for u in users for j in range(4)))
    assert limiter.connection_batches - batches < 80  # the closes shared round trips
    assert limiter.registered_connections() == {}
    for u in users:
        assert await redis_admin.zcard(f"{redis_prefix}lim:conn:{u}") == 0
    # Every slot is free again, on this instance and on another one.
    other = await make_redis_limiter(max_connections_per_user=4)
    assert all(
        await asyncio.gather(*(other.acquire_connection(u, f"{u}-n{j}") for u in users for j in range(4)))
    )
    assert not any(await asyncio.gather(*(other.acquire_connection(u, f"{u}-x") for u in users)))


async def test_a_release_queued_before_a_registration_frees_its_slot_first(
    make_redis_limiter: RedisLimiterFactory,
) -> None:
    """A close and the same user's reconnect in one batch: applied in the order they came."""
    limiter = await make_redis_limiter(max_connections_per_user=1)
    assert await limiter.acquire_connection("u1", "old") is True
    batches = limiter.connection_batches
    _released, admitted = await asyncio.gather(
        limiter.release_connection("u1", "old"), limiter.acquire_connection("u1", "new")
    )
    assert admitted is True
    assert limiter.connection_batches == batches + 1  # one round trip for both
    assert await limiter.acquire_connection("u1", "third") is False


async def test_a_handshake_abandoned_while_its_registration_is_in_flight_gives_the_slot_back(
    make_redis_limiter: RedisLimiterFactory, redis_admin: aioredis.Redis, redis_prefix: str
) -> None:
    limiter = await make_redis_limiter(max_connections_per_user=1)
    abandoned = asyncio.create_task(limiter.acquire_connection("u1", "gone"))
    await asyncio.sleep(0)  # queued; the batch is sent on the next turn
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    for _ in range(100):  # the batch returns, then the queued removal is sent
        if await redis_admin.zcard(f"{redis_prefix}lim:conn:u1") == 0 and limiter._batcher is None:
            break
        await asyncio.sleep(0.01)
    assert await redis_admin.zcard(f"{redis_prefix}lim:conn:u1") == 0
    assert limiter.registered_connections() == {}
    assert await limiter.acquire_connection("u1", "next") is True

"""One contract for every broker backend (in-process and Redis), plus Redis-only behaviour."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.broker import Broker, BrokerUnavailable, create_broker
from app.broker.memory import MemoryBroker
from app.broker.redis import RedisBroker
from app.protocol import encode_event

BrokerFactory = Callable[..., Awaitable[Broker]]


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    """Poll until ``check()`` holds; generous because the test machine is shared."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met within the timeout")
        await asyncio.sleep(0.02)


class Recorder:
    """A listener that records what it receives."""

    def __init__(self) -> None:
        self.got: list[tuple[str, int, str]] = []

    def __call__(self, topic: str, seq: int, frame: str) -> None:
        self.got.append((topic, seq, frame))

    @property
    def seqs(self) -> list[int]:
        return [seq for _, seq, _ in self.got]


@pytest.fixture
async def redis_admin(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    keys = [key async for key in client.scan_iter(match=redis_prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def make_broker(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str, redis_admin: aioredis.Redis
) -> AsyncIterator[BrokerFactory]:
    brokers: list[Broker] = []

    async def make(**kwargs: Any) -> Broker:
        broker: Broker
        if request.param == "memory":
            broker = MemoryBroker(**kwargs)
        else:
            broker = RedisBroker(redis_url, prefix=redis_prefix, **kwargs)
        await broker.start()
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        await broker.close()


@pytest.fixture
async def make_redis_broker(
    redis_url: str, redis_prefix: str, redis_admin: aioredis.Redis
) -> AsyncIterator[Callable[..., Awaitable[RedisBroker]]]:
    brokers: list[RedisBroker] = []

    async def make(**kwargs: Any) -> RedisBroker:
        broker = RedisBroker(redis_url, prefix=redis_prefix, **kwargs)
        await broker.start()
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        await broker.close()


async def listen(broker: Broker, topic: str) -> Recorder:
    rec = Recorder()
    broker.add_listener(topic, rec)
    await broker.wait_subscribed(topic)
    return rec


async def origin(broker: Broker, topic: str) -> int:
    """The seq ``topic`` starts from: 0 on Redis, the process's base in memory (see MemoryBroker)."""
    return (await broker.history(topic, 2**62)).current_seq


async def test_seq_strictly_increases_from_the_topics_origin(make_broker: BrokerFactory) -> None:
    broker = await make_broker()
    o = await origin(broker, "t1:monitors")
    assert o == (broker.seq_base if isinstance(broker, MemoryBroker) else 0)
    seqs = [await broker.publish("t1:monitors", "monitors", 900, {"i": i}) for i in range(5)]
    assert seqs == [o + 1, o + 2, o + 3, o + 4, o + 5]
    assert await origin(broker, "t2:monitors") == o  # per topic: t1's events did not move t2
    assert await broker.publish("t2:monitors", "monitors", 900, {}) == o + 1


async def test_listener_gets_the_exact_encoded_frame(make_broker: BrokerFactory) -> None:
    broker = await make_broker()
    rec = await listen(broker, "t1:monitor.7")
    data = {"status": "down", "name": 'quo"te \\ ünïcode ✓', "n": [1, 2.5, None, True]}
    seq = await broker.publish("t1:monitor.7", 'monitor.7"x', 901, data)
    await eventually(lambda: len(rec.got) == 1)
    assert rec.got == [("t1:monitor.7", seq, encode_event('monitor.7"x', 901, seq, data))]


async def test_history_since_returns_exactly_the_later_events_in_order(make_broker: BrokerFactory) -> None:
    broker = await make_broker()
    o = await origin(broker, "t1:incidents")
    for i in range(1, 8):
        await broker.publish("t1:incidents", "incidents", 900, {"i": i})
    result = await broker.history("t1:incidents", o + 4)
    assert result.recovered is True
    assert result.current_seq == o + 7
    assert [seq - o for seq, _ in result.events] == [5, 6, 7]
    assert [frame for _, frame in result.events] == [
        encode_event("incidents", 900, o + i, {"i": i}) for i in (5, 6, 7)
    ]
    full = await broker.history("t1:incidents", o)
    assert full.recovered is True and [seq - o for seq, _ in full.events] == list(range(1, 8))


async def test_history_when_up_to_date_or_ahead(make_broker: BrokerFactory) -> None:
    broker = await make_broker()
    o = await origin(broker, "t1:never")
    empty = await broker.history("t1:never", o)
    assert (empty.events, empty.recovered, empty.current_seq) == ([], True, o)
    await broker.publish("t1:monitors", "monitors", 900, {})
    await broker.publish("t1:monitors", "monitors", 900, {})
    current = await broker.history("t1:monitors", o + 2)
    assert (current.events, current.recovered, current.current_seq) == ([], True, o + 2)
    # A seq the sequence never reached (e.g. held across a reset) cannot be trusted.
    ahead = await broker.history("t1:monitors", o + 9)
    assert (ahead.events, ahead.recovered, ahead.current_seq) == ([], False, o + 2)


async def test_history_overflow_is_not_recovered(make_broker: BrokerFactory) -> None:
    broker = await make_broker(history_size=5)
    o = await origin(broker, "t1:monitors")
    for i in range(1, 13):
        await broker.publish("t1:monitors", "monitors", 900, {"i": i})
    lost = await broker.history("t1:monitors", o + 2)
    assert lost.recovered is False
    assert lost.current_seq == o + 12
    assert [seq - o for seq, _ in lost.events] == [8, 9, 10, 11, 12]
    covered = await broker.history("t1:monitors", o + 7)
    assert covered.recovered is True and [seq - o for seq, _ in covered.events] == [8, 9, 10, 11, 12]


async def test_history_expires_after_ttl(make_broker: BrokerFactory) -> None:
    broker = await make_broker(history_ttl=0.3)
    o = await origin(broker, "t1:monitors")
    for _ in range(3):
        await broker.publish("t1:monitors", "monitors", 900, {})
    assert [seq - o for seq, _ in (await broker.history("t1:monitors", o)).events] == [1, 2, 3]
    await asyncio.sleep(0.6)
    expired = await broker.history("t1:monitors", o + 1)
    assert (expired.events, expired.recovered, expired.current_seq) == ([], False, o + 3)
    # The sequence itself survives the history: the next event is 4, not 1.
    assert await broker.publish("t1:monitors", "monitors", 900, {}) == o + 4
    assert (await broker.history("t1:monitors", o + 3)).events[0][0] == o + 4


async def test_remove_listener_stops_delivery(make_broker: BrokerFactory) -> None:
    broker = await make_broker()
    o = await origin(broker, "t1:monitors")
    gone, kept = await listen(broker, "t1:monitors"), await listen(broker, "t1:monitors")
    await broker.publish("t1:monitors", "monitors", 900, {})
    await eventually(lambda: len(gone.got) == 1 and len(kept.got) == 1)
    broker.remove_listener("t1:monitors", gone)
    broker.remove_listener("t1:monitors", gone)  # twice is harmless
    await broker.publish("t1:monitors", "monitors", 900, {})
    await eventually(lambda: len(kept.got) == 2)
    assert gone.seqs == [o + 1]


async def test_a_failing_listener_does_not_stop_delivery_to_others(make_broker: BrokerFactory) -> None:
    broker = await make_broker()

    def broken(topic: str, seq: int, frame: str) -> None:
        raise RuntimeError("listener bug")

    o = await origin(broker, "t1:monitors")
    broker.add_listener("t1:monitors", broken)
    rec = await listen(broker, "t1:monitors")
    await broker.publish("t1:monitors", "monitors", 900, {})
    await broker.publish("t1:monitors", "monitors", 900, {})
    await eventually(lambda: rec.seqs == [o + 1, o + 2])


async def test_create_broker_picks_the_backend(redis_url: str, redis_prefix: str) -> None:
    memory = create_broker(None, prefix=redis_prefix, history_size=10, history_ttl=5.0)
    assert isinstance(memory, MemoryBroker) and memory.history_size == 10
    remote = create_broker(redis_url, prefix=redis_prefix, history_size=10, history_ttl=5.0)
    assert isinstance(remote, RedisBroker) and remote.prefix == redis_prefix
    await remote.close()


# -- in-process only -------------------------------------------------------------


async def test_memory_seqs_of_a_restarted_process_start_above_the_old_ones() -> None:
    """A restart loses the history: a since from before it must not be answered recovered."""
    before = MemoryBroker()
    for _ in range(3):
        last = await before.publish("t1:monitors", "monitors", 900, {})
    held = await before.history("t1:monitors", last - 1)  # what a client resumes from
    assert held.recovered is True
    await asyncio.sleep(0.005)  # the next process starts at least a few ms later
    after = MemoryBroker()  # the restarted process: nothing published yet
    for since in (last - 1, last):
        lost = await after.history("t1:monitors", since)
        assert lost.recovered is False and lost.events == []
        assert lost.current_seq > last  # the new sequence starts above the old one
    first = await after.publish("t1:monitors", "monitors", 900, {"after": "restart"})
    assert first > last
    for since in (last - 1, last):
        lost = await after.history("t1:monitors", since)
        assert lost.recovered is False and lost.current_seq == first
    assert (await after.history("t1:monitors", first - 1)).recovered is True  # its own history works
    # A since above the new seq (a long-lived old process, a clock set back) is not recovered either.
    ahead = await after.history("t1:monitors", first + 5)
    assert ahead.recovered is False


def test_memory_seqs_are_integers_javascript_holds_exactly() -> None:
    from app.broker.memory import seq_base

    now = seq_base()
    assert isinstance(now, int) and 0 < now < 2**53
    assert now > (1_764_000_000 - 1_704_067_200) * 1000 * 4096  # above any base of late 2025
    # Still exact with a topic's billion events published, for decades to come.
    assert seq_base(now=2_840_140_800.0) + 10**9 < 2**53  # 2060-01-01
    assert seq_base(now=1_704_067_200.0) == 0 and seq_base(now=0.0) == 0


# -- Redis only -----------------------------------------------------------------


async def test_two_instances_share_one_sequence_and_deliver_across(
    make_redis_broker: Callable[..., Awaitable[RedisBroker]],
) -> None:
    a, b = await make_redis_broker(), await make_redis_broker()
    rec = await listen(a, "t1:monitors")
    seqs = []
    for i in range(6):
        seqs.append(await (a if i % 2 else b).publish("t1:monitors", "monitors", 900, {"i": i}))
    assert seqs == [1, 2, 3, 4, 5, 6]
    await eventually(lambda: rec.seqs == [1, 2, 3, 4, 5, 6])
    assert rec.got[0][2] == encode_event("monitors", 900, 1, {"i": 0})  # published on B
    assert [s for s, _ in (await b.history("t1:monitors", 3)).events] == [4, 5, 6]


async def test_only_instances_with_listeners_subscribe(
    make_redis_broker: Callable[..., Awaitable[RedisBroker]], redis_admin: aioredis.Redis
) -> None:
    a, b = await make_redis_broker(), await make_redis_broker()
    channel = a.channel("t1:monitors")

    async def subscribers() -> int:
        return int(dict(await redis_admin.pubsub_numsub(channel))[channel])

    await a.publish("t1:monitors", "monitors", 900, {})
    assert await subscribers() == 0
    rec = await listen(a, "t1:monitors")
    second = await listen(a, "t1:monitors")
    assert await subscribers() == 1  # one connection per instance, not per listener
    assert a.subscribed_topics() == {"t1:monitors"} and b.subscribed_topics() == set()
    a.remove_listener("t1:monitors", rec)
    await asyncio.sleep(0.2)
    assert await subscribers() == 1  # one listener left
    a.remove_listener("t1:monitors", second)
    for _ in range(200):
        if await subscribers() == 0:
            break
        await asyncio.sleep(0.05)
    assert await subscribers() == 0


async def test_pubsub_reconnects_after_its_connection_is_killed(
    make_redis_broker: Callable[..., Awaitable[RedisBroker]], redis_admin: aioredis.Redis
) -> None:
    a, b = await make_redis_broker(), await make_redis_broker()
    rec = await listen(a, "t1:monitors")
    await b.publish("t1:monitors", "monitors", 900, {})
    await eventually(lambda: rec.seqs == [1])
    ours = [
        c for c in await redis_admin.client_list(_type="pubsub") if c["name"] == a.client_name + ":pubsub"
    ]
    assert len(ours) == 1
    await redis_admin.client_kill_filter(_id=ours[0]["id"])
    await eventually(lambda: a.pubsub_connects >= 2 and a.subscribed_topics() == {"t1:monitors"})
    await a.wait_subscribed("t1:monitors")
    seq = await b.publish("t1:monitors", "monitors", 900, {"after": "reconnect"})
    await eventually(lambda: rec.seqs[-1:] == [seq])
    assert rec.got[-1][2] == encode_event("monitors", 900, seq, {"after": "reconnect"})


async def test_unreachable_redis_raises_broker_unavailable(redis_prefix: str) -> None:
    broker = RedisBroker(
        "redis://127.0.0.1:1/0", prefix=redis_prefix, socket_timeout=1.0, subscribe_timeout=0.5
    )
    await broker.start()
    try:
        assert await broker.ready() is False
        with pytest.raises(BrokerUnavailable):
            await broker.publish("t1:monitors", "monitors", 900, {})
        with pytest.raises(BrokerUnavailable):
            await broker.history("t1:monitors", 0)
        broker.add_listener("t1:monitors", Recorder())
        with pytest.raises(BrokerUnavailable):
            await broker.wait_subscribed("t1:monitors")
    finally:
        await broker.close()
        await broker.close()  # idempotent


async def test_close_right_after_unsubscribing_is_prompt(make_broker: BrokerFactory) -> None:
    """Shutdown must not hang on a pub/sub update that swallowed the cancellation."""
    broker = await make_broker()
    rec = Recorder()
    broker.add_listener("t1:closing", rec)
    await broker.wait_subscribed("t1:closing")
    broker.remove_listener("t1:closing", rec)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(broker.close(), 8)
    assert loop.time() - started < 3


async def test_simultaneous_history_reads_each_get_their_own_answer(make_broker: BrokerFactory) -> None:
    """A reconnect storm: many reads of one topic at once, each from its own ``since``."""
    broker = await make_broker(history_size=50)
    o = await origin(broker, "t1:storm")
    for i in range(1, 61):
        await broker.publish("t1:storm", "storm", 900, {"i": i})
    # 0..65 past the origin: older than the history, covered, up to date, ahead of it.
    sinces = [o + k % 66 for k in range(600)]
    results = await asyncio.gather(*(broker.history("t1:storm", since) for since in sinces))
    for since, result in zip(sinces, results, strict=True):
        k = since - o
        assert result.current_seq == o + 60
        assert [seq - o for seq, _ in result.events] == list(range(max(k, 10) + 1, 61))
        assert result.recovered is (10 <= k <= 60), (k, result.recovered)


async def test_a_storm_of_history_reads_costs_redis_one_read_per_topic_at_a_time(
    make_redis_broker: Callable[..., Awaitable[RedisBroker]],
) -> None:
    broker = await make_redis_broker()
    for i in range(5):
        await broker.publish("t1:storm", "storm", 900, {"i": i})
    results = await asyncio.gather(*(broker.history("t1:storm", k % 5) for k in range(1000)))
    assert [len(r.events) for r in results] == [5 - k % 5 for k in range(1000)]
    assert broker.history_reads == 1
    # Reads that arrive while one is in flight share the next read.
    first = asyncio.ensure_future(broker.history("t1:storm", 0))
    await asyncio.sleep(0)  # the first read is on its way to Redis
    late = await asyncio.gather(*(broker.history("t1:storm", 2) for _ in range(100)))
    assert len((await first).events) == 5 and all(len(r.events) == 3 for r in late)
    assert broker.history_reads == 3


async def test_reads_beyond_the_pool_wait_for_a_connection_instead_of_failing(
    make_redis_broker: Callable[..., Awaitable[RedisBroker]],
) -> None:
    broker = await make_redis_broker(max_connections=3)
    topics = [f"t{i}:monitors" for i in range(400)]  # distinct topics: no read can be shared
    results = await asyncio.gather(*(broker.history(t, 0) for t in topics))
    assert all(r.current_seq == 0 and r.recovered for r in results)
    seqs = await asyncio.gather(*(broker.publish(t, "monitors", 900, {}) for t in topics))
    assert seqs == [1] * len(topics)


async def test_a_pool_that_stays_busy_fails_after_the_pool_timeout_and_says_so(
    make_redis_broker: Callable[..., Awaitable[RedisBroker]], redis_prefix: str
) -> None:
    broker = await make_redis_broker(max_connections=1, pool_timeout=0.3)
    # Hold the only pooled connection with a blocking read (nothing ever pushes the key).
    holder = asyncio.ensure_future(broker._redis.blpop([redis_prefix + "never"], timeout=3))
    await asyncio.sleep(0.1)
    started = asyncio.get_running_loop().time()
    with pytest.raises(
        BrokerUnavailable, match=re.escape("no pooled Redis connection was free within 0.3 s")
    ):
        await broker.history("t1:monitors", 0)
    assert asyncio.get_running_loop().time() - started < 2.0
    assert await holder is None
    assert (await broker.history("t1:monitors", 0)).current_seq == 0  # free again: works


async def test_close_during_a_history_read_fails_the_waiting_readers(
    make_redis_broker: Callable[..., Awaitable[RedisBroker]],
) -> None:
    broker = await make_redis_broker(max_connections=1)
    pool = broker._redis.connection_pool
    held = await pool.get_connection()  # the only pooled connection: reads must wait for it
    reads = [asyncio.ensure_future(broker.history("t1:monitors", since)) for since in (0, 1, 2)]
    await asyncio.sleep(0.1)  # the batch is waiting for the pooled connection
    await broker.close()
    async with asyncio.timeout(5):
        results = await asyncio.gather(*reads, return_exceptions=True)
    assert all(isinstance(r, BrokerUnavailable) and "closed" in str(r) for r in results), results
    with pytest.raises(BrokerUnavailable, match="closed"):
        await broker.history("t1:monitors", 0)
    await held.disconnect()
    await pool.release(held)

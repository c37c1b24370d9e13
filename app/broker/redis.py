"""Redis broker: cross-instance broadcast with per-topic history in Redis Streams.

Keys, all under ``prefix`` (the ``{topic}`` hash tag keeps one topic's keys in
one cluster slot):

- ``<prefix>{<topic>}:seq``: the topic's counter (INCR). It expires ``seq_ttl``
  seconds after the last publish (default 7 days, never shorter than
  ``history_ttl``), so the sequence never resets while a client may still hold a
  seq from its history window; an idle topic's counter is eventually reclaimed.
  If it does reset, :meth:`RedisBroker.history` sees ``since`` above the current
  seq and answers ``recovered=False``, so clients reload instead of trusting a
  reused seq.
- ``<prefix>{<topic>}:hist``: a stream whose entry IDs are ``<seq>-0`` (so a
  replay is one XRANGE from ``since + 1``) with fields ``f`` (the frame) and
  ``t`` (Redis server time, ms). Writes trim approximately (``MAXLEN ~``, cheap)
  and the key expires ``history_ttl`` seconds after the last publish; reads
  enforce the exact bounds: only the newest ``history_size`` seqs that are at
  most ``history_ttl`` seconds old are returned.
- pub/sub channel ``<prefix>ev:<topic>``: message ``"<seq> <frame>"``.

Publishing is one Lua script (EVALSHA, loaded again on NOSCRIPT): INCR the seq,
build the frame around it, XADD, refresh expiries, PUBLISH. The frame is built
in the script from the prefix and suffix of :func:`app.protocol.event_frame_parts`,
byte-identical to :func:`app.protocol.encode_event`.

Each instance holds one dedicated pub/sub connection and SUBSCRIBEs only the
channels that have local listeners, so instances without subscribers for a
topic never receive it. If that connection drops, a reader task reconnects with
backoff and re-subscribes every channel with local listeners; events published
while it was down are not delivered live (listeners see a seq gap and recover
through :meth:`history`).

Reconnect storms (every dashboard resubscribing with ``since`` after a deploy)
cost Redis one history read per topic at a time, not one per subscriber: reads
of one topic that arrive while one is in flight are answered together by the
next read, from the smallest ``since`` asked (each caller gets its own slice).
Commands share a bounded pool (``max_connections``); a caller that finds it
busy waits up to ``pool_timeout`` seconds for a connection instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from bisect import bisect_right
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError

from app.broker.base import Broker, BrokerUnavailable, HistoryResult, Listener, ListenerRegistry
from app.protocol import event_frame_parts

log = logging.getLogger(__name__)

_PUBLISH_LUA = """
local seq = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[6])
local s = string.format('%d', seq)
local frame = ARGV[2] .. s .. ARGV[3]
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
local ok = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], s .. '-0', 'f', frame, 't', now)
if type(ok) == 'table' and ok.err then
  -- The stream outlived its counter (the seq key was deleted): start it over;
  -- history() then reports the lost range as not recovered.
  redis.call('DEL', KEYS[2])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], s .. '-0', 'f', frame, 't', now)
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[1], s .. ' ' .. frame)
return seq
"""

_HISTORY_LUA = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
if since >= cur then return {cur} end
local lo = math.max(since + 1, cur - tonumber(ARGV[2]) + 1)
local t = redis.call('TIME')
local cutoff = t[1] * 1000 + math.floor(t[2] / 1000) - tonumber(ARGV[3])
local entries = redis.call('XRANGE', KEYS[2], string.format('%d', lo) .. '-0', '+')
local out = {cur}
for _, e in ipairs(entries) do
  local f = e[2]
  local frame, ts = nil, 0
  for i = 1, #f, 2 do
    if f[i] == 'f' then frame = f[i + 1] elseif f[i] == 't' then ts = tonumber(f[i + 1]) end
  end
  if frame and ts >= cutoff then
    out[#out + 1] = tonumber(string.match(e[1], '^(%d+)'))
    out[#out + 1] = frame
  end
end
return out
"""


class RedisBroker(Broker):
    """Broadcast across every instance sharing one Redis, history in Redis Streams."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "wp:",
        history_size: int = 300,
        history_ttl: float = 600.0,
        seq_ttl: float = 7 * 24 * 3600.0,
        subscribe_timeout: float = 5.0,
        pubsub_ping_interval: float = 10.0,
        reconnect_max_delay: float = 5.0,
        socket_timeout: float = 5.0,
        client_name: str | None = None,
        max_connections: int = 50,
        pool_timeout: float = 5.0,
    ) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1; use 1 to keep only the newest event.")
        if history_ttl <= 0:
            raise ValueError("history_ttl must be a positive number of seconds.")
        self.prefix = prefix
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.seq_ttl = max(seq_ttl, history_ttl)
        self.subscribe_timeout = subscribe_timeout
        self.pubsub_ping_interval = pubsub_ping_interval
        self.reconnect_max_delay = reconnect_max_delay
        #: Name of this instance's connections (CLIENT LIST); the pub/sub one adds ``:pubsub``.
        self.client_name = client_name or f"{prefix}broker:{uuid.uuid4().hex[:8]}"
        self._chan_prefix = f"{prefix}ev:"
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": socket_timeout,
            "socket_timeout": socket_timeout,
        }
        self.pool_timeout = pool_timeout
        # Blocking: past max_connections a command waits for a free connection
        # (bounded by pool_timeout) instead of failing with "Too many connections".
        # One retry covers a pooled connection that Redis closed while idle.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
            client_name=self.client_name,
            **common,
        )
        self._redis = aioredis.Redis.from_pool(pool)
        # No hidden retries on the pub/sub connection: the reader owns reconnecting
        # so it can re-subscribe and keep its bookkeeping right.
        self._ps_client = aioredis.Redis.from_url(
            url, retry=Retry(NoBackoff(), 0), client_name=self.client_name + ":pubsub", **common
        )
        self._publish_script = self._redis.register_script(_PUBLISH_LUA)
        self._history_script = self._redis.register_script(_HISTORY_LUA)
        self._listeners = ListenerRegistry()
        #: History reads waiting for the next read of their topic: (since, answer).
        self._history_queued: dict[str, list[tuple[int, asyncio.Future[HistoryResult]]]] = {}
        #: The task reading each topic's history while reads are queued for it.
        self._history_readers: dict[str, asyncio.Task[None]] = {}
        #: Redis history reads made (one per batch of callers; diagnostics and tests).
        self.history_reads = 0
        #: The live pub/sub connection, None while (re)connecting.
        self._pubsub: Any = None
        #: Topics whose last command sent on the current connection was SUBSCRIBE.
        self._server_subs: set[str] = set()
        #: Commands sent per topic whose confirmation has not arrived yet.
        self._outstanding: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._sync_needed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        #: Times the pub/sub connection was (re)established (diagnostics and tests).
        self.pubsub_connects = 0

    # -- keys -----------------------------------------------------------------

    def _seq_key(self, topic: str) -> str:
        return f"{self.prefix}{{{topic}}}:seq"

    def _hist_key(self, topic: str) -> str:
        return f"{self.prefix}{{{topic}}}:hist"

    def channel(self, topic: str) -> str:
        """The pub/sub channel carrying ``topic``'s events."""
        return self._chan_prefix + topic

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._run_pubsub(), name="broker-pubsub-reader"),
            asyncio.create_task(self._run_sync(), name="broker-pubsub-sync"),
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sync_needed.set()  # wake the sync loop so it sees _closed
        # redis-py can swallow a CancelledError inside a pub/sub call, so cancel again
        # until each task has really ended (bounded), and never swallow our own cancel.
        pending = set(self._tasks)
        for _ in range(10):
            if not pending:
                break
            for task in pending:
                task.cancel()
            _done, pending = await asyncio.wait(pending, timeout=0.5)
        if pending:
            log.warning("Redis broker: %d background task(s) did not stop; abandoning them", len(pending))
        self._tasks = []
        for reader in list(self._history_readers.values()):
            reader.cancel()
        for queued in self._history_queued.values():
            for _since, answer in queued:
                if not answer.done():
                    answer.set_exception(BrokerUnavailable("The broker was closed."))
        self._history_queued.clear()
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(BrokerUnavailable("The broker was closed."))
        self._waiters.clear()
        self._listeners.clear()
        await self._ps_client.aclose()
        await self._redis.aclose()

    async def ready(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    # -- publish / history ----------------------------------------------------

    async def publish(self, topic: str, topic_name: str, pkg_id: int, data: Any) -> int:
        head, tail = event_frame_parts(topic_name, pkg_id, data)
        try:
            seq = await self._publish_script(
                keys=[self._seq_key(topic), self._hist_key(topic)],
                args=[
                    self.channel(topic),
                    head,
                    tail,
                    self.history_size,
                    int(self.history_ttl * 1000),
                    int(self.seq_ttl),
                ],
            )
        except (RedisError, OSError) as exc:
            problem = _redis_problem(exc, self.pool_timeout)
            raise BrokerUnavailable(f"Could not publish to topic {topic!r}: {problem}. Retry later.") from exc
        return int(seq)

    async def history(self, topic: str, since: int) -> HistoryResult:
        if self._closed:
            raise BrokerUnavailable("The broker was closed.")
        answer: asyncio.Future[HistoryResult] = asyncio.get_running_loop().create_future()
        self._history_queued.setdefault(topic, []).append((since, answer))
        if topic not in self._history_readers:
            self._history_readers[topic] = asyncio.create_task(
                self._read_history_batches(topic), name=f"broker-history-{topic}"
            )
        return await answer

    async def _read_history_batches(self, topic: str) -> None:
        """Answer every queued read of ``topic``, one Redis read per batch.

        A read queued while one is in flight waits for the next: the read that
        answers it always starts after the caller asked, so it sees every event
        published before (the caller's subscription was confirmed by then).
        """
        try:
            while queued := self._history_queued.pop(topic, None):
                waiting = [(since, answer) for since, answer in queued if not answer.done()]
                if not waiting:
                    continue
                lowest = min(since for since, _answer in waiting)
                try:
                    current, events = await self._read_history(topic, lowest)
                except BrokerUnavailable as exc:
                    _fail(waiting, str(exc))
                    continue
                except asyncio.CancelledError:
                    _fail(waiting, "The broker was closed.")  # close(): nobody may be left waiting
                    raise
                seqs = [seq for seq, _frame in events]
                for since, answer in waiting:
                    if not answer.done():
                        answer.set_result(_slice_history(current, events, seqs, since))
        finally:
            self._history_readers.pop(topic, None)

    async def _read_history(self, topic: str, since: int) -> tuple[int, list[tuple[int, str]]]:
        """The topic's current seq and its held events after ``since``, oldest first."""
        self.history_reads += 1
        try:
            reply = await self._history_script(
                keys=[self._seq_key(topic), self._hist_key(topic)],
                args=[since, self.history_size, int(self.history_ttl * 1000)],
            )
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(
                f"Could not read the history of topic {topic!r}: {_redis_problem(exc, self.pool_timeout)}. "
                "Retry later."
            ) from exc
        events = [(int(reply[i]), str(reply[i + 1])) for i in range(1, len(reply), 2)]
        return int(reply[0]), events

    # -- listeners --------------------------------------------------------------

    def add_listener(self, topic: str, listener: Listener) -> None:
        if self._listeners.add(topic, listener):
            self._sync_needed.set()

    def remove_listener(self, topic: str, listener: Listener) -> None:
        if self._listeners.discard(topic, listener):
            self._sync_needed.set()

    async def wait_subscribed(self, topic: str) -> None:
        if topic not in self._listeners or self._is_live(topic):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(topic, []).append(fut)
        try:
            await asyncio.wait_for(fut, self.subscribe_timeout)
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"Redis did not confirm the subscription to {topic!r} within "
                f"{self.subscribe_timeout:g} s; retry the subscription later."
            ) from exc
        finally:
            waiters = self._waiters.get(topic)
            if waiters and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[topic]

    def subscribed_topics(self) -> set[str]:
        """Topics this instance has confirmed subscriptions for (diagnostics and tests)."""
        return {t for t in self._server_subs if self._is_live(t)}

    def _is_live(self, topic: str) -> bool:
        return self._pubsub is not None and topic in self._server_subs and not self._outstanding.get(topic, 0)

    # -- background tasks -------------------------------------------------------

    async def _run_sync(self) -> None:
        """Make Redis' view of our subscriptions match the topics with local listeners."""
        while not self._closed:
            await self._sync_needed.wait()
            self._sync_needed.clear()
            if self._closed:
                return
            ps = self._pubsub
            if ps is None:
                continue  # the reader sets _sync_needed again once it is connected
            want = set(self._listeners)
            add = want - self._server_subs
            drop = self._server_subs - want
            # Book-keep before awaiting: changes made meanwhile trigger another pass.
            for topic in (*add, *drop):
                self._outstanding[topic] = self._outstanding.get(topic, 0) + 1
            self._server_subs |= add
            self._server_subs -= drop
            try:
                if add:
                    await ps.subscribe(*(self.channel(t) for t in add))
                if drop:
                    await ps.unsubscribe(*(self.channel(t) for t in drop))
            except (RedisError, OSError) as exc:
                # Drop the connection so the reader reconnects and re-subscribes from
                # scratch; our bookkeeping for this one can no longer be trusted.
                with contextlib.suppress(Exception):
                    if ps.connection is not None:
                        await ps.connection.disconnect()
                log.warning(
                    "Could not update Redis pub/sub subscriptions (%s); will retry after reconnect.", exc
                )

    async def _run_pubsub(self) -> None:
        """Own the pub/sub connection: connect, read, dispatch; reconnect with backoff."""
        delay = 0.1
        while not self._closed:
            ps: Any = self._ps_client.pubsub()
            try:
                await ps.connect()
                self._server_subs = set()
                self._outstanding = {}
                self._pubsub = ps
                self.pubsub_connects += 1
                if self.pubsub_connects > 1:
                    log.info("Redis pub/sub reconnected; re-subscribing %d topic(s).", len(self._listeners))
                self._sync_needed.set()
                delay = 0.1
                await self._read(ps)
            except (RedisError, OSError) as exc:
                log.warning("Redis pub/sub connection lost (%s); reconnecting in %.1f s.", exc, delay)
            except Exception:  # the reader must survive anything to keep delivering
                log.exception("Unexpected error in the Redis pub/sub reader; reconnecting in %.1f s.", delay)
            finally:
                self._pubsub = None
                self._server_subs = set()
                self._outstanding = {}
                with contextlib.suppress(Exception):
                    await ps.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_delay)

    async def _read(self, ps: Any) -> None:
        loop = asyncio.get_running_loop()
        last_traffic = loop.time()
        while True:
            msg = await ps.get_message(timeout=self.pubsub_ping_interval)
            now = loop.time()
            if msg is None:
                if now - last_traffic > 2.5 * self.pubsub_ping_interval:
                    raise ConnectionError("Redis did not answer PING on the pub/sub connection")
                await ps.ping()
                continue
            last_traffic = now
            kind = msg.get("type")
            channel = msg.get("channel")
            if not isinstance(channel, str) or not channel.startswith(self._chan_prefix):
                continue  # PING replies and anything else that is not ours
            topic = channel[len(self._chan_prefix) :]
            if kind == "message":
                self._dispatch(topic, msg["data"])
            elif kind in ("subscribe", "unsubscribe"):
                left = self._outstanding.get(topic, 0) - 1
                if left > 0:
                    self._outstanding[topic] = left
                else:
                    self._outstanding.pop(topic, None)
                if self._is_live(topic):
                    for fut in self._waiters.pop(topic, ()):
                        if not fut.done():
                            fut.set_result(None)

    def _dispatch(self, topic: str, data: str) -> None:
        seq_text, _, frame = data.partition(" ")
        seq = int(seq_text)
        self._listeners.deliver(topic, seq, frame)


def _fail(waiting: list[tuple[int, asyncio.Future[HistoryResult]]], msg: str) -> None:
    for _since, answer in waiting:
        if not answer.done():
            answer.set_exception(BrokerUnavailable(msg))


def _slice_history(current: int, events: list[tuple[int, str]], seqs: list[int], since: int) -> HistoryResult:
    """One caller's answer out of a read made for the smallest ``since`` of its batch."""
    if since >= current:
        # since > current: the client holds a seq from a sequence that was reset.
        return HistoryResult(events=[], recovered=since == current, current_seq=current)
    mine = events[bisect_right(seqs, since) :]
    recovered = bool(mine) and mine[0][0] == since + 1
    return HistoryResult(events=mine, recovered=recovered, current_seq=current)


def _redis_problem(exc: BaseException, pool_timeout: float) -> str:
    """Say whether Redis is down or this instance's pool stayed busy (overload, not an outage)."""
    if str(exc) == "No connection available.":
        return f"no pooled Redis connection was free within {pool_timeout:g} s (REDIS_POOL_TIMEOUT)"
    return f"Redis is unreachable ({exc})"

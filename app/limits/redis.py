"""Limits shared across instances through Redis, each check one atomic Lua script.

**Messages** never cost a Redis round trip per message. Each instance keeps a
local allowance per user and reserves tokens from the user's Redis-side token
bucket (``message_rate_per_minute`` tokens, refilled at that rate) in batches.
The batch adapts: it starts at 1 and doubles (up to ``reserve_batch``) while a
user spends reservations quickly, and shrinks when they go unused, so an idle
user costs one round trip per message at most and a busy one one per batch.
Reserved tokens are spent within ``reserve_hold`` seconds or dropped. A denial
is cached locally until the bucket refills, so a flooding client gets its
``retry_after_ms`` without touching Redis.

Maximum error across instances: Redis never grants more tokens than the bucket
holds, so the long-run rate is exact. In any interval a user connected to ``k``
instances can get at most ``k * (reserve_batch - 1)`` messages more than an
exact single bucket would allow (tokens reserved just before the interval and
spent in it), and can be denied while other instances still hold up to that
many unspent tokens (which return to nobody; they expire after
``reserve_hold``). With the defaults (600/min, batch 30) that is 29 messages per
extra instance.

**Connections**: a sorted set per user (member ``conn_id``, score = expiry in
Redis server ms). Acquire drops expired members, checks the count and adds, in
one script. Registrations and removals are batched: each one joins a queue, and
one script applies the whole queue in order (many users' handshakes and closes in
one round trip) as soon as the previous batch has returned, so under a reconnect
storm a round trip carries every handshake that arrived during the last one, and
an idle instance still sends each one on the next event-loop turn. The caller
waits for its own answer, so the limit is exactly what one call per
registration gave: Redis runs the script atomically, checking each registration
against the count left by the ones before it. Registrations live
``connection_ttl`` seconds; a background task
(started by :meth:`RedisLimiter.start`) refreshes every connection this instance
registered every ``connection_ttl / 3`` seconds, so a crashed instance's
connections stop counting within ``connection_ttl``.

**HTTP**: a token bucket per key (``http_burst`` tokens, ``http_per_minute``
refill) in the same script as the message budget.

**Redis down**: ``fail_open=True`` (default) allows everything, ``False`` denies
(``retry_after_ms`` 1000, connections refused). Every failure increments
:attr:`RedisLimiter.redis_errors` and calls ``on_redis_error(operation)``; a
warning is logged at most every 10 s. After a failure Redis is not tried again
for ``retry_interval`` seconds, so an outage costs no timeouts per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.limits.base import Limiter

log = logging.getLogger(__name__)

# Token bucket in a hash {tokens, ts}; grants up to ARGV[3] tokens at once.
# Returns {granted, ms until the next token when nothing was granted}.
_BUCKET_LUA = """
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil or ts == nil then
  tokens = cap
  ts = now
end
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
local grant = math.min(want, math.floor(tokens))
tokens = tokens - grant
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - tokens) / rate) + 1000)
local wait = 0
if grant == 0 then wait = math.max(1, math.ceil((1 - tokens) / rate)) end
return {grant, wait}
"""

# A batch of connection registrations ('a') and removals ('r'), applied in order.
# KEYS[i] is the i-th operation's key; ARGV = ttl, then (op, conn_id, limit) per key.
# Returns one integer per operation: 1 registered (or removed), 0 refused at the limit.
_CONNECTIONS_LUA = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[1])
local expiry = string.format('%d', now + ttl)
local swept = {}
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local member = ARGV[3 * i]
  if ARGV[3 * i - 1] == 'r' then
    redis.call('ZREM', key, member)
    out[i] = 1
  else
    if not swept[key] then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
      swept[key] = true
    end
    if not redis.call('ZSCORE', key, member) and redis.call('ZCARD', key) >= tonumber(ARGV[3 * i + 1]) then
      out[i] = 0
    else
      redis.call('ZADD', key, expiry, member)
      redis.call('PEXPIRE', key, ttl)
      out[i] = 1
    end
  end
end
return out
"""

#: Most connection operations one script applies (bounds how long Redis runs it).
CONNECTION_BATCH_MAX = 256

# Re-adds too: a connection dropped while Redis was unreachable is still open.
_REFRESH_LUA = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[1])
local expiry = string.format('%d', now + ttl)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return #ARGV - 1
"""

#: What fail-closed answers while Redis is unreachable.
FAIL_CLOSED_RETRY_MS = 1000


@dataclass(slots=True)
class _Allowance:
    """One user's message tokens reserved by this instance."""

    tokens: int = 0
    #: Monotonic time after which unspent tokens are dropped.
    expires: float = 0.0
    #: Monotonic time of the last reservation (how fast it was spent sizes the next).
    reserved_at: float = 0.0
    batch: int = 1
    #: Denied until this monotonic time without asking Redis again.
    blocked_until: float = 0.0
    #: A reservation in flight; concurrent hits wait for it instead of asking too.
    pending: asyncio.Future[None] | None = None


class RedisLimiter(Limiter):
    """Limits shared by every instance using the same Redis and prefix."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "wp:",
        message_rate_per_minute: int = 600,
        max_connections_per_user: int = 20,
        http_per_minute: int = 60,
        http_burst: int = 10,
        fail_open: bool = True,
        reserve_batch: int | None = None,
        reserve_hold: float = 5.0,
        connection_ttl: float = 60.0,
        retry_interval: float = 1.0,
        socket_timeout: float = 1.0,
        max_connections: int = 50,
        pool_timeout: float = 5.0,
        on_redis_error: Callable[[str], None] | None = None,
    ) -> None:
        if min(message_rate_per_minute, max_connections_per_user, http_per_minute, http_burst) < 1:
            raise ValueError("Every limit must be at least 1; disable rate limiting instead of setting 0.")
        self.prefix = prefix
        self.message_rate_per_minute = message_rate_per_minute
        self.max_connections_per_user = max_connections_per_user
        self.http_per_minute = http_per_minute
        self.http_burst = http_burst
        self.fail_open = fail_open
        #: Largest reservation; default about 1/20 of the per-minute budget (3 s of it),
        #: at most 1000: the error bound above stays that small a share of the budget,
        #: and a busy user with a high limit costs one Redis round trip per 1000 messages.
        self.reserve_batch = reserve_batch or max(1, min(1000, message_rate_per_minute // 20))
        self.reserve_hold = reserve_hold
        self.connection_ttl = connection_ttl
        self.retry_interval = retry_interval
        self.on_redis_error = on_redis_error
        self.pool_timeout = pool_timeout
        #: Redis failures so far (each one also calls ``on_redis_error``).
        self.redis_errors = 0
        #: Message-budget reservations made (round trips on the message path).
        self.reservations = 0
        # Blocking: a burst of connects or first messages (a reconnect storm) queues
        # for a pooled connection, bounded by pool_timeout, instead of failing with
        # "Too many connections" and being counted as a Redis outage.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout,
            decode_responses=True,
            socket_connect_timeout=socket_timeout,
            socket_timeout=socket_timeout,
            # One immediate retry covers a pooled connection Redis closed while idle.
            retry=Retry(NoBackoff(), 1),
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._bucket = self._redis.register_script(_BUCKET_LUA)
        self._connection_ops = self._redis.register_script(_CONNECTIONS_LUA)
        self._refresh = self._redis.register_script(_REFRESH_LUA)
        self._allowances: dict[str, _Allowance] = {}
        #: Connections this instance registered, refreshed by the heartbeat.
        self._connections: dict[str, set[str]] = {}
        self._skip_redis_until = 0.0
        self._last_warning = -math.inf
        self._last_sweep = time.monotonic()
        self._heartbeat: asyncio.Task[None] | None = None
        self._closed = False
        #: Connection operations waiting for the next batch: (op, key, conn_id, limit, answer).
        self._queued: list[tuple[str, str, str, int, asyncio.Future[bool]]] = []
        self._batcher: asyncio.Task[None] | None = None
        #: Connection batches sent (round trips on the handshake and close path).
        self.connection_batches = 0

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        if self._heartbeat is None and not self._closed:
            self._heartbeat = asyncio.create_task(self._run_heartbeat(), name="limiter-connection-heartbeat")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._batcher is not None:  # removals queued by the last closes still reach Redis
            with contextlib.suppress(Exception):
                await self._batcher
        await self._redis.aclose()

    # -- messages -------------------------------------------------------------

    async def hit_message(self, user_key: str) -> int | None:
        while True:
            now = time.monotonic()
            allowance = self._allowances.get(user_key)
            if allowance is None:
                if now - self._last_sweep > 60.0:
                    self._sweep(now)
                allowance = self._allowances[user_key] = _Allowance()
            if allowance.tokens > 0 and now < allowance.expires:
                allowance.tokens -= 1
                return None
            if now < allowance.blocked_until:
                return max(1, math.ceil((allowance.blocked_until - now) * 1000))
            if allowance.pending is not None:
                await asyncio.shield(allowance.pending)
                continue
            return await self._reserve(user_key, allowance, now)

    async def _reserve(self, user_key: str, allowance: _Allowance, now: float) -> int | None:
        if now < self._skip_redis_until:
            return None if self.fail_open else FAIL_CLOSED_RETRY_MS
        # Spent quickly: ask for more next time; left to expire: ask for less.
        if allowance.reserved_at and now - allowance.reserved_at < self.reserve_hold / 2:
            allowance.batch = min(self.reserve_batch, allowance.batch * 2)
        elif allowance.reserved_at:
            allowance.batch = max(1, allowance.batch // 2)
        allowance.tokens = 0
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        allowance.pending = done
        try:
            self.reservations += 1
            granted, wait_ms = await self._bucket(
                keys=[f"{self.prefix}lim:msg:{user_key}"],
                args=[self.message_rate_per_minute, self.message_rate_per_minute / 60000.0, allowance.batch],
            )
        except (RedisError, OSError) as exc:
            self._failed("message", exc)
            return None if self.fail_open else FAIL_CLOSED_RETRY_MS
        finally:
            allowance.pending = None
            done.set_result(None)
        now = time.monotonic()
        allowance.reserved_at = now
        if int(granted) == 0:
            allowance.blocked_until = now + int(wait_ms) / 1000.0
            return max(1, int(wait_ms))
        allowance.tokens = int(granted) - 1
        allowance.expires = now + self.reserve_hold
        return None

    def _sweep(self, now: float) -> None:
        """Drop allowances with nothing left to remember (bounded memory per instance)."""
        self._last_sweep = now
        idle = [
            key
            for key, a in self._allowances.items()
            if a.pending is None and now >= a.blocked_until and (a.tokens == 0 or now >= a.expires)
        ]
        for key in idle:
            del self._allowances[key]

    # -- HTTP -------------------------------------------------------------------

    async def hit_http(self, key: str, scale: int = 1) -> int | None:
        if time.monotonic() < self._skip_redis_until:
            return None if self.fail_open else FAIL_CLOSED_RETRY_MS
        try:
            granted, wait_ms = await self._bucket(
                keys=[f"{self.prefix}lim:http:{key}"],
                args=[self.http_burst * scale, self.http_per_minute * scale / 60000.0, 1],
            )
        except (RedisError, OSError) as exc:
            self._failed("http", exc)
            return None if self.fail_open else FAIL_CLOSED_RETRY_MS
        return None if int(granted) else max(1, int(wait_ms))

    # -- connections ------------------------------------------------------------

    async def acquire_connection(self, user_key: str, conn_id: str, limit: int | None = None) -> bool:
        if self._heartbeat is None:
            await self.start()  # registrations expire unless the heartbeat runs
        allowed = self.fail_open
        if time.monotonic() >= self._skip_redis_until:
            cap = self.max_connections_per_user if limit is None else limit
            allowed = await self._queue("a", user_key, conn_id, cap)
        if allowed:
            # Tracked even when admitted without Redis: the heartbeat registers it later.
            self._connections.setdefault(user_key, set()).add(conn_id)
        return allowed

    async def release_connection(self, user_key: str, conn_id: str) -> None:
        conns = self._connections.get(user_key)
        if conns is not None:
            conns.discard(conn_id)
            if not conns:
                del self._connections[user_key]
        if time.monotonic() < self._skip_redis_until:
            return  # the registration expires on its own
        await self._queue("r", user_key, conn_id, 0)

    def _queue(self, op: str, user_key: str, conn_id: str, limit: int) -> asyncio.Future[bool]:
        """Queue one registration ('a') or removal ('r'); its answer arrives with the batch."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued.append((op, self._conn_key(user_key), conn_id, limit, answer))
        if self._batcher is None:
            # A task's first step runs on the next loop turn: every handshake of this one joins.
            self._batcher = asyncio.create_task(self._send_batches(), name="limiter-connection-batches")
        return answer

    async def _send_batches(self) -> None:
        """Send the queue, one batch at a time, until it is empty (what arrives meanwhile waits)."""
        try:
            while self._queued:
                batch = self._queued[:CONNECTION_BATCH_MAX]
                del self._queued[:CONNECTION_BATCH_MAX]
                await self._send_batch(batch)
        finally:
            self._batcher = None

    async def _send_batch(self, batch: list[tuple[str, str, str, int, asyncio.Future[bool]]]) -> None:
        args: list[str | int] = [int(self.connection_ttl * 1000)]
        for op, _key, conn_id, limit, _answer in batch:
            args += (op, conn_id, limit)
        try:
            self.connection_batches += 1
            results = await self._connection_ops(keys=[key for _op, key, *_rest in batch], args=args)
        except (RedisError, OSError) as exc:
            self._failed("connection", exc)
            results = [int(self.fail_open)] * len(batch)  # removals: the registration expires
        except asyncio.CancelledError:
            for *_rest, answer in batch:
                answer.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - not a Redis failure: every waiter raises it, as one call would
            for *_rest, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (op, key, conn_id, _limit, answer), result in zip(batch, results, strict=True):
            if not answer.done():
                answer.set_result(bool(int(result)))
            elif op == "a" and int(result):
                # The handshake gave up while its registration was in flight: take it back.
                unawaited: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
                unawaited.add_done_callback(lambda done: done.cancelled() or done.exception())
                self._queued.append(("r", key, conn_id, 0, unawaited))

    async def refresh_connections(self, user_key: str, conn_ids: Collection[str]) -> None:
        if not conn_ids or time.monotonic() < self._skip_redis_until:
            return
        try:
            await self._refresh(
                keys=[self._conn_key(user_key)], args=[int(self.connection_ttl * 1000), *conn_ids]
            )
        except (RedisError, OSError) as exc:
            self._failed("connection", exc)

    async def _run_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.connection_ttl / 3)
            try:
                for user_key, conns in list(self._connections.items()):
                    await self.refresh_connections(user_key, list(conns))
            except Exception:  # the heartbeat must outlive any single failure
                log.exception("Refreshing connection registrations failed; retrying next round.")

    def _conn_key(self, user_key: str) -> str:
        return f"{self.prefix}lim:conn:{user_key}"

    # -- failures -----------------------------------------------------------------

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.redis_errors += 1
        now = time.monotonic()
        self._skip_redis_until = now + self.retry_interval
        if now - self._last_warning >= 10.0:
            self._last_warning = now
            mode = "allowing" if self.fail_open else "denying"
            if str(exc) == "No connection available.":
                # A pool busy for the whole wait is overload on this instance, not a Redis outage.
                log.warning(
                    "No pooled Redis connection was free within %g s (REDIS_POOL_TIMEOUT) for %s limits; "
                    "%s requests for %g s (%d errors so far).",
                    self.pool_timeout,
                    operation,
                    mode,
                    self.retry_interval,
                    self.redis_errors,
                )
            else:
                log.warning(
                    "Redis is unreachable for %s limits (%s); %s requests until it is back "
                    "(%d errors so far).",
                    operation,
                    exc,
                    mode,
                    self.redis_errors,
                )
        if self.on_redis_error is not None:
            try:
                self.on_redis_error(operation)
            except Exception:
                log.exception("The on_redis_error hook failed; limits keep working.")

    def registered_connections(self) -> dict[str, set[str]]:
        """Connections this instance registered, per user (diagnostics and tests)."""
        return {user: set(conns) for user, conns in self._connections.items()}

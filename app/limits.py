"""Rate and connection limits: one contract, in-process and Redis backends.

Semantics, the same in every backend:

- **messages**: a token bucket per user holding ``message_rate_per_minute``
  tokens and refilling at that rate, so a user may burst up to one minute's
  budget and then sustain the rate. Over any 60 s span at most twice the rate
  gets through (a full bucket plus a minute of refill).
- **connections**: at most ``max_connections_per_user`` registered at once;
  :meth:`Limiter.acquire_connection` answers False at the limit (close 4008).
- **HTTP**: a token bucket per key of ``http_burst`` tokens refilling at
  ``http_per_minute``; a caller may ask for a bucket ``scale`` times as large
  (capacity and rate), e.g. for a limit shared by everyone behind one address.

:class:`MemoryLimiter` is per process (the embedded default); the Redis backend
(:mod:`app.limits_redis`) shares the limits across instances. Build either with
:func:`create_limiter`.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass


class Limiter(abc.ABC):
    """Per-user message rate, per-user connection count and HTTP request rate."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect; called once from the app lifespan."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Idempotent."""

    @abc.abstractmethod
    async def hit_message(self, user_key: str) -> int | None:
        """Count one inbound message; None if allowed, else ``retry_after_ms``.

        Must not cost a network round trip per call (reserve in batches).
        """

    @abc.abstractmethod
    async def acquire_connection(self, user_key: str, conn_id: str) -> bool:
        """Register a connection; False when the user is at the limit (close 4008)."""

    @abc.abstractmethod
    async def release_connection(self, user_key: str, conn_id: str) -> None:
        """Forget a connection registered with :meth:`acquire_connection`."""

    @abc.abstractmethod
    async def hit_http(self, key: str, scale: int = 1) -> int | None:
        """Count one HTTP request for ``key``; None or ``retry_after_ms``.

        ``scale`` multiplies the bucket's capacity and refill rate; one key must
        always be used with the same scale.
        """

    async def refresh_connections(self, user_key: str, conn_ids: Collection[str]) -> None:  # noqa: B027
        """Mark ``conn_ids`` of ``user_key`` as still open.

        Shared backends expire registrations so a crashed instance's connections
        stop counting; the Redis limiter already refreshes every connection it
        registered from a background task started by :meth:`start`, so callers
        only need this to re-register connections after recreating a limiter.
        In-process backends never expire registrations: the default does nothing.
        """


@dataclass(slots=True)
class TokenBucket:
    """A token bucket's state; refill is computed lazily on each take."""

    tokens: float
    updated: float

    def take(self, capacity: float, per_second: float, now: float) -> int | None:
        """Take one token: None when granted, else the milliseconds until one is available."""
        self.tokens = min(capacity, self.tokens + max(0.0, now - self.updated) * per_second)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self.tokens) / per_second * 1000))

    def is_full(self, capacity: float, per_second: float, now: float) -> bool:
        return self.tokens + max(0.0, now - self.updated) * per_second >= capacity


class MemoryLimiter(Limiter):
    """Limits kept in this process: exact, but each instance counts on its own."""

    #: Seconds between sweeps that drop buckets which have refilled completely.
    SWEEP_INTERVAL = 60.0

    def __init__(
        self,
        message_rate_per_minute: int = 600,
        max_connections_per_user: int = 20,
        http_per_minute: int = 60,
        http_burst: int = 10,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(message_rate_per_minute, max_connections_per_user, http_per_minute, http_burst) < 1:
            raise ValueError("Every limit must be at least 1; disable rate limiting instead of setting 0.")
        self.message_rate_per_minute = message_rate_per_minute
        self.max_connections_per_user = max_connections_per_user
        self.http_per_minute = http_per_minute
        self.http_burst = http_burst
        self._clock = clock
        self._messages: dict[str, TokenBucket] = {}
        self._http: dict[str, TokenBucket] = {}
        self._http_scaled: dict[int, dict[str, TokenBucket]] = {}
        self._connections: dict[str, set[str]] = {}
        self._last_sweep = clock()

    async def hit_message(self, user_key: str) -> int | None:
        return self._take(
            self._messages, user_key, self.message_rate_per_minute, self.message_rate_per_minute
        )

    async def hit_http(self, key: str, scale: int = 1) -> int | None:
        buckets = self._http_scaled.setdefault(scale, {}) if scale != 1 else self._http
        return self._take(buckets, key, self.http_burst * scale, self.http_per_minute * scale)

    async def acquire_connection(self, user_key: str, conn_id: str) -> bool:
        conns = self._connections.setdefault(user_key, set())
        if conn_id in conns:
            return True
        if len(conns) >= self.max_connections_per_user:
            return False
        conns.add(conn_id)
        return True

    async def release_connection(self, user_key: str, conn_id: str) -> None:
        conns = self._connections.get(user_key)
        if conns is None:
            return
        conns.discard(conn_id)
        if not conns:
            del self._connections[user_key]

    def _take(self, buckets: dict[str, TokenBucket], key: str, capacity: int, per_minute: int) -> int | None:
        now = self._clock()
        per_second = per_minute / 60.0
        if now - self._last_sweep > self.SWEEP_INTERVAL:
            self._sweep(now)
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = TokenBucket(tokens=float(capacity), updated=now)
        return bucket.take(capacity, per_second, now)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for buckets, capacity, per_minute in (
            (self._messages, self.message_rate_per_minute, self.message_rate_per_minute),
            (self._http, self.http_burst, self.http_per_minute),
            *(
                (scaled, self.http_burst * scale, self.http_per_minute * scale)
                for scale, scaled in self._http_scaled.items()
            ),
        ):
            full = [k for k, b in buckets.items() if b.is_full(capacity, per_minute / 60.0, now)]
            for key in full:
                del buckets[key]


def create_limiter(
    redis_url: str | None,
    *,
    prefix: str = "wp:",
    message_rate_per_minute: int = 600,
    max_connections_per_user: int = 20,
    http_per_minute: int = 60,
    http_burst: int = 10,
    fail_open: bool = True,
    on_redis_error: Callable[[str], None] | None = None,
) -> Limiter:
    """The Redis limiter when ``redis_url`` is set, else the in-process one.

    The caller awaits ``start()`` in the app lifespan (the Redis limiter's
    connection heartbeat runs from there) and ``close()`` on shutdown.
    ``on_redis_error`` receives the operation name (``message``, ``connection``,
    ``http``...) each time Redis fails, e.g. to count it in a metric.
    """
    if redis_url:
        from app.limits_redis import RedisLimiter

        return RedisLimiter(
            redis_url,
            prefix=prefix,
            message_rate_per_minute=message_rate_per_minute,
            max_connections_per_user=max_connections_per_user,
            http_per_minute=http_per_minute,
            http_burst=http_burst,
            fail_open=fail_open,
            on_redis_error=on_redis_error,
        )
    return MemoryLimiter(
        message_rate_per_minute=message_rate_per_minute,
        max_connections_per_user=max_connections_per_user,
        http_per_minute=http_per_minute,
        http_burst=http_burst,
    )

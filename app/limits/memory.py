"""Limits kept in this process: exact, but each instance counts on its own."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.limits.base import Limiter


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

    async def acquire_connection(self, user_key: str, conn_id: str, limit: int | None = None) -> bool:
        conns = self._connections.setdefault(user_key, set())
        if conn_id in conns:
            return True
        if len(conns) >= (self.max_connections_per_user if limit is None else limit):
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

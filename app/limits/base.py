"""The limiter contract: one set of semantics for the in-process and Redis backends.

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

:class:`~app.limits.memory.MemoryLimiter` is per process (the embedded default);
:class:`~app.limits.redis.RedisLimiter` shares the limits across instances. Build
either with :func:`app.limits.create_limiter`.
"""

from __future__ import annotations

import abc
from collections.abc import Collection


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
    async def acquire_connection(self, user_key: str, conn_id: str, limit: int | None = None) -> bool:
        """Register a connection; False when the key is at the limit (close 4008).

        ``limit`` replaces ``max_connections_per_user`` for this key (anonymous
        status-page sockets count per address and per page with their own limits);
        one key must always be used with the same limit."""

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

"""Rate and connection limits: one contract, in-process and Redis backends.

Interface only in this first cut; the backends live below it.
"""

from __future__ import annotations

import abc


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
    async def hit_http(self, key: str) -> int | None:
        """Count one HTTP request for ``key`` (IP or username); None or ``retry_after_ms``."""

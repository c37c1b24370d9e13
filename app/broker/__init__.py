"""Broadcast with history: pick the backend from settings with :func:`create_broker`."""

from __future__ import annotations

from app.broker.base import Broker, BrokerUnavailable, HistoryResult, Listener

__all__ = ["Broker", "BrokerUnavailable", "HistoryResult", "Listener", "create_broker"]


def create_broker(
    redis_url: str | None,
    *,
    prefix: str = "wp:",
    history_size: int = 300,
    history_ttl: float = 600.0,
    max_connections: int = 50,
    pool_timeout: float = 5.0,
) -> Broker:
    """The Redis broker when ``redis_url`` is set, else the in-process one.

    ``max_connections`` and ``pool_timeout`` size the Redis command pool (ignored in-process).
    The caller awaits ``start()`` in the app lifespan and ``close()`` on shutdown.
    """
    if redis_url:
        from app.broker.redis import RedisBroker

        return RedisBroker(
            redis_url,
            prefix=prefix,
            history_size=history_size,
            history_ttl=history_ttl,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
        )
    from app.broker.memory import MemoryBroker

    return MemoryBroker(history_size=history_size, history_ttl=history_ttl)

"""Rate and connection limits: pick the backend from settings with :func:`create_limiter`.

The contract and its semantics are in :mod:`app.limits.base`; :mod:`app.limits.memory`
counts in this process, :mod:`app.limits.redis` shares the counts across instances.
"""

from __future__ import annotations

from collections.abc import Callable

from app.limits.base import Limiter

__all__ = ["Limiter", "create_limiter"]


def create_limiter(
    redis_url: str | None,
    *,
    prefix: str = "wp:",
    message_rate_per_minute: int = 600,
    max_connections_per_user: int = 20,
    http_per_minute: int = 60,
    http_burst: int = 10,
    fail_open: bool = True,
    max_connections: int = 50,
    pool_timeout: float = 5.0,
    on_redis_error: Callable[[str], None] | None = None,
) -> Limiter:
    """The Redis limiter when ``redis_url`` is set, else the in-process one.

    The caller awaits ``start()`` in the app lifespan (the Redis limiter's
    connection heartbeat runs from there) and ``close()`` on shutdown.
    ``max_connections`` and ``pool_timeout`` size the Redis pool (ignored in-process).
    ``on_redis_error`` receives the operation name (``message``, ``connection``,
    ``http``...) each time Redis fails, e.g. to count it in a metric.
    """
    if redis_url:
        from app.limits.redis import RedisLimiter

        return RedisLimiter(
            redis_url,
            prefix=prefix,
            message_rate_per_minute=message_rate_per_minute,
            max_connections_per_user=max_connections_per_user,
            http_per_minute=http_per_minute,
            http_burst=http_burst,
            fail_open=fail_open,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            on_redis_error=on_redis_error,
        )
    from app.limits.memory import MemoryLimiter

    return MemoryLimiter(
        message_rate_per_minute=message_rate_per_minute,
        max_connections_per_user=max_connections_per_user,
        http_per_minute=http_per_minute,
        http_burst=http_burst,
    )

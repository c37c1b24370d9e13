"""When to try a failed delivery again: exponential backoff with full jitter.

Pure functions. The delivery worker calls :func:`next_retry_delay` after each
failed transient attempt; ``None`` means "give up, mark the delivery failed".

Full jitter (a uniform draw between zero and the exponential ceiling) spreads
retries from many instances hitting one broken receiver, instead of having them
all come back on the same second.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

# 2**60 times any sane base is far past every cap; stops float overflow.
_MAX_EXPONENT = 60


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to retry: first ceiling ``base`` seconds, doubling up to ``cap``, at most ``max_attempts``."""

    base: float = 10.0
    cap: float = 900.0
    max_attempts: int = 10

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("retry policy needs 0 < base <= cap; check the delivery backoff settings")
        if self.max_attempts < 1:
            raise ValueError("retry policy needs max_attempts >= 1; check the delivery settings")


def backoff_ceiling(failed_attempts: int, policy: RetryPolicy) -> float:
    """The largest delay allowed after ``failed_attempts`` (>= 1) consecutive failures."""
    exponent = min(max(failed_attempts - 1, 0), _MAX_EXPONENT)
    return float(min(policy.cap, policy.base * 2**exponent))


def backoff_delay(
    failed_attempts: int, policy: RetryPolicy, rand: Callable[[], float] = random.random
) -> float:
    """A delay drawn uniformly from ``[0, ceiling)``; ``rand`` is injectable for tests."""
    return rand() * backoff_ceiling(failed_attempts, policy)


def next_retry_delay(
    failed_attempts: int,
    policy: RetryPolicy,
    *,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds until the next attempt, or ``None`` when the attempt budget is spent.

    ``retry_after`` is the receiver's own hint (HTTP ``Retry-After`` on a 429 or
    503); it is honoured as a lower bound but never beyond ``policy.cap``, so a
    hostile receiver cannot park a delivery for days.
    """
    if failed_attempts >= policy.max_attempts:
        return None
    delay = backoff_delay(failed_attempts, policy, rand)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, policy.cap))
    return delay

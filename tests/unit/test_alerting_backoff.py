"""Retry timing: exponential ceiling, full jitter, cap, attempt budget, Retry-After."""

from __future__ import annotations

import random

import pytest

from app.alerting.backoff import RetryPolicy, backoff_ceiling, backoff_delay, next_retry_delay

POLICY = RetryPolicy(base=2.0, cap=60.0, max_attempts=5)


def test_ceiling_doubles_from_base_until_the_cap() -> None:
    assert [backoff_ceiling(n, POLICY) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]


def test_ceiling_survives_absurd_attempt_counts() -> None:
    assert backoff_ceiling(10_000, POLICY) == 60.0


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    assert backoff_delay(3, POLICY, rand=lambda: 0.0) == 0.0
    assert backoff_delay(3, POLICY, rand=lambda: 0.5) == 4.0
    assert backoff_delay(3, POLICY, rand=lambda: 0.999) == pytest.approx(7.992)


def test_real_jitter_stays_in_bounds_and_varies() -> None:
    rng = random.Random(7)
    draws = [backoff_delay(4, POLICY, rand=rng.random) for _ in range(200)]
    assert all(0.0 <= d < 16.0 for d in draws)
    assert len({round(d, 6) for d in draws}) > 150


def test_budget_is_spent_after_max_attempts() -> None:
    assert next_retry_delay(4, POLICY, rand=lambda: 0.5) == 8.0  # ceiling 16 after 4 failures
    assert next_retry_delay(5, POLICY, rand=lambda: 0.5) is None
    assert next_retry_delay(6, POLICY) is None


def test_retry_after_is_a_lower_bound_capped_by_the_policy() -> None:
    assert next_retry_delay(1, POLICY, retry_after=30.0, rand=lambda: 0.5) == 30.0
    assert next_retry_delay(1, POLICY, retry_after=86_400.0, rand=lambda: 0.5) == 60.0
    # A hint shorter than the drawn delay does not shorten it.
    assert next_retry_delay(4, POLICY, retry_after=0.1, rand=lambda: 0.5) == 8.0


@pytest.mark.parametrize(
    ("base", "cap", "attempts"),
    [(0.0, 10.0, 3), (5.0, 1.0, 3), (1.0, 10.0, 0)],
)
def test_nonsense_policies_are_refused(base: float, cap: float, attempts: int) -> None:
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(base=base, cap=cap, max_attempts=attempts)

"""Latency summaries: exact percentiles from recorded samples plus a coarse histogram.

Samples are kept as integer nanoseconds in a list: a full run records a few
hundred thousand, which sorts in milliseconds and keeps percentiles exact.
"""

from __future__ import annotations

import math
from typing import Any

#: Upper bounds (milliseconds) of the histogram buckets written to results files.
BUCKETS_MS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def percentile(sorted_values: list[int], fraction: float) -> int:
    """Nearest-rank percentile of already sorted values (0 for no values)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize_ns(samples: list[int]) -> dict[str, Any]:
    """p50/p90/p99/max in milliseconds and bucket counts for ``samples`` (nanoseconds)."""
    ordered = sorted(samples)
    buckets: dict[str, int] = {}
    index = 0
    for bound in BUCKETS_MS:
        limit = bound * 1_000_000
        start = index
        while index < len(ordered) and ordered[index] <= limit:
            index += 1
        buckets[f"<={bound}ms"] = index - start
    buckets[f">{BUCKETS_MS[-1]}ms"] = len(ordered) - index
    return {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 0.50) / 1e6, 3),
        "p90_ms": round(percentile(ordered, 0.90) / 1e6, 3),
        "p99_ms": round(percentile(ordered, 0.99) / 1e6, 3),
        "max_ms": round((ordered[-1] if ordered else 0) / 1e6, 3),
        "histogram": {k: v for k, v in buckets.items() if v},
    }


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference`` rounded for reports; None when either is missing or zero."""
    if not value or not reference:
        return None
    return round(value / reference, 3)

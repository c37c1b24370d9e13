"""The probe's scheduler: stable phases spread evenly, intervals kept, changes applied, bounded."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter

from app.probe.schedule import Scheduler, next_due, phase


def test_phases_spread_a_thousand_monitors_evenly_over_the_interval() -> None:
    phases = sorted(phase(mid, 60) for mid in range(1, 1001))
    assert all(0 <= p < 60 for p in phases)
    gaps = [b - a for a, b in itertools.pairwise(phases)] + [60 - phases[-1] + phases[0]]
    mean = 60 / 1000
    # Golden-ratio phases: gaps of at most three sizes, none far from the mean.
    assert max(gaps) < 2.7 * mean
    assert min(gaps) > 0.3 * mean
    per_second = Counter(int(p) for p in phases)
    assert len(per_second) == 60
    assert max(per_second.values()) <= 20  # 16.7 on average: never a burst


def test_sparse_ids_spread_too() -> None:
    ids = [7 + 13 * i for i in range(500)]  # ids of one tenant among others'
    per_second = Counter(int(phase(mid, 30)) for mid in ids)
    assert len(per_second) == 30
    assert max(per_second.values()) <= 2 * 500 / 30


def test_a_monitor_keeps_its_phase_and_interval() -> None:
    assert phase(42, 60) == phase(42, 60)
    now = 1_700_000_000.25
    due = next_due(42, 60, now)
    assert now < due <= now + 60
    assert abs((due - phase(42, 60)) / 60 - round((due - phase(42, 60)) / 60)) < 1e-9
    assert next_due(42, 60, due) == due + 60


async def test_each_monitor_runs_at_its_interval_and_changes_apply() -> None:
    starts: dict[int, list[float]] = {}

    async def run(definition: dict[str, object], due: float) -> None:
        starts.setdefault(int(definition["id"]), []).append(time.time())  # type: ignore[call-overload]

    scheduler = Scheduler(run, concurrency=10)
    scheduler.start()
    try:
        for mid in (1, 2, 3):
            scheduler.upsert({"id": mid, "interval": 1})
        await asyncio.sleep(2.2)
        assert {mid: len(times) for mid, times in starts.items()} in (
            {1: n1, 2: n2, 3: n3} for n1 in (2, 3) for n2 in (2, 3) for n3 in (2, 3)
        )
        for times in starts.values():
            assert all(0.9 < b - a < 1.1 for a, b in itertools.pairwise(times))

        scheduler.remove(2)
        scheduler.upsert({"id": 3, "interval": 1, "url": "changed"})  # same interval: same schedule
        scheduler.upsert({"id": 1, "interval": 30})  # longer interval: rescheduled
        before = {mid: len(t) for mid, t in starts.items()}
        await asyncio.sleep(1.5)
        assert len(starts[2]) == before[2]
        assert len(starts[3]) > before[3]
        assert len(starts[1]) <= before[1] + 1
        assert scheduler.definitions[3]["url"] == "changed"
    finally:
        await scheduler.stop()


async def test_concurrency_is_bounded_and_a_slow_check_is_not_started_twice() -> None:
    running = 0
    peak = 0
    calls: Counter[int] = Counter()

    async def run(definition: dict[str, object], due: float) -> None:
        nonlocal running, peak
        calls[int(definition["id"])] += 1  # type: ignore[call-overload]
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(1.6)  # slower than the interval
        running -= 1

    scheduler = Scheduler(run, concurrency=3)
    scheduler.start()
    try:
        for mid in range(1, 11):
            scheduler.upsert({"id": mid, "interval": 1})
        await asyncio.sleep(1.3)
        assert peak == 3
    finally:
        await scheduler.stop()
    assert scheduler.skipped_overlap >= 1 or max(calls.values()) == 1
    assert max(calls.values()) == 1


async def test_start_lag_is_measured() -> None:
    async def run(definition: dict[str, object], due: float) -> None:
        await asyncio.sleep(0)

    scheduler = Scheduler(run)
    scheduler.start()
    try:
        scheduler.upsert({"id": 5, "interval": 1})
        await asyncio.sleep(1.1)
        lag = scheduler.lag_p50(5)
        assert lag is not None and 0 <= lag < 100
        assert scheduler.started >= 1
    finally:
        await scheduler.stop()

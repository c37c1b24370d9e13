"""Rollups and retention: raw results → hourly → daily, then old raw rows go.

:func:`roll_up` moves each monitor's ``rolled_until`` watermark forward to the
last whole hour that ended at least :data:`SETTLE` ago (a check that started
before an hour boundary may commit just after it), writing one hourly row per
hour with results and one daily row per day that became complete. The
watermark moves with a compare-and-set in the same transaction as the rows it
covers, so two instances never roll the same hour twice.

:func:`prune` deletes raw rows older than the retention horizon in bounded
batches (short transactions, no long locks), and never a row above its
monitor's watermark, so uptime over any window is unchanged by pruning.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.base import utcnow
from app.models.check import CheckResult, DailyRollup, HourlyRollup
from app.models.monitor import Monitor
from app.models.probe import LocationCheck
from app.monitoring.stats import DAY, floor_day, floor_hour, percentile, uptime_24h_all

if TYPE_CHECKING:
    from app.storage.db import Database

log = logging.getLogger("watchpost.retention")

#: An hour is rolled up only once it ended this long ago.
SETTLE = timedelta(minutes=5)


@dataclass
class _Agg:
    total: int = 0
    up: int = 0
    maintenance: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, ok: bool, maint: bool, latency: float | None) -> None:
        self.total += 1
        if maint:
            self.maintenance += 1
        elif ok:
            self.up += 1
        if ok and latency is not None:
            self.latencies.append(latency)


def _hourly(monitor_id: int, tenant_id: int, period: datetime, agg: _Agg) -> HourlyRollup:
    lat = sorted(agg.latencies)
    return HourlyRollup(
        monitor_id=monitor_id,
        tenant_id=tenant_id,
        period=period,
        total=agg.total,
        up=agg.up,
        maintenance=agg.maintenance,
        latency_count=len(lat),
        latency_sum=sum(lat),
        latency_min=lat[0] if lat else None,
        latency_max=lat[-1] if lat else None,
        latency_p50=percentile(lat, 50),
        latency_p95=percentile(lat, 95),
    )


async def roll_up(db: Database, *, now: datetime | None = None, batch: int = 200) -> int:
    """Roll every monitor forward to the settled hour; returns hourly rows written."""
    now = now or utcnow()
    cutoff = floor_hour(now - SETTLE)
    written = 0
    last_id = 0
    while True:
        async with db.session() as s:
            rows = (
                await s.execute(
                    select(
                        col(Monitor.id),
                        col(Monitor.tenant_id),
                        col(Monitor.rolled_until),
                        col(Monitor.created_at),
                    )
                    .where(col(Monitor.id) > last_id)
                    .order_by(col(Monitor.id))
                    .limit(batch)
                )
            ).all()
        if not rows:
            return written
        last_id = int(rows[-1][0] or 0)
        for monitor_id, tenant_id, rolled_until, created_at in rows:
            start = rolled_until or floor_hour(created_at)
            if start >= cutoff:
                continue
            written += await _roll_one(db, int(monitor_id or 0), tenant_id, start, cutoff)
        await asyncio.sleep(0)  # let checks run between batches


async def _roll_one(db: Database, monitor_id: int, tenant_id: int, start: datetime, cutoff: datetime) -> int:
    async with db.session() as s:
        moved = await s.execute(
            update(Monitor)
            .where(
                col(Monitor.id) == monitor_id,
                (col(Monitor.rolled_until) == start) | col(Monitor.rolled_until).is_(None),
            )
            .values(rolled_until=cutoff)
            .execution_options(synchronize_session=False)
        )
        if getattr(moved, "rowcount", 0) != 1:
            await s.rollback()
            return 0  # another instance rolled it meanwhile
        results = await s.execute(
            select(
                col(CheckResult.ts),
                col(CheckResult.ok),
                col(CheckResult.maintenance),
                col(CheckResult.latency_ms),
            ).where(
                col(CheckResult.monitor_id) == monitor_id,
                col(CheckResult.ts) >= start,
                col(CheckResult.ts) < cutoff,
            )
        )
        hours: dict[datetime, _Agg] = defaultdict(_Agg)
        for ts, ok, maint, latency in results.all():
            hours[floor_hour(ts)].add(bool(ok), bool(maint), latency)
        for period, agg in hours.items():
            s.add(_hourly(monitor_id, tenant_id, period, agg))
        await s.flush()
        # Days that became complete: [floor_day(start), floor_day(cutoff)).
        day = floor_day(start)
        while day + DAY <= cutoff:
            await _roll_day(s, monitor_id, tenant_id, day)
            day += DAY
        await s.commit()
        return len(hours)


async def _roll_day(s: AsyncSession, monitor_id: int, tenant_id: int, day: datetime) -> None:
    hourly = (
        (
            await s.execute(
                select(HourlyRollup).where(
                    col(HourlyRollup.monitor_id) == monitor_id,
                    col(HourlyRollup.period) >= day,
                    col(HourlyRollup.period) < day + DAY,
                )
            )
        )
        .scalars()
        .all()
    )
    if not hourly:
        return
    n = sum(h.latency_count for h in hourly)
    existing = await s.get(DailyRollup, (monitor_id, day))
    if existing is not None:
        await s.delete(existing)  # defensive: recompute a day whole, never add to it
        await s.flush()
    s.add(
        DailyRollup(
            monitor_id=monitor_id,
            tenant_id=tenant_id,
            period=day,
            total=sum(h.total for h in hourly),
            up=sum(h.up for h in hourly),
            maintenance=sum(h.maintenance for h in hourly),
            latency_count=n,
            latency_sum=sum(h.latency_sum for h in hourly),
            latency_min=min((h.latency_min for h in hourly if h.latency_min is not None), default=None),
            latency_max=max((h.latency_max for h in hourly if h.latency_max is not None), default=None),
            latency_p50=(sum((h.latency_p50 or 0) * h.latency_count for h in hourly) / n) if n else None,
            latency_p95=(sum((h.latency_p95 or 0) * h.latency_count for h in hourly) / n) if n else None,
        )
    )


async def prune(db: Database, *, retention: timedelta, now: datetime | None = None, batch: int = 5000) -> int:
    """Delete raw results older than ``retention`` (and below their monitor's watermark)
    in batches of ``batch`` rows; returns how many were deleted."""
    horizon = (now or utcnow()) - retention
    deleted = 0
    while True:
        async with db.session() as s:
            ids = (
                select(col(CheckResult.id))
                .join(Monitor, col(Monitor.id) == col(CheckResult.monitor_id))
                .where(col(CheckResult.ts) < horizon, col(CheckResult.ts) < col(Monitor.rolled_until))
                .order_by(col(CheckResult.ts))
                .limit(batch)
            )
            chunk = [int(i) for i in (await s.execute(ids)).scalars().all() if i is not None]
            if not chunk:
                return deleted
            await s.execute(delete(CheckResult).where(col(CheckResult.id).in_(chunk)))
            await s.commit()
        deleted += len(chunk)
        if len(chunk) < batch:
            return deleted
        await asyncio.sleep(0)


async def prune_location_checks(
    db: Database, *, retention: timedelta, now: datetime | None = None, batch: int = 5000
) -> int:
    """Delete per-location results (docs/probes.md) older than ``retention`` in batches of
    ``batch`` rows; returns how many were deleted. They have no rollups: past the retention
    period a location's statistics are gone, as PROBE_REPORT refuses results that old."""
    horizon = (now or utcnow()) - retention
    deleted = 0
    while True:
        async with db.session() as s:
            ids = (
                select(col(LocationCheck.id))
                .where(col(LocationCheck.ts) < horizon)
                .order_by(col(LocationCheck.ts))
                .limit(batch)
            )
            chunk = [int(i) for i in (await s.execute(ids)).scalars().all() if i is not None]
            if not chunk:
                return deleted
            await s.execute(delete(LocationCheck).where(col(LocationCheck.id).in_(chunk)))
            await s.commit()
        deleted += len(chunk)
        if len(chunk) < batch:
            return deleted
        await asyncio.sleep(0)


async def refresh_uptime_cache(db: Database, *, now: datetime | None = None, batch: int = 1000) -> int:
    """Recompute every monitor's cached 24h uptime (tenant by tenant); returns monitors updated."""
    now = now or utcnow()
    async with db.session() as s:
        tenants = [
            int(t) for t in (await s.execute(select(col(Monitor.tenant_id)).distinct())).scalars().all()
        ]
    updated = 0
    for tenant_id in tenants:
        async with db.session() as s:
            values = await uptime_24h_all(s, tenant_id, now)
        items = [{"id": mid, "uptime_24h": value, "uptime_24h_at": now} for mid, value in values.items()]
        for i in range(0, len(items), batch):
            async with db.session() as s:
                # Bulk UPDATE by primary key; touches only the cache columns, never state_seq.
                await s.execute(update(Monitor), items[i : i + batch])
                await s.commit()
            await asyncio.sleep(0)
        updated += len(items)
    return updated


async def count_raw(db: Database) -> int:
    async with db.session() as s:
        return int((await s.execute(select(func.count()).select_from(CheckResult))).scalar_one())


async def housekeeping_loop(db: Database, *, every: float, retention: timedelta) -> None:
    """Roll up, prune and refresh the 24h uptime cache every ``every`` seconds until cancelled.

    Runs on every instance; concurrent passes are safe (the watermark compare-and-set
    splits the rollup work; pruning and the cache refresh are idempotent)."""
    while True:
        try:
            rolled = await roll_up(db)
            pruned = await prune(db, retention=retention)
            pruned += await prune_location_checks(db, retention=retention)
            await refresh_uptime_cache(db)
            if rolled or pruned:
                log.info("rolled up %d hourly rows, pruned %d raw results", rolled, pruned)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rollup/retention pass failed; retrying next time")
        await asyncio.sleep(every)

"""Uptime and latency statistics over raw results and rollups.

Data layout (docs/monitoring.md):

- raw ``check_results`` rows, kept for ``RETENTION_DAYS``;
- ``check_rollups_hourly``: one row per monitor and hour, written by
  :mod:`app.monitoring.retention` for hours before the monitor's
  ``rolled_until`` watermark;
- ``check_rollups_daily``: the same per UTC day, for whole days before
  ``rolled_until``.

A window ``[start, end)`` is answered as: raw rows with
``ts >= max(start, rolled_until)``; plus, below the watermark, daily rows for
whole days inside the window and hourly rows for the remaining hours. A rolled-up
period counts when it *starts* inside the window, so long windows resolve to
whole hours at their left edge. Uptime = up checks / (checks - checks taken
during maintenance); ``None`` when there is nothing to divide by.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.base import iso, utcnow
from app.models.check import CheckResult, DailyRollup, HourlyRollup
from app.models.monitor import Monitor
from app.monitoring.checks import cert_days_left

WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
    "365d": timedelta(days=365),
}

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def floor_hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_day(t: datetime) -> datetime:
    f = floor_day(t)
    return f if f == t else f + DAY


@dataclass(frozen=True, slots=True)
class Uptime:
    total: int
    up: int
    maintenance: int

    @property
    def counted(self) -> int:
        return self.total - self.maintenance

    @property
    def ratio(self) -> float | None:
        return self.up / self.counted if self.counted > 0 else None

    def to_wire(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "uptime": None if ratio is None else round(ratio, 6),
            "up": self.up,
            "checks": self.total,
            "maintenance": self.maintenance,
        }


def _watermark(monitor: Monitor) -> datetime:
    return monitor.rolled_until or floor_hour(monitor.created_at)


async def uptime(session: AsyncSession, monitor: Monitor, start: datetime, end: datetime) -> Uptime:
    """Uptime of one monitor over ``[start, end)``."""
    mark = _watermark(monitor)
    total = up = maint = 0
    # Raw part.
    raw_from = max(start, mark)
    if raw_from < end:
        row = (
            await session.execute(
                select(
                    func.count(),
                    func.coalesce(
                        func.sum(case((col(CheckResult.ok) & ~col(CheckResult.maintenance), 1), else_=0)), 0
                    ),
                    func.coalesce(func.sum(case((col(CheckResult.maintenance), 1), else_=0)), 0),
                ).where(
                    col(CheckResult.monitor_id) == monitor.id,
                    col(CheckResult.ts) >= raw_from,
                    col(CheckResult.ts) < end,
                )
            )
        ).one()
        total, up, maint = int(row[0]), int(row[1]), int(row[2])
    # Rolled-up part.
    rolled_to = min(end, mark)
    if start < rolled_to:
        d0, d1 = ceil_day(start), floor_day(rolled_to)
        use_daily = d0 < d1
        hourly_filter = [
            col(HourlyRollup.monitor_id) == monitor.id,
            col(HourlyRollup.period) >= start,
            col(HourlyRollup.period) < rolled_to,
        ]
        if use_daily:
            hourly_filter.append(not_(and_(col(HourlyRollup.period) >= d0, col(HourlyRollup.period) < d1)))
        parts: list[tuple[Any, list[Any]]] = [(HourlyRollup, hourly_filter)]
        if use_daily:
            daily_filter = [
                col(DailyRollup.monitor_id) == monitor.id,
                col(DailyRollup.period) >= d0,
                col(DailyRollup.period) < d1,
            ]
            parts.append((DailyRollup, daily_filter))
        for model, filters in parts:
            row = (
                await session.execute(
                    select(
                        func.coalesce(func.sum(model.total), 0),
                        func.coalesce(func.sum(model.up), 0),
                        func.coalesce(func.sum(model.maintenance), 0),
                    ).where(*filters)
                )
            ).one()
            total += int(row[0])
            up += int(row[1])
            maint += int(row[2])
    return Uptime(total, up, maint)


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


async def latency(
    session: AsyncSession, monitor: Monitor, start: datetime, end: datetime, *, raw_since: datetime
) -> dict[str, Any]:
    """min/avg/p50/p95/max of successful checks' latency over ``[start, end)``.

    Exact (from raw rows) when the window starts after ``raw_since`` (the
    retention horizon); otherwise the older part comes from hourly rollups and
    p50/p95 are the count-weighted means of hourly percentiles (``exact: false``).
    """
    exact = start >= raw_since
    raw_from = start if exact else raw_since
    rows = await session.execute(
        select(col(CheckResult.latency_ms))
        .where(
            col(CheckResult.monitor_id) == monitor.id,
            col(CheckResult.ts) >= raw_from,
            col(CheckResult.ts) < end,
            col(CheckResult.ok).is_(True),
            col(CheckResult.latency_ms).is_not(None),
        )
        .order_by(col(CheckResult.latency_ms))
    )
    values = [float(v) for v in rows.scalars().all() if v is not None]
    count = len(values)
    total = sum(values)
    lo = values[0] if values else None
    hi = values[-1] if values else None
    p50 = percentile(values, 50)
    p95 = percentile(values, 95)
    if not exact:
        hourly = (
            (
                await session.execute(
                    select(HourlyRollup).where(
                        col(HourlyRollup.monitor_id) == monitor.id,
                        col(HourlyRollup.period) >= start,
                        col(HourlyRollup.period) < raw_from,
                        col(HourlyRollup.latency_count) > 0,
                    )
                )
            )
            .scalars()
            .all()
        )
        weights = [(h.latency_count, h.latency_p50, h.latency_p95) for h in hourly]
        if p50 is not None:
            weights.append((count, p50, p95))
        n = sum(w for w, _, _ in weights)
        if n:
            p50 = sum(w * (a or 0) for w, a, _ in weights) / n
            p95 = sum(w * (b or 0) for w, _, b in weights) / n
        for h in hourly:
            count += h.latency_count
            total += h.latency_sum
            lo = h.latency_min if lo is None else min(lo, h.latency_min or lo)
            hi = h.latency_max if hi is None else max(hi, h.latency_max or hi)
    return {
        "count": count,
        "min": lo,
        "avg": (total / count) if count else None,
        "p50": p50,
        "p95": p95,
        "max": hi,
        "exact": exact,
    }


async def uptime_24h_all(session: AsyncSession, tenant_id: int, now: datetime) -> dict[int, float | None]:
    """Exact 24h uptime of every monitor of a tenant in one aggregate query.

    Costly at scale (it reads up to an hour of raw rows per monitor plus 24 hourly
    rows), so the housekeeping pass runs it and caches the answer on the monitor
    rows; :func:`summary` reads the cache. Raw rows are read from the tenant's
    lowest watermark on (an index range on ``ts``), and each monitor's own
    watermark splits raw rows from hourly rollups.
    """
    return await uptime_many(session, tenant_id, now, "24h")


async def uptime_many(
    session: AsyncSession, tenant_id: int, now: datetime, window: str, ids: Collection[int] | None = None
) -> dict[int, float | None]:
    """Exact uptime over ``window`` (a key of :data:`WINDOWS`) of a tenant's monitors
    (only ``ids`` when given) in one aggregate query; see :func:`uptime_24h_all`."""
    start = now - WINDOWS[window]
    m = Monitor.__table__.alias("m")  # type: ignore[attr-defined]
    mm = Monitor.__table__.alias("mm")  # type: ignore[attr-defined]
    h = HourlyRollup.__table__.alias("h")  # type: ignore[attr-defined]
    c = CheckResult.__table__.alias("c")  # type: ignore[attr-defined]
    raw_floor = (
        select(func.coalesce(func.min(func.coalesce(mm.c.rolled_until, start)), start))
        .where(mm.c.tenant_id == tenant_id)
        .scalar_subquery()
    )
    rolled = (
        select(
            h.c.monitor_id,
            func.sum(h.c.up).label("up"),
            func.sum(h.c.total - h.c.maintenance).label("n"),
        )
        .select_from(h.join(mm, mm.c.id == h.c.monitor_id))
        .where(h.c.tenant_id == tenant_id, h.c.period >= start, h.c.period < mm.c.rolled_until)
        .where(*([] if ids is None else [h.c.monitor_id.in_(list(ids))]))
        .group_by(h.c.monitor_id)
        .subquery("rolled")
    )
    raw = (
        select(
            c.c.monitor_id,
            func.sum(case((and_(c.c.ok, not_(c.c.maintenance)), 1), else_=0)).label("up"),
            func.sum(case((not_(c.c.maintenance), 1), else_=0)).label("n"),
        )
        .select_from(c.join(mm, mm.c.id == c.c.monitor_id))
        .where(
            mm.c.tenant_id == tenant_id,
            c.c.ts >= start,
            c.c.ts < now,
            c.c.ts >= raw_floor,
            or_(mm.c.rolled_until.is_(None), c.c.ts >= mm.c.rolled_until),
        )
        .where(*([] if ids is None else [c.c.monitor_id.in_(list(ids))]))
        .group_by(c.c.monitor_id)
        .subquery("raw")
    )
    stmt = (
        select(
            m.c.id,
            (func.coalesce(rolled.c.up, 0) + func.coalesce(raw.c.up, 0)).label("up"),
            (func.coalesce(rolled.c.n, 0) + func.coalesce(raw.c.n, 0)).label("n"),
        )
        .select_from(
            m.outerjoin(rolled, rolled.c.monitor_id == m.c.id).outerjoin(raw, raw.c.monitor_id == m.c.id)
        )
        .where(m.c.tenant_id == tenant_id)
    )
    if ids is not None:
        stmt = stmt.where(m.c.id.in_(list(ids)))
    out: dict[int, float | None] = {}
    for row in (await session.execute(stmt)).all():
        n = int(row.n or 0)
        out[int(row.id)] = round(int(row.up or 0) / n, 6) if n else None
    return out


async def summary(
    session: AsyncSession, tenant_id: int, *, after: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """The tenant's monitors with id > ``after`` (at most ``limit``): state, last latency
    and cached 24h uptime.

    One index range scan over ``monitors`` (``ix_monitors_tenant_id``), nothing
    else, so it stays fast at tens of thousands of monitors.
    """
    now = utcnow()
    stmt = (
        select(
            col(Monitor.id),
            col(Monitor.name),
            col(Monitor.kind),
            col(Monitor.state),
            col(Monitor.last_latency_ms),
            col(Monitor.last_checked_at),
            col(Monitor.state_changed_at),
            col(Monitor.uptime_24h),
            col(Monitor.uptime_24h_at),
            col(Monitor.cert_expires_at),
        )
        .where(col(Monitor.tenant_id) == tenant_id, col(Monitor.id) > after)
        .order_by(col(Monitor.id))
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [
        {
            "id": row[0],
            "name": row[1],
            "kind": row[2],
            "state": row[3],
            "last_latency_ms": row[4],
            "last_checked_at": iso(row[5]),
            "state_changed_at": iso(row[6]),
            "uptime_24h": row[7],
            "uptime_24h_at": iso(row[8]),
            "cert_days_left": cert_days_left(row[9], now),
        }
        for row in (await session.execute(stmt)).all()
    ]


async def state_counts(session: AsyncSession, tenant_id: int) -> dict[str, int]:
    """How many of the tenant's monitors are in each state (one aggregate over
    ``ix_monitors_tenant_state``)."""
    stmt = (
        select(col(Monitor.state), func.count())
        .where(col(Monitor.tenant_id) == tenant_id)
        .group_by(col(Monitor.state))
    )
    return {str(state): int(n) for state, n in (await session.execute(stmt)).all()}

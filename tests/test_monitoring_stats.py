"""Uptime, latency, summary, rollups and retention against hand-checked fixtures
(SQLite and PostgreSQL). Times are fixed, so every number below is worked out by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from app.models.check import CheckResult, DailyRollup, HourlyRollup
from app.models.monitor import Monitor
from app.models.probe import LocationCheck
from app.monitoring import retention, stats
from app.storage.db import Database
from tests.monitoring_fixtures import add_monitor, add_tenant, load_monitor, migrated_db

NOW = datetime(2026, 1, 10, 12, 30, tzinfo=UTC)
MARK = datetime(2026, 1, 10, 10, 0, tzinfo=UTC)  # rolled_until


def t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/stats.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await migrated_db(db_url)
    yield database
    await database.close()


async def seed(db: Database) -> Monitor:
    tenant = await add_tenant(db)
    m = await add_monitor(
        db, tenant, name="api", url="https://x.invalid/", created_at=t(1, 0), rolled_until=MARK
    )
    assert m.id is not None
    raw = [
        # (ts, ok, maintenance, latency) — the first two are below the watermark (already rolled up)
        (t(10, 9, 10), True, False, 100.0),
        (t(10, 9, 20), True, False, 200.0),
        (t(10, 10, 5), True, False, 10.0),
        (t(10, 10, 15), True, False, 20.0),
        (t(10, 10, 25), False, False, None),
        (t(10, 11, 5), True, False, 30.0),
        (t(10, 11, 15), False, True, None),
        (t(10, 12, 5), True, False, 40.0),
        (t(10, 12, 15), True, False, 50.0),
        (t(10, 12, 29), True, False, 60.0),
        (t(10, 12, 31), False, False, None),  # after the window end
    ]
    hourly = [
        # (period, total, up, maintenance)
        (t(3, 12), 7, 0, 0),  # starts before the 7d window: not counted
        (t(3, 18), 5, 5, 0),
        (t(9, 12), 100, 0, 0),  # starts before the 24h window
        (t(9, 13), 10, 5, 2),
        (t(10, 8), 4, 3, 0),
        (t(10, 9), 2, 2, 0),
    ]
    daily = [(t(3, 0), 12, 5, 0), (t(5, 0), 1000, 900, 50), (t(9, 0), 110, 5, 2)]
    async with db.session() as s:
        for ts, ok, maint, latency in raw:
            s.add(
                CheckResult(
                    monitor_id=m.id, tenant_id=tenant, ts=ts, ok=ok, maintenance=maint, latency_ms=latency
                )
            )
        for period, total, up, maint in hourly:
            s.add(
                HourlyRollup(
                    monitor_id=m.id, tenant_id=tenant, period=period, total=total, up=up, maintenance=maint
                )
            )
        for period, total, up, maint in daily:
            s.add(
                DailyRollup(
                    monitor_id=m.id, tenant_id=tenant, period=period, total=total, up=up, maintenance=maint
                )
            )
        await s.commit()
    return m


async def uptime(db: Database, m: Monitor, window: str) -> stats.Uptime:
    fresh = await load_monitor(db, m.id or 0)
    async with db.session() as s:
        return await stats.uptime(s, fresh, NOW - stats.WINDOWS[window], NOW)


async def test_uptime_spans_raw_rows_and_rollups(db: Database) -> None:
    m = await seed(db)
    day = await uptime(db, m, "24h")
    # raw after the mark: 8 checks, 6 up, 1 in maintenance; hourly 13:00, 08:00, 09:00: 16 / 10 up / 2 maint
    assert (day.total, day.up, day.maintenance) == (24, 16, 3)
    assert day.ratio == pytest.approx(16 / 21)
    week = await uptime(db, m, "7d")
    # raw 8/6/1 + daily Jan 5 and Jan 9 (1110/905/52) + hourly Jan 3 18:00 (5/5/0) and Jan 10 08-09 (6/5/0)
    assert (week.total, week.up, week.maintenance) == (1129, 921, 53)
    assert week.ratio == pytest.approx(921 / 1076)
    empty = await uptime(db, await add_monitor(db, m.tenant_id, name="new", created_at=NOW), "24h")
    assert empty.ratio is None and empty.to_wire()["uptime"] is None


async def test_latency_percentiles(db: Database) -> None:
    m = await seed(db)
    async with db.session() as s:
        result = await stats.latency(s, m, NOW - stats.WINDOWS["24h"], NOW, raw_since=NOW - timedelta(days=7))
    # ok latencies in the window: 10 20 30 40 50 60 100 200 (nearest rank)
    assert result["count"] == 8
    assert (result["min"], result["p50"], result["p95"], result["max"]) == (10.0, 40.0, 200.0, 200.0)
    assert result["avg"] == pytest.approx(63.75)
    assert result["exact"] is True


async def test_summary_reads_the_refreshed_uptime_cache(db: Database) -> None:
    m = await seed(db)
    other = await add_monitor(db, m.tenant_id, name="silent", created_at=t(9, 0), rolled_until=MARK)
    async with db.session() as s:
        assert await stats.uptime_24h_all(s, m.tenant_id, NOW) == {m.id: round(16 / 21, 6), other.id: None}
        before = await stats.summary(s, m.tenant_id)
    assert [(r["id"], r["uptime_24h"], r["uptime_24h_at"]) for r in before] == [
        (m.id, None, None),
        (other.id, None, None),
    ]
    assert await retention.refresh_uptime_cache(db, now=NOW) == 2
    async with db.session() as s:
        rows = await stats.summary(s, m.tenant_id)
    assert [(r["id"], r["uptime_24h"]) for r in rows] == [(m.id, round(16 / 21, 6)), (other.id, None)]
    assert rows[0]["uptime_24h_at"] == "2026-01-10T12:30:00.000Z"


async def test_rollup_and_retention_keep_long_window_uptime(db: Database) -> None:
    m = await seed(db)
    before = {w: await uptime(db, m, w) for w in ("24h", "7d")}
    written = await retention.roll_up(db, now=NOW)
    assert written == 2  # hours 10:00 and 11:00; 12:00 has not settled yet
    rolled = await load_monitor(db, m.id or 0)
    assert rolled.rolled_until == t(10, 12)
    async with db.session() as s:
        hours = (
            (
                await s.execute(
                    select(HourlyRollup)
                    .where(col(HourlyRollup.period) >= t(10, 10))
                    .order_by(col(HourlyRollup.period))
                )
            )
            .scalars()
            .all()
        )
    assert [(h.period, h.total, h.up, h.maintenance, h.latency_p50) for h in hours] == [
        (t(10, 10), 3, 2, 0, 10.0),
        (t(10, 11), 2, 1, 1, 30.0),
    ]
    # Rolling again is a no-op (the watermark already moved).
    assert await retention.roll_up(db, now=NOW) == 0
    deleted = await retention.prune(db, retention=timedelta(hours=1), now=NOW, batch=2)
    assert deleted == 7  # everything before 11:30 and below the 12:00 mark
    async with db.session() as s:
        left = (await s.execute(select(CheckResult.ts).order_by(col(CheckResult.ts)))).scalars().all()
    assert left == [t(10, 12, 5), t(10, 12, 15), t(10, 12, 29), t(10, 12, 31)]
    after = {w: await uptime(db, m, w) for w in ("24h", "7d")}
    assert after == before


async def test_roll_up_writes_complete_days(db: Database) -> None:
    tenant = await add_tenant(db)
    m = await add_monitor(
        db, tenant, name="d", url="https://x.invalid/", created_at=t(1, 0), rolled_until=t(1, 20)
    )
    async with db.session() as s:
        for ts, ok in ((t(1, 21, 5), True), (t(1, 23, 50), False), (t(2, 1, 0), True)):
            s.add(
                CheckResult(monitor_id=m.id, tenant_id=tenant, ts=ts, ok=ok, latency_ms=5.0 if ok else None)
            )
        await s.commit()
    await retention.roll_up(db, now=t(2, 3))
    async with db.session() as s:
        days = (await s.execute(select(DailyRollup))).scalars().all()
    assert [(d.period, d.total, d.up, d.latency_count) for d in days] == [(t(1, 0), 2, 1, 1)]


async def test_retention_deletes_old_location_checks(db: Database) -> None:
    m = await seed(db)
    async with db.session() as s:
        for i, ts in enumerate((t(9, 10), t(10, 11), t(10, 11, 31), t(10, 12))):
            s.add(
                LocationCheck(
                    monitor_id=m.id or 0, tenant_id=m.tenant_id, location="eu", ts=ts, ok=True, key=f"k{i}"
                )
            )
        await s.commit()
    deleted = await retention.prune_location_checks(db, retention=timedelta(hours=1), now=NOW, batch=2)
    assert deleted == 2  # older than 11:30
    async with db.session() as s:
        left = (await s.execute(select(LocationCheck.ts).order_by(col(LocationCheck.ts)))).scalars().all()
    assert left == [t(10, 11, 31), t(10, 12)]

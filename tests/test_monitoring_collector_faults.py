"""Nothing in the collector fails the same monitor silently forever: rows that are bad in
the database (written with SQL, bypassing validation, as old data may be) are checked,
recorded as down with the error, or backed off with one log line. Real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlmodel import col

from app.models.base import utcnow
from app.models.check import CheckResult
from app.monitoring.collector import Collector
from app.storage.db import Database
from tests.hostile_targets import Tarpit
from tests.monitoring_fixtures import add_monitor, add_tenant, eventually, load_monitor, migrated_db


@pytest.fixture
async def pg_db(pg_url: str) -> AsyncIterator[Database]:
    db = await migrated_db(pg_url)
    yield db
    await db.close()


async def results(db: Database, monitor_id: int) -> list[CheckResult]:
    async with db.session() as s:
        rows = await s.execute(
            select(CheckResult).where(col(CheckResult.monitor_id) == monitor_id).order_by(col(CheckResult.id))
        )
        return list(rows.scalars().all())


async def corrupt(db: Database, monitor_id: int, assignments: str, **params: object) -> None:
    async with db.session() as s:
        await s.execute(
            text(f"UPDATE monitors SET {assignments} WHERE id = :id"), {"id": monitor_id, **params}
        )
        await s.commit()


async def test_a_runner_failure_is_recorded_as_down_and_the_monitor_moves_on(pg_db: Database) -> None:
    tenant = await add_tenant(pg_db)
    bad_ipv6 = await add_monitor(pg_db, tenant, name="v6", url="http://[::1/", interval=1, timeout=0.5)
    bad_status = await add_monitor(
        pg_db, tenant, name="st", url="http://127.0.0.1:9/", interval=1, timeout=0.5
    )
    await corrupt(pg_db, bad_status.id or 0, "expected_status = CAST(:v AS JSON)", v='["2xx"]')
    collector = Collector(pg_db, None, tick=0.1, owner="one")
    await collector.start()
    try:
        for m in (bad_ipv6, bad_status):

            async def checked_twice(mid: int = m.id or 0) -> bool:
                return len(await results(pg_db, mid)) >= 2

            await eventually(checked_twice, within=15, what=f"{m.name} checked again and again")
    finally:
        await collector.stop()
    for m in (bad_ipv6, bad_status):
        rows = await results(pg_db, m.id or 0)
        assert all(not r.ok for r in rows)
        assert all((r.error or "").startswith("internal check error: ") for r in rows), rows[0].error
        loaded = await load_monitor(pg_db, m.id or 0)
        assert loaded.state == "down" and loaded.lease_owner is None
    assert "InvalidURL" in (rows := await results(pg_db, bad_ipv6.id or 0))[0].error  # type: ignore[operator]
    assert "'2xx' is not a status code" in ((await results(pg_db, bad_status.id or 0))[0].error or "")


async def test_a_recording_failure_backs_off_with_one_log_line(
    pg_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await add_tenant(pg_db)
    broken = await add_monitor(
        pg_db, tenant, name="broken", url="http://127.0.0.1:9/", interval=1, timeout=0.5
    )
    healthy = await add_monitor(
        pg_db, tenant, name="fine", kind="tcp", host="127.0.0.1", port=9, interval=1, timeout=0.5
    )
    await corrupt(pg_db, broken.id or 0, "state = 'bogus'")  # no state the engine knows
    caplog.set_level(logging.WARNING, logger="watchpost.collector")
    collector = Collector(pg_db, None, tick=0.1, owner="one")
    await collector.start()
    try:
        await asyncio.sleep(3)  # three intervals of the healthy monitor
    finally:
        await collector.stop()
    lines = [r for r in caplog.records if r.name == "watchpost.collector" and r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None, "one line, not a traceback"
    assert f"recording monitor {broken.id} failed 1 time(s)" in lines[0].getMessage()
    assert "next try in 30 s" in lines[0].getMessage()
    loaded = await load_monitor(pg_db, broken.id or 0)
    assert loaded.lease_owner is None and loaded.lease_expires_at is None
    assert loaded.next_check_at > utcnow() + timedelta(seconds=20)
    assert len(await results(pg_db, healthy.id or 0)) >= 2  # the rest keeps being checked


async def test_stored_timeouts_are_capped_by_check_timeout_max(pg_db: Database) -> None:
    tenant = await add_tenant(pg_db)
    with Tarpit() as tarpit:
        old = await add_monitor(
            pg_db, tenant, name="old", url=tarpit.url("/"), interval=100000, timeout=86400
        )
        collector = Collector(pg_db, None, tick=0.1, lease_margin=2, owner="one", timeout_max=1.0)
        await collector.start()
        try:
            claimed_at = utcnow()

            async def leased() -> bool:
                return (await load_monitor(pg_db, old.id or 0)).lease_expires_at is not None

            await eventually(leased, within=5, what="the monitor is claimed")
            lease = (await load_monitor(pg_db, old.id or 0)).lease_expires_at
            assert lease is not None and lease < claimed_at + timedelta(seconds=30)

            async def recorded() -> bool:
                return bool(await results(pg_db, old.id or 0))

            await eventually(recorded, within=5, what="a timed-out result after ~1 s")
        finally:
            await collector.stop()
    row = (await results(pg_db, old.id or 0))[0]
    assert row.error == "timed out after 1 s" and row.latency_ms is not None and row.latency_ms < 3000


async def test_a_claim_skips_a_tenant_at_its_cap_and_reaches_the_others(pg_db: Database) -> None:
    hostile, victim = await add_tenant(pg_db, "hostile"), await add_tenant(pg_db, "victim")
    early = utcnow() - timedelta(minutes=5)
    for i in range(30):  # older due rows than anything the victim has
        await add_monitor(pg_db, hostile, name=f"h{i}", url="http://127.0.0.1:9/", interval=60, now=early)
    for i in range(3):
        await add_monitor(pg_db, victim, name=f"v{i}", url="http://127.0.0.1:9/", interval=60)
    collector = Collector(pg_db, None, concurrency=10, owner="one")
    claimed = await collector.claim(10)
    per_tenant = {t: sum(1 for m in claimed if m.tenant_id == t) for t in (hostile, victim)}
    # Alone the hostile tenant may hold 10 // 2; the victim's rows are reached although
    # 25 older hostile rows are due.
    assert per_tenant == {hostile: 5, victim: 3}, per_tenant

"""The collector against real PostgreSQL / SQLite and real loopback targets."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlmodel import col

from app.models.base import utcnow
from app.models.check import CheckResult
from app.models.incident import Incident
from app.models.maintenance import MaintenanceWindow
from app.models.monitor import Monitor
from app.monitoring.collector import Collector
from app.storage.db import Database
from tests.monitoring_fixtures import add_monitor, add_tenant, eventually, load_monitor, migrated_db
from tests.targets import HttpTarget, TcpTarget


@pytest.fixture
async def pg_db(pg_url: str) -> AsyncIterator[Database]:
    db = await migrated_db(pg_url)
    yield db
    await db.close()


async def result_times(db: Database, monitor_id: int) -> list[float]:
    async with db.session() as s:
        rows = await s.execute(
            select(CheckResult.ts).where(CheckResult.monitor_id == monitor_id).order_by(col(CheckResult.ts))
        )
        return [ts.timestamp() for ts in rows.scalars()]


async def test_two_collectors_run_each_check_once_per_interval(pg_db: Database, target: HttpTarget) -> None:
    tenant = await add_tenant(pg_db)
    monitors = []
    for i in range(4):
        target.respond(f"/m{i}", 200)
        monitors.append(
            await add_monitor(pg_db, tenant, name=f"m{i}", url=target.url(f"/m{i}"), interval=1, timeout=0.5)
        )
    a = Collector(pg_db, None, tick=0.1, lease_margin=5, owner="a")
    b = Collector(pg_db, None, tick=0.1, lease_margin=5, owner="b")
    await a.start()
    await b.start()
    try:
        await asyncio.sleep(4.5)
    finally:
        await a.stop()
        await b.stop()
    for i, m in enumerate(monitors):
        assert m.id is not None
        times = await result_times(pg_db, m.id)
        hits = target.hits(f"/m{i}")
        # Every probe was recorded exactly once, by exactly one instance.
        assert hits == len(times), (i, hits, times)
        # Once per interval: 4-6 runs in ~4.5 s, and never two within one interval.
        assert 4 <= hits <= 6, (i, hits)
        # The schedule keeps a fixed cadence (due + interval), so the first gap may be
        # short when the first check started late (both collectors starting up); after
        # that no two checks of one monitor fall within one interval.
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap > 0.6 for gap in gaps[1:]), gaps


async def test_expired_leases_are_taken_over(pg_db: Database, target: HttpTarget) -> None:
    tenant = await add_tenant(pg_db)
    target.respond("/x", 200)
    m = await add_monitor(pg_db, tenant, name="x", url=target.url("/x"), interval=1, timeout=0.5)
    assert m.id is not None
    # A crashed instance left a lease behind.
    async with pg_db.session() as s:
        await s.execute(
            update(Monitor)
            .where(col(Monitor.id) == m.id)
            .values(lease_owner="dead", lease_expires_at=utcnow() + timedelta(seconds=1.5))
        )
        await s.commit()
    survivor = Collector(pg_db, None, tick=0.1, lease_margin=5, owner="survivor")
    await survivor.start()
    try:
        await asyncio.sleep(0.8)
        assert target.hits("/x") == 0, "a live lease must not be stolen"

        async def ran() -> bool:
            return target.hits("/x") >= 1

        await eventually(ran, within=10, what="the survivor takes over after the lease expires")
    finally:
        await survivor.stop()
    assert (await load_monitor(pg_db, m.id)).state == "up"


async def test_down_after_retries_incident_then_recovery(pg_db: Database, target: HttpTarget) -> None:
    tenant = await add_tenant(pg_db)
    target.respond("/svc", 500)
    m = await add_monitor(
        pg_db, tenant, name="svc", url=target.url("/svc"), interval=1, timeout=0.5, fail_threshold=3
    )
    assert m.id is not None
    collector = Collector(pg_db, None, tick=0.1, owner="one")
    await collector.start()
    try:

        async def state_is(want: str) -> bool:
            return (await load_monitor(pg_db, m.id or 0)).state == want

        await eventually(lambda: state_is("down"), what="down after 3 failures")
        assert target.hits("/svc") >= 3
        async with pg_db.session() as s:
            failures = (
                await s.execute(select(func.count()).where(col(CheckResult.monitor_id) == m.id))
            ).scalar_one()
            incident = (
                await s.execute(select(Incident).where(col(Incident.monitor_id) == m.id))
            ).scalar_one()
        assert failures == 3  # pending, pending, then down on the third failure
        assert incident.resolved_at is None and incident.cause == "status 500, expected 200-399"
        target.respond("/svc", 200)
        await eventually(lambda: state_is("up"), what="up again")
        async with pg_db.session() as s:
            incident = (
                await s.execute(select(Incident).where(col(Incident.monitor_id) == m.id))
            ).scalar_one()
        assert incident.resolved_at is not None and incident.resolved_by == "monitor"
    finally:
        await collector.stop()


async def test_maintenance_suppresses_down_and_incidents(tmp_path: object, target: HttpTarget) -> None:
    db = await migrated_db(f"sqlite+aiosqlite:///{tmp_path}/m.db")
    try:
        tenant = await add_tenant(db)
        target.respond("/m", 500)
        m = await add_monitor(db, tenant, name="m", url=target.url("/m"), interval=1, timeout=0.5)
        async with db.session() as s:
            s.add(
                MaintenanceWindow(
                    tenant_id=tenant,
                    name="upgrade",
                    starts_at=utcnow() - timedelta(minutes=1),
                    ends_at=utcnow() + timedelta(seconds=3),
                    all_monitors=True,
                )
            )
            await s.commit()
        collector = Collector(db, None, tick=0.1, owner="one")
        await collector.start()
        try:

            async def state_is(want: str) -> bool:
                return (await load_monitor(db, m.id or 0)).state == want

            await eventually(lambda: state_is("maintenance"), what="maintenance state")
            async with db.session() as s:
                assert (await s.execute(select(func.count()).select_from(Incident))).scalar_one() == 0
            await eventually(lambda: state_is("down"), what="down once the window ends")
            async with db.session() as s:
                assert (await s.execute(select(func.count()).select_from(Incident))).scalar_one() == 1
                flags = (
                    (
                        await s.execute(
                            select(CheckResult.maintenance).where(col(CheckResult.monitor_id) == m.id)
                        )
                    )
                    .scalars()
                    .all()
                )
            assert True in flags and False in flags
        finally:
            await collector.stop()
    finally:
        await db.close()


async def test_tcp_push_and_group(tmp_path: object) -> None:
    db = await migrated_db(f"sqlite+aiosqlite:///{tmp_path}/g.db")
    try:
        tenant = await add_tenant(db)
        with TcpTarget() as tcp:
            t1 = await add_monitor(
                db, tenant, name="t1", kind="tcp", host="127.0.0.1", port=tcp.port, interval=1, timeout=0.5
            )
            t2 = await add_monitor(
                db, tenant, name="t2", kind="tcp", host="127.0.0.1", port=tcp.port, interval=1, timeout=0.5
            )
            push = await add_monitor(
                db, tenant, name="p", kind="push", interval=1, grace=0, now=utcnow() + timedelta(seconds=1)
            )
            group = await add_monitor(
                # A long group interval: the group must still follow its members within a few
                # seconds, because a member's transition makes its groups due at once.
                db,
                tenant,
                name="g",
                kind="group",
                members=[t1.id, t2.id],
                min_up=2,
                interval=600,
                timeout=0.5,
            )
            collector = Collector(db, None, tick=0.1, owner="one")
            await collector.start()
            try:

                async def state_is(mid: int | None, want: str) -> bool:
                    return (await load_monitor(db, mid or 0)).state == want

                await eventually(lambda: state_is(group.id, "up"), what="group up with both members up")
                await eventually(lambda: state_is(push.id, "down"), what="push down without pushes")
                tcp.refuse()
                await eventually(lambda: state_is(t1.id, "down"), what="tcp member down")
                await eventually(lambda: state_is(group.id, "down"), what="group below min_up")
                loaded = await load_monitor(db, group.id or 0)
                assert loaded.last_error is not None and "members up, 2 needed" in loaded.last_error
            finally:
                await collector.stop()
    finally:
        await db.close()


async def test_a_killed_instance_leaves_leases_the_other_takes_over(
    pg_db: Database, target: HttpTarget
) -> None:
    tenant = await add_tenant(pg_db)
    target.respond("/x", 200)
    m = await add_monitor(pg_db, tenant, name="x", url=target.url("/x"), interval=1, timeout=0.5)
    doomed = Collector(pg_db, None, lease_margin=1.5, owner="doomed")
    # The instance claims its due work and dies before checking anything.
    claimed = await doomed.claim(10)
    assert [c.id for c in claimed] == [m.id]
    leased = await load_monitor(pg_db, m.id or 0)
    assert leased.lease_owner == "doomed" and leased.lease_expires_at is not None
    survivor = Collector(pg_db, None, tick=0.1, lease_margin=1.5, owner="survivor")
    await survivor.start()
    try:
        assert await survivor.claim(10) == []  # SKIP LOCKED + live lease: nothing to take yet

        async def up() -> bool:
            return (await load_monitor(pg_db, m.id or 0)).state == "up"

        await eventually(up, within=15, what="the survivor runs the check once the lease expires")
    finally:
        await survivor.stop()
    first = await result_times(pg_db, m.id or 0)
    assert first[0] >= leased.lease_expires_at.timestamp() - 0.05
    assert (await load_monitor(pg_db, m.id or 0)).lease_owner in (None, "survivor")


async def test_a_check_starts_at_its_due_time_and_a_stop_gives_back_unstarted_claims(
    pg_db: Database, target: HttpTarget
) -> None:
    tenant = await add_tenant(pg_db)
    soon = await add_monitor(
        pg_db, tenant, url=target.url("/soon"), interval=60, timeout=2, now=utcnow() + timedelta(seconds=0.8)
    )
    later = await add_monitor(
        pg_db, tenant, url=target.url("/later"), interval=60, timeout=2, now=utcnow() + timedelta(seconds=2.5)
    )
    collector = Collector(pg_db, None, tick=3.0, owner="one")
    await collector.start()
    try:
        # One claim took both (due within the tick); neither has run yet.
        await eventually(
            lambda: _leased(pg_db, [soon.id or 0, later.id or 0], "one"), within=5, what="both claimed"
        )
        assert target.hits("/soon") == 0 and target.hits("/later") == 0
        await asyncio.sleep(0.5)
        assert target.hits("/soon") == 0, "started before its due time"
        await eventually(lambda: _hit(target, "/soon"), within=3, what="the check at its due time")
    finally:
        await collector.stop()
    assert target.hits("/later") == 0
    unstarted = await load_monitor(pg_db, later.id or 0)
    # Given back at stop: another instance may run it on time instead of after the lease.
    assert unstarted.lease_owner is None and unstarted.lease_expires_at is None


async def _leased(db: Database, ids: list[int], owner: str) -> bool:
    async with db.session() as s:
        owners = (await s.execute(select(col(Monitor.lease_owner)).where(col(Monitor.id).in_(ids)))).scalars()
        return all(o == owner for o in owners)


async def _hit(target: HttpTarget, path: str) -> bool:
    return target.hits(path) > 0

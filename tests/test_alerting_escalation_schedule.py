"""The escalation schedule against real PostgreSQL: concurrent scanners (separate connection
pools, as separate instances have), time passing while no instance ran, and acknowledgement.

State changes go through the real monitoring recorder, so the hook runs inside the real
state-change transaction; the scanner is the real ``escalation.run_due`` given the time."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlmodel import col

from app.alerting import escalation, outbox
from app.models.base import utcnow
from app.models.delivery import Delivery
from app.models.escalation import EscalationPolicy, IncidentEscalation
from app.models.incident import Incident
from app.storage.db import Database
from tests.monitoring_fixtures import add_monitor, add_tenant, migrated_db
from tests.test_alerting_outbox import add_channel, record


@pytest.fixture
async def instances(pg_url: str) -> AsyncIterator[list[Database]]:
    first = await migrated_db(pg_url)
    dbs = [first, Database(pg_url), Database(pg_url)]
    yield dbs
    for db in dbs:
        await db.close()


async def escalation_keys(db: Database) -> list[str]:
    async with db.session() as s:
        rows = await s.execute(
            select(col(Delivery.dedupe_key))
            .where(col(Delivery.kind) == "escalation")
            .order_by(col(Delivery.id))
        )
        return [str(k) for k in rows.scalars().all()]


async def scan_everywhere(dbs: list[Database], at: dt.datetime) -> None:
    """Every instance scans at the same moment (twice each), as racing workers would."""
    await asyncio.gather(*(escalation.run_due(db, hold=60, now=at) for db in dbs * 2))


async def test_steps_are_queued_once_by_racing_scanners_none_skipped_and_ack_stops_them(
    instances: list[Database],
) -> None:
    db = instances[0]
    tenant = await add_tenant(db)
    a = await add_channel(db, tenant, "a", "http://127.0.0.1:9/a")
    b = await add_channel(db, tenant, "b", "http://127.0.0.1:9/b")
    async with db.session() as s:
        policy = EscalationPolicy(
            tenant_id=tenant,
            name="p",
            steps=[
                {"after": 0, "channels": [a, b]},
                {"after": 1, "channels": [b]},
                {"after": 2, "channels": [a, b]},
            ],
            repeat_every=1,
        )
        s.add(policy)
        await s.commit()
    monitor = await add_monitor(db, tenant, state="up", channels=[a], escalation_policy=policy.id)
    assert await record(db, monitor.id or 0, ok=False) is not None

    async with db.session() as s:
        incident = (await s.execute(select(Incident))).scalar_one()
    opened = incident.opened_at
    i = incident.id
    # At once: the "down" alert went to the monitor's channel a; step 1 adds only b.
    assert await escalation_keys(db) == [f"e:{i}:0:{b}"]

    await scan_everywhere(instances, opened + dt.timedelta(seconds=30))
    assert await escalation_keys(db) == [f"e:{i}:0:{b}"]  # step 2 is not due yet

    await scan_everywhere(instances, opened + dt.timedelta(seconds=90))
    assert await escalation_keys(db) == [f"e:{i}:0:{b}", f"e:{i}:1:{b}"]

    # No instance ran for more than eight minutes: step 3 is still sent (late, never skipped),
    # the repeats that fell due meanwhile collapse into the latest one.
    await scan_everywhere(instances, opened + dt.timedelta(minutes=10, seconds=30))
    keys = await escalation_keys(db)
    assert keys[2:] == [f"e:{i}:2:{a}", f"e:{i}:2:{b}", f"e:{i}:10:{a}", f"e:{i}:10:{b}"]
    async with db.session() as s:
        esc = await s.get(IncidentEscalation, i)
        assert esc is not None and esc.step == 11
        assert esc.due_at == opened + dt.timedelta(minutes=11)

    # Acknowledged: the first call wins, the schedule stops for every scanner.
    async with instances[1].session() as s:
        inc = await s.get(Incident, i)
        assert inc is not None
        assert await escalation.acknowledge(s, inc, "user:alice") is True
        await s.commit()
    async with instances[2].session() as s:
        inc = await s.get(Incident, i)
        assert inc is not None
        assert await escalation.acknowledge(s, inc, "user:bob") is False
        await s.commit()
        assert inc.acked_by == "user:alice"
    await scan_everywhere(instances, opened + dt.timedelta(hours=2))
    assert len(await escalation_keys(db)) == 6
    async with db.session() as s:
        esc = await s.get(IncidentEscalation, i)
        assert esc is not None and (esc.stop_reason, esc.due_at) == ("acknowledged", None)

    # The recovery reaches the monitor's channel and every channel the escalation notified.
    await record(db, monitor.id or 0, ok=True)
    async with db.session() as s:
        ups = await s.execute(
            select(col(Delivery.channel_id))
            .where(col(Delivery.state) == "up")
            .order_by(col(Delivery.channel_id))
        )
        assert list(ups.scalars().all()) == sorted([a, b])


async def test_a_covered_dependent_gets_no_still_down_reminders(instances: list[Database]) -> None:
    db = instances[0]
    tenant = await add_tenant(db)
    ch = await add_channel(db, tenant, "ops", "http://127.0.0.1:9/ops", remind_every=1)
    parent = await add_monitor(db, tenant, name="switch", state="up", channels=[ch])
    child = await add_monitor(db, tenant, name="app", state="up", channels=[ch], depends_on=[parent.id])
    await record(db, parent.id or 0, ok=False)
    await record(db, child.id or 0, ok=False)
    async with db.session() as s:
        attached = (
            await s.execute(select(Incident).where(col(Incident.monitor_id) == child.id))
        ).scalar_one()
    assert attached.parent_id is not None and attached.notified is False

    assert await outbox.enqueue_reminders(db, now=utcnow() + dt.timedelta(minutes=2, seconds=5)) == 1
    async with db.session() as s:
        reminded = await s.execute(select(col(Delivery.monitor_id)).where(col(Delivery.kind) == "reminder"))
        assert list(reminded.scalars().all()) == [parent.id]

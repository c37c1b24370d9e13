"""Batched recording (``recorder.record_steady`` through ``Collector._record_batch``) on
PostgreSQL (one UPDATE … FROM VALUES) and SQLite (one UPDATE per row): the same
compare-and-set as a single recording, one result row per winner, none for a loser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlmodel import col

from app.models.base import utcnow
from app.models.check import CheckResult
from app.models.incident import Incident
from app.models.monitor import Monitor
from app.monitoring.checks import CheckOutcome
from app.monitoring.collector import Collector
from app.protocol import PkgID
from app.storage.db import Database
from tests.monitoring_fixtures import add_monitor, add_tenant, load_monitor, migrated_db


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite+aiosqlite:///{tmp_path}/batch.db"


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await migrated_db(db_url)
    try:
        yield database
    finally:
        await database.close()


async def _claimed(db: Database, collector: Collector, count: int, **fields: object) -> list[Monitor]:
    tenant = await add_tenant(db)
    for n in range(count):
        await add_monitor(db, tenant, name=f"m{n}", url=f"http://127.0.0.1:9/{n}", interval=60, **fields)
    claimed = await collector.claim(count)
    assert len(claimed) == count
    return sorted(claimed, key=lambda m: m.id or 0)


async def test_steady_outcomes_recorded_together_and_a_lost_race_writes_nothing(db: Database) -> None:
    collector = Collector(db, None, owner="me")
    monitors = await _claimed(db, collector, 5, state="up", ok_streak=3)
    due_before = {m.id: m.next_check_at for m in monitors}
    cert = utcnow() + timedelta(days=30)
    async with db.session() as s:
        # Another writer (a push, CHECK_NOW) recorded monitors[1] while we checked; someone
        # took monitors[2]'s lease; someone moved monitors[3]'s due time (a group nudge).
        await s.execute(update(Monitor).where(col(Monitor.id) == monitors[1].id).values(state_seq=7))
        await s.execute(update(Monitor).where(col(Monitor.id) == monitors[2].id).values(lease_owner="other"))
        nudged = utcnow() - timedelta(seconds=1)
        await s.execute(update(Monitor).where(col(Monitor.id) == monitors[3].id).values(next_check_at=nudged))
        await s.execute(update(Monitor).where(col(Monitor.id) == monitors[4].id).values(cert_expires_at=cert))
        await s.commit()
    outcomes = [
        CheckOutcome(True, 1.5, 200),
        CheckOutcome(True, 2.0, 200),
        CheckOutcome(True, 2.5, 200),
        CheckOutcome(True, 3.0, 204),
        CheckOutcome(True, 3.5, 200),
    ]
    recordings = await collector._record_batch(list(zip(monitors, outcomes, strict=True)))
    assert [r is not None for r in recordings] == [True, False, False, True, True]

    async with db.session() as s:
        rows = (await s.execute(select(CheckResult).order_by(col(CheckResult.monitor_id)))).scalars().all()
    assert [(r.monitor_id, r.latency_ms, r.status_code) for r in rows] == [
        (monitors[0].id, 1.5, 200),
        (monitors[3].id, 3.0, 204),
        (monitors[4].id, 3.5, 200),
    ]
    first = recordings[0]
    assert first is not None and first.result.id == rows[0].id and first.transition is None
    # The check-result event carries the stored row's id; no status event without a change.
    assert [e[2] for e in first.events] == [int(PkgID.EVENT_CHECK_RESULT)]
    assert first.events[0][3]["id"] == rows[0].id and first.events[0][3]["state"] == "up"

    won = await load_monitor(db, monitors[0].id or 0)
    assert (won.state_seq, won.ok_streak, won.last_latency_ms, won.lease_owner) == (1, 4, 1.5, None)
    assert won.last_checked_at is not None and abs((won.last_checked_at - utcnow()).total_seconds()) < 60
    assert won.next_check_at == due_before[won.id] + timedelta(seconds=60)
    assert first.monitor.state_seq == 1 and first.monitor.lease_owner is None  # the snapshot follows
    lost_seq = await load_monitor(db, monitors[1].id or 0)
    assert (lost_seq.state_seq, lost_seq.last_latency_ms) == (7, None)
    lost_lease = await load_monitor(db, monitors[2].id or 0)
    assert lost_lease.last_latency_ms is None and lost_lease.lease_owner == "other"
    kept_nudge = await load_monitor(db, monitors[3].id or 0)
    assert abs((kept_nudge.next_check_at - nudged).total_seconds()) < 0.001  # theirs is kept
    kept_cert = await load_monitor(db, monitors[4].id or 0)
    assert kept_cert.cert_expires_at is not None  # an http outcome has no certificate to replace it
    assert abs((kept_cert.cert_expires_at - cert).total_seconds()) < 0.001


async def test_transitions_in_a_batch_open_incidents_one_each(db: Database) -> None:
    collector = Collector(db, None, owner="me")
    monitors = await _claimed(db, collector, 6, state="up")
    down = CheckOutcome(False, 5.0, 500, "status 500, expected 200-399")
    up = CheckOutcome(True, 1.0, 200)
    # Four go down (a state change each: incident, event), two stay up (steady).
    items = [(m, down if n < 4 else up) for n, m in enumerate(monitors)]
    recordings = await collector._record_batch(items)
    assert all(r is not None for r in recordings)
    changed = [r for r in recordings if r is not None and r.transition is not None]
    assert len(changed) == 4 and all(r.incident_action == "opened" for r in changed)
    async with db.session() as s:
        incidents = (await s.execute(select(Incident))).scalars().all()
        results = (await s.execute(select(CheckResult))).scalars().all()
    assert sorted(i.monitor_id for i in incidents) == sorted(m.id or 0 for m in monitors[:4])
    assert len(results) == 6
    for monitor in monitors[:4]:
        assert (await load_monitor(db, monitor.id or 0)).state == "down"

    # The next round: all come back up; each open incident is resolved by its own monitor.
    again = await collector.claim(6)
    assert len(again) == 0  # not due yet (interval 60 s)
    async with db.session() as s:
        await s.execute(update(Monitor).values(next_check_at=utcnow()))
        await s.commit()
    again = sorted(await collector.claim(6), key=lambda m: m.id or 0)
    recordings = await collector._record_batch([(m, up) for m in again])
    resolved = [r for r in recordings if r is not None and r.incident_action == "resolved"]
    assert sorted(r.monitor.id or 0 for r in resolved) == sorted(m.id or 0 for m in monitors[:4])
    async with db.session() as s:
        still_open = (
            (await s.execute(select(Incident).where(col(Incident.resolved_at).is_(None)))).scalars().all()
        )
    assert still_open == []


async def test_first_checks_join_the_batch_and_a_group_member_is_nudged_its_group(db: Database) -> None:
    collector = Collector(db, None, owner="me")
    monitors = await _claimed(db, collector, 4)  # pending: their first check is pending -> up
    async with db.session() as s:
        far = utcnow() + timedelta(hours=1)
        group = Monitor(
            tenant_id=monitors[0].tenant_id,
            name="g",
            kind="group",
            members=[monitors[3].id or 0],
            next_check_at=far,
        )
        s.add(group)
        await s.commit()
    before = {m.id: m.state_changed_at for m in monitors}
    recordings = await collector._record_batch([(m, CheckOutcome(True, 1.0, 200)) for m in monitors])
    assert all(r is not None and r.transition is not None for r in recordings)
    for rec in recordings:
        assert rec is not None and rec.incident is None
        kinds = [e[2] for e in rec.events]
        assert kinds == [int(PkgID.EVENT_CHECK_RESULT), int(PkgID.EVENT_MONITOR_STATUS)], kinds
        status = rec.events[1][3]
        assert (status["previous"], status["state"]) == ("pending", "up")
        stored = await load_monitor(db, rec.monitor.id or 0)
        assert stored.state == "up" and stored.state_seq == 1 and stored.lease_owner is None
        assert stored.state_changed_at > before[stored.id]
    async with db.session() as s:
        assert len((await s.execute(select(CheckResult))).scalars().all()) == 4
        assert (await s.execute(select(Incident))).scalars().all() == []
    # The member's transition made its group due at once (the per-row path's nudge).
    nudged = await load_monitor(db, group.id or 0)
    assert nudged.next_check_at < utcnow()

"""The outbox and delivery workers against real PostgreSQL / SQLite and real receivers.

State changes are recorded through the monitoring recorder (so the alerting
hook runs inside the real state-change transaction); workers are the real
``DeliveryWorker`` with short timings.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlmodel import col

from app.alerting import outbox
from app.alerting.backoff import RetryPolicy
from app.alerting.worker import DeliveryOptions, DeliveryWorker
from app.models.base import utcnow
from app.models.channel import Channel
from app.models.delivery import Delivery, DeliveryAttempt
from app.models.monitor import Monitor
from app.monitoring import recorder
from app.monitoring.checks import CheckOutcome
from app.storage.db import Database
from tests.monitoring_fixtures import add_monitor, add_tenant, eventually, load_monitor, migrated_db
from tests.receivers import HttpReceiver, Reply

FAST = DeliveryOptions(
    timeout=2.0,
    poll_interval=0.05,
    batch=10,
    lease=30.0,
    policy=RetryPolicy(base=0.05, cap=0.2, max_attempts=4),
    flag_after=2,
    reminder_interval=3600.0,
)


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite+aiosqlite:///{tmp_path / 'wp.db'}"


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await migrated_db(db_url)
    yield database
    await database.close()


@pytest.fixture
async def pg_db(pg_url: str) -> AsyncIterator[Database]:
    database = await migrated_db(pg_url)
    yield database
    await database.close()


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as rx:
        yield rx


async def add_channel(db: Database, tenant_id: int, name: str, url: str, **fields: Any) -> int:
    kind = fields.pop("kind", "webhook")
    async with db.session() as s:
        channel = Channel(
            tenant_id=tenant_id, name=name, kind=kind, config={"url": url, **fields.pop("config", {})}
        )
        for key, value in fields.items():
            setattr(channel, key, value)
        s.add(channel)
        await s.commit()
        assert channel.id is not None
        return channel.id


async def record(
    db: Database, monitor_id: int, ok: bool, error: str | None = None
) -> recorder.Recording | None:
    """One check outcome through the real recorder, committed like the collector does."""
    monitor = await load_monitor(db, monitor_id)
    async with db.session() as s:
        rec = await recorder.record(
            s,
            monitor,
            CheckOutcome(ok=ok, error=None if ok else error or "HTTP 503"),
            now=utcnow(),
            in_maintenance=False,
        )
        await s.commit()
    return rec


async def deliveries(db: Database, **where: Any) -> list[Delivery]:
    async with db.session() as s:
        stmt = select(Delivery).order_by(col(Delivery.id))
        for key, value in where.items():
            stmt = stmt.where(getattr(Delivery, key) == value)
        return list((await s.execute(stmt)).scalars().all())


async def attempts(db: Database, delivery_id: int) -> list[DeliveryAttempt]:
    async with db.session() as s:
        stmt = select(DeliveryAttempt).where(col(DeliveryAttempt.delivery_id) == delivery_id)
        return list((await s.execute(stmt.order_by(col(DeliveryAttempt.id)))).scalars().all())


async def settled(db: Database) -> bool:
    return await outbox.pending_count(db) == 0


async def test_down_creates_one_delivery_per_linked_matching_channel(
    db: Database, receiver: HttpReceiver
) -> None:
    tenant = await add_tenant(db)
    other_tenant = await add_tenant(db, "other")
    hook = await add_channel(
        db, tenant, "hook", f"{receiver.url}/hook", config={"secret": "0123456789abcdef"}
    )
    slack = await add_channel(db, tenant, "slack", f"{receiver.url}/slack", kind="slack")
    only_up = await add_channel(db, tenant, "only-up", f"{receiver.url}/up", on=["up"])
    disabled = await add_channel(db, tenant, "off", f"{receiver.url}/off", enabled=False)
    unlinked = await add_channel(db, tenant, "unlinked", f"{receiver.url}/unlinked")
    foreign = await add_channel(db, other_tenant, "foreign", f"{receiver.url}/foreign")
    monitor = await add_monitor(
        db, tenant, name="api", state="up", channels=[hook, slack, only_up, disabled, foreign, 9999]
    )
    assert monitor.id is not None

    rec = await record(db, monitor.id, ok=False, error="HTTP 503")
    assert rec is not None and rec.incident_action == "opened"
    rows = await deliveries(db)
    assert sorted(d.channel_id for d in rows) == [hook, slack]
    assert {(d.state, d.previous_state, d.reason, d.status) for d in rows} == {
        ("down", "up", "HTTP 503", "pending")
    }
    assert unlinked not in {d.channel_id for d in rows}

    # A failing check while already down is not a new state change: no new deliveries.
    await record(db, monitor.id, ok=False)
    assert len(await deliveries(db)) == 2

    worker = DeliveryWorker(db, FAST)
    await worker.start()
    try:
        await receiver.wait_for(2)
        await eventually(lambda: settled(db), what="both deliveries finished")
        await receiver.stays_at(2, 0.5)
    finally:
        await worker.stop()
    by_path = {r.path: r for r in receiver.requests}
    assert set(by_path) == {"/hook", "/slack"}
    signed = by_path["/hook"]
    expected = "sha256=" + hmac.new(b"0123456789abcdef", signed.body, hashlib.sha256).hexdigest()
    assert signed.headers["x-watchpost-signature"] == expected
    assert signed.json()["state"] == "down" and signed.json()["monitor"]["name"] == "api"
    assert {d.status for d in await deliveries(db)} == {"delivered"}

    # Coming back up alerts "up" to the channels that want it (only-up included).
    await record(db, monitor.id, ok=True)
    ups = await deliveries(db, state="up")
    assert sorted(d.channel_id for d in ups) == [hook, slack, only_up]


async def test_fails_twice_then_succeeds_records_three_attempts_one_delivery(
    db: Database, receiver: HttpReceiver
) -> None:
    tenant = await add_tenant(db)
    channel = await add_channel(db, tenant, "hook", receiver.url)
    monitor = await add_monitor(db, tenant, name="db", state="up", channels=[channel])
    assert monitor.id is not None
    receiver.fail(2, status=500)
    await record(db, monitor.id, ok=False)
    worker = DeliveryWorker(db, FAST)
    await worker.start()
    try:
        await receiver.wait_for(3)
        await eventually(lambda: settled(db), what="delivery finished")
    finally:
        await worker.stop()
    [delivery] = await deliveries(db)
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    tries = await attempts(db, delivery.id or 0)
    assert [(a.attempt, a.ok, a.status_code) for a in tries] == [
        (1, False, 500),
        (2, False, 500),
        (3, True, 200),
    ]
    assert all(a.worker == worker.owner for a in tries)
    # Every try carried the same delivery id, so the receiver can drop duplicates.
    assert {r.headers["x-watchpost-delivery"] for r in receiver.requests} == {str(delivery.id)}


async def test_permanent_400_is_not_retried_and_flags_the_channel_after_n(
    db: Database, receiver: HttpReceiver
) -> None:
    tenant = await add_tenant(db)
    channel = await add_channel(db, tenant, "broken", receiver.url)
    monitor = await add_monitor(db, tenant, name="web", state="up", channels=[channel])
    assert monitor.id is not None
    receiver.default = Reply(status=400, body=b"invalid_payload")
    worker = DeliveryWorker(db, FAST)
    await worker.start()
    try:
        await record(db, monitor.id, ok=False)
        await receiver.wait_for(1)
        await eventually(lambda: settled(db), what="first delivery finished")
        await receiver.stays_at(1, 0.6)  # several backoff ceilings: no retry came
        async with db.session() as s:
            ch = await s.get(Channel, channel)
            assert ch is not None and (ch.failure_streak, ch.flagged_at) == (1, None)

        await record(db, monitor.id, ok=True)  # "up" fails for good too: second in a row
        await receiver.wait_for(2)
        await eventually(lambda: settled(db), what="second delivery finished")
    finally:
        await worker.stop()
    rows = await deliveries(db)
    assert [(d.status, d.attempts, d.last_status_code) for d in rows] == [
        ("failed", 1, 400),
        ("failed", 1, 400),
    ]
    assert "invalid_payload" in (rows[0].last_error or "")
    async with db.session() as s:
        ch = await s.get(Channel, channel)
        assert ch is not None and ch.failure_streak == 2 and ch.flagged_at is not None
        assert "2 deliveries in a row failed" in (ch.flagged_reason or "")


async def test_retries_stop_at_the_attempt_budget(db: Database, receiver: HttpReceiver) -> None:
    tenant = await add_tenant(db)
    channel = await add_channel(db, tenant, "down", receiver.url)
    monitor = await add_monitor(db, tenant, name="x", state="up", channels=[channel])
    assert monitor.id is not None
    receiver.default = Reply(status=503)
    await record(db, monitor.id, ok=False)
    worker = DeliveryWorker(db, FAST)
    await worker.start()
    try:
        await eventually(lambda: settled(db), what="delivery gave up")
    finally:
        await worker.stop()
    [delivery] = await deliveries(db)
    assert (delivery.status, delivery.attempts) == ("failed", FAST.policy.max_attempts)
    assert len(receiver.requests) == FAST.policy.max_attempts


async def test_a_pending_delivery_survives_a_restart(db: Database, receiver: HttpReceiver) -> None:
    tenant = await add_tenant(db)
    channel = await add_channel(db, tenant, "hook", receiver.url)
    monitor = await add_monitor(db, tenant, name="svc", state="up", channels=[channel])
    assert monitor.id is not None
    # The first instance's send hangs past its timeout and the instance stops.
    receiver.hang(1)
    slow = DeliveryOptions(
        timeout=0.5, poll_interval=0.05, policy=RetryPolicy(base=0.05, cap=0.1, max_attempts=5)
    )
    first = DeliveryWorker(db, slow)
    await first.start()
    await record(db, monitor.id, ok=False)
    await receiver.wait_for(1)
    await first.stop()
    [pending] = await deliveries(db)
    assert pending.status == "pending" and pending.lease_owner is None

    second = DeliveryWorker(db, FAST)
    await second.start()
    try:
        await receiver.wait_for(2)
        await eventually(lambda: settled(db), what="delivered after restart")
    finally:
        await second.stop()
    [delivery] = await deliveries(db)
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert [a.worker for a in await attempts(db, delivery.id or 0)] == [first.owner, second.owner]


async def test_a_crashed_instances_lease_expires_and_another_delivers(
    pg_db: Database, receiver: HttpReceiver
) -> None:
    tenant = await add_tenant(pg_db)
    channel = await add_channel(pg_db, tenant, "hook", receiver.url)
    monitor = await add_monitor(pg_db, tenant, name="svc", state="up", channels=[channel])
    assert monitor.id is not None
    await record(pg_db, monitor.id, ok=False)
    # A worker claimed the row and died without releasing it.
    [ghost] = await outbox.claim(pg_db, "crashed-instance", limit=10, lease_seconds=0.5)
    assert ghost.delivery.status == "sending"
    worker = DeliveryWorker(pg_db, FAST)
    await worker.start()
    try:
        await receiver.wait_for(1)
        await eventually(lambda: settled(pg_db), what="delivered by the survivor")
    finally:
        await worker.stop()
    [delivery] = await deliveries(pg_db)
    assert (delivery.status, delivery.attempts) == ("delivered", 1)


async def test_two_workers_on_postgresql_deliver_each_alert_exactly_once(
    pg_db: Database, receiver: HttpReceiver
) -> None:
    tenant = await add_tenant(pg_db)
    channels = [await add_channel(pg_db, tenant, f"c{i}", f"{receiver.url}/c{i}") for i in range(3)]
    monitors = [
        await add_monitor(pg_db, tenant, name=f"m{i}", state="up", channels=channels) for i in range(8)
    ]
    workers = [DeliveryWorker(pg_db, FAST, owner=f"w{i}") for i in range(2)]
    for w in workers:
        await w.start()
    try:
        await asyncio.gather(*(record(pg_db, m.id or 0, ok=False) for m in monitors))
        await receiver.wait_for(24)
        await eventually(lambda: settled(pg_db), what="all delivered")
        await receiver.stays_at(24, 0.5)
    finally:
        for w in workers:
            await w.stop()
    ids = [r.headers["x-watchpost-delivery"] for r in receiver.requests]
    assert len(ids) == len(set(ids)) == 24
    rows = await deliveries(pg_db)
    assert len(rows) == 24 and {d.attempts for d in rows} == {1}


async def test_disabled_before_send_is_cancelled(db: Database, receiver: HttpReceiver) -> None:
    tenant = await add_tenant(db)
    channel = await add_channel(db, tenant, "hook", receiver.url)
    monitor = await add_monitor(db, tenant, name="svc", state="up", channels=[channel])
    assert monitor.id is not None
    await record(db, monitor.id, ok=False)
    async with db.session() as s:
        await s.execute(update(Channel).where(col(Channel.id) == channel).values(enabled=False))
        await s.commit()
    worker = DeliveryWorker(db, FAST)
    await worker.start()
    try:
        await eventually(lambda: settled(db), what="cancelled")
    finally:
        await worker.stop()
    [delivery] = await deliveries(db)
    assert delivery.status == "cancelled" and receiver.requests == []


async def test_reminders_are_added_once_per_period(db: Database) -> None:
    tenant = await add_tenant(db)
    remind = await add_channel(db, tenant, "remind", "http://127.0.0.1:9/", remind_every=10)
    quiet = await add_channel(db, tenant, "quiet", "http://127.0.0.1:9/")
    down_since = utcnow() - dt.timedelta(minutes=25)
    monitor = await add_monitor(db, tenant, name="svc", state="down", channels=[remind, quiet])
    async with db.session() as s:
        await s.execute(
            update(Monitor)
            .where(col(Monitor.id) == monitor.id)
            .values(state_changed_at=down_since, state_seq=4)
        )
        await s.commit()
    assert await outbox.enqueue_reminders(db) == 1
    assert await outbox.enqueue_reminders(db) == 0  # the same period: nothing new, on any instance
    [reminder] = await deliveries(db)
    assert (reminder.kind, reminder.channel_id, reminder.dedupe_key) == (
        "reminder",
        remind,
        f"r:{monitor.id}:4:{remind}:2",
    )
    assert await outbox.enqueue_reminders(db, now=down_since + dt.timedelta(minutes=31)) == 1


async def test_old_finished_deliveries_are_purged_with_their_attempts(
    db: Database, receiver: HttpReceiver
) -> None:
    tenant = await add_tenant(db)
    channel = await add_channel(db, tenant, "hook", receiver.url)
    live = await add_channel(db, tenant, "later", receiver.url, enabled=False)
    monitor = await add_monitor(db, tenant, name="svc", state="up", channels=[channel, live])
    assert monitor.id is not None
    await record(db, monitor.id, ok=False)
    worker = DeliveryWorker(db, FAST)
    await worker.start()
    try:
        await eventually(lambda: settled(db), what="delivered")
    finally:
        await worker.stop()
    # A second, still pending delivery, just as old: it must survive the purge.
    async with db.session() as s:
        await s.execute(update(Channel).where(col(Channel.id) == live).values(enabled=True))
        await s.commit()
    await record(db, monitor.id, ok=True)
    old = utcnow() - dt.timedelta(days=40)
    async with db.session() as s:
        await s.execute(update(Delivery).values(created_at=old))
        await s.commit()
    before = await deliveries(db)
    done = [d for d in before if d.status != "pending"]
    assert done and any(d.status == "pending" for d in before)
    assert await outbox.purge_finished(db, older_than=utcnow() - dt.timedelta(days=30)) == len(done)
    assert {d.status for d in await deliveries(db)} == {"pending"}
    for d in done:
        assert await attempts(db, d.id or 0) == []
    assert await outbox.purge_finished(db, older_than=utcnow() - dt.timedelta(days=30)) == 0


async def test_unknown_channel_ids_names_foreign_and_missing_ids(db: Database) -> None:
    from app.alerting.channels import unknown_channel_ids

    tenant, other = await add_tenant(db), await add_tenant(db, "other")
    mine = await add_channel(db, tenant, "mine", "http://127.0.0.1:9/")
    theirs = await add_channel(db, other, "theirs", "http://127.0.0.1:9/")
    async with db.session() as s:
        assert await unknown_channel_ids(s, tenant, [mine, theirs, 424242]) == sorted([theirs, 424242])
        assert await unknown_channel_ids(s, tenant, [mine]) == []
        assert await unknown_channel_ids(s, tenant, []) == []

"""The alert outbox: writing deliveries, claiming them, recording what happened.

Three writers, each one short transaction:

- :func:`enqueue_state_change` runs *inside* the transaction that records a
  monitor's state change (called from ``app.monitoring.hooks``), so the change
  and its deliveries commit together. The ``dedupe_key`` unique index makes a
  second insert for the same (transition, channel) impossible.
- :func:`claim` hands a worker a batch of due deliveries under a lease.
  PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so N instances take disjoint rows
  without waiting on each other; SQLite: one writer at a time anyway (single
  instance). A lease that expires (the instance died mid-send) makes the row
  due again.
- :func:`record_attempt` stores one attempt and moves the delivery on:
  delivered, failed (permanent error or retries spent), or pending again with
  a backoff. Only the lease holder may move it (compare-and-set on the owner).

:func:`enqueue_reminders` adds "still down" reminders for channels with
``remind_every``; it is idempotent, so every instance may run it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.alerting.backoff import RetryPolicy, next_retry_delay
from app.alerting.message import Alert, AlertKind
from app.alerting.senders import SendResult
from app.models.base import utcnow
from app.models.channel import Channel
from app.models.delivery import Delivery, DeliveryAttempt
from app.models.incident import Incident
from app.models.monitor import Monitor
from app.storage.db import Database

log = logging.getLogger("watchpost.alerting")

_REASON_MAX = 500
#: How ``last_error`` of a delivery held by quiet hours begins.
HELD_PREFIX = "held by the channel's quiet hours"
#: Channel kinds told when an incident is acknowledged in Watchpost.
ACK_KINDS = ("pagerduty",)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this worker holds the lease on, with its channel as of the claim."""

    delivery: Delivery
    channel: Channel

    def alert(self) -> Alert:
        d = self.delivery
        kinds: dict[str, AlertKind] = {
            "reminder": "reminder",
            "test": "test",
            "certificate": "certificate",
            "ack": "ack",
        }
        kind: AlertKind = kinds.get(d.kind, "state")
        return Alert(
            monitor_name=d.monitor_name,
            state=d.state,
            at=d.event_at,
            kind=kind,
            monitor_id=d.monitor_id,
            previous_state=d.previous_state,
            reason=d.reason,
            delivery_id=d.id,
        )


# ------------------------------------------------------------------ enqueue


async def enqueue_for_transition(
    session: AsyncSession,
    monitor: Monitor,
    previous_state: str,
    state: str,
    incident_action: str | None,
) -> list[Delivery]:
    """The state-change hook's body: decide whether a transition alerts, then enqueue.

    Alerts follow incidents, so maintenance, pause and a fresh monitor's first
    "up" stay quiet: "opened" alerts ``down``; "resolved" alerts the state the
    monitor came back to (``up``, or ``degraded``, which channels subscribed to
    ``up`` also get); a monitor slipping from up to degraded alerts channels
    subscribed to ``degraded``, and its return from degraded to up alerts them
    (only them) again.
    """
    if incident_action == "opened":
        return await enqueue_state_change(session, monitor, previous_state, "down")
    if incident_action == "resolved":
        return await enqueue_state_change(session, monitor, previous_state, state, match="up")
    if state == "degraded" and previous_state == "up":
        return await enqueue_state_change(session, monitor, previous_state, state)
    if state == "up" and previous_state == "degraded":
        # Back from degraded: only the channels that heard about it hear it ended.
        return await enqueue_state_change(session, monitor, previous_state, state, only="degraded")
    return []


async def enqueue_state_change(
    session: AsyncSession,
    monitor: Monitor,
    previous_state: str | None,
    state: str,
    *,
    match: str | None = None,
    only: str | None = None,
    at: dt.datetime | None = None,
    channel_ids: Iterable[int] | None = None,
    key: str | None = None,
    reason: str | None = None,
    kind: str = "state",
) -> list[Delivery]:
    """Add one pending delivery per linked, enabled channel whose ``on`` includes ``state``
    (or ``match``, when given; exactly ``only``, when given).

    Call inside the transaction that records the transition (before commit),
    after ``monitor.state_seq`` has moved on; only adds rows to ``session``.
    The caller's commit makes them visible to the workers.

    Escalation (``app.alerting.escalation``) passes its own ``channel_ids``
    (instead of the monitor's), a ``key`` prefix naming the incident and step
    (the dedupe key is ``<key>:<channel>``), a ``reason`` and ``kind``.
    """
    linked = monitor.channels if channel_ids is None else channel_ids
    wanted = sorted({i for i in (linked or []) if isinstance(i, int) and not isinstance(i, bool)})
    if not wanted:
        return []
    stmt = (
        select(Channel)
        .where(
            col(Channel.id).in_(wanted),
            col(Channel.tenant_id) == monitor.tenant_id,
            col(Channel.enabled).is_(True),
        )
        .order_by(col(Channel.id))
    )
    channels = (await session.execute(stmt)).scalars().all()
    when = at or monitor.state_changed_at or utcnow()
    if reason is None:
        # Down says why it failed; degraded says which warning (a warn: condition, the latency).
        reason = monitor.last_error if state in ("down", "degraded") else None
    prefix = key or f"s:{monitor.id}:{monitor.state_seq}"
    added = []
    # The incident this transition opened or resolved: the monitor's latest (the
    # recorder has flushed it). PagerDuty keys its events on it; templates show it.
    incident_id = (
        await session.execute(
            select(col(Incident.id))
            .where(col(Incident.monitor_id) == monitor.id)
            .order_by(col(Incident.id).desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if state != "down" and match is None:
        incident_id = None  # up → degraded: no incident
    for channel in channels:
        if only is not None:
            if only not in channel.on:
                continue
        elif state not in channel.on and (match is None or match not in channel.on):
            continue
        delivery = Delivery(
            tenant_id=monitor.tenant_id,
            channel_id=channel.id,  # type: ignore[arg-type]
            monitor_id=monitor.id,
            incident_id=incident_id,
            dedupe_key=f"{prefix}:{channel.id}",
            kind=kind,
            monitor_name=monitor.name,
            state=state,
            previous_state=previous_state,
            reason=reason[:_REASON_MAX] if reason else None,
            event_at=when,
            next_attempt_at=utcnow(),
        )
        session.add(delivery)
        added.append(delivery)
    return added


#: Channels subscribed to any of these get certificate expiry alerts.
CERTIFICATE_ON = ("certificate", "down")


async def enqueue_certificate(
    session: AsyncSession, monitor: Monitor, threshold: int, reason: str, *, now: dt.datetime
) -> list[Delivery]:
    """One "certificate" delivery per linked, enabled channel subscribed to ``certificate``
    or ``down``: the monitor's certificate reached ``threshold`` days before expiry.

    Called inside the transaction that records the check (``monitor`` carries the new
    ``cert_expires_at``); the dedupe key names the certificate's expiry and the
    threshold, so one certificate alerts each threshold at most once per channel."""
    expires = monitor.cert_expires_at
    if expires is None:
        return []
    channels = await _linked_channels(session, monitor)
    added = []
    for channel in channels:
        if not any(on in channel.on for on in CERTIFICATE_ON):
            continue
        delivery = Delivery(
            tenant_id=monitor.tenant_id,
            channel_id=channel.id,  # type: ignore[arg-type]
            monitor_id=monitor.id,
            dedupe_key=f"c:{monitor.id}:{int(expires.timestamp())}:{threshold}:{channel.id}",
            kind="certificate",
            monitor_name=monitor.name,
            state="certificate",
            previous_state=None,
            reason=reason[:_REASON_MAX],
            event_at=now,
            next_attempt_at=utcnow(),
        )
        session.add(delivery)
        added.append(delivery)
    return added


async def _linked_channels(session: AsyncSession, monitor: Monitor) -> Sequence[Channel]:
    wanted = sorted({i for i in (monitor.channels or []) if isinstance(i, int) and not isinstance(i, bool)})
    if not wanted:
        return []
    stmt = (
        select(Channel)
        .where(
            col(Channel.id).in_(wanted),
            col(Channel.tenant_id) == monitor.tenant_id,
            col(Channel.enabled).is_(True),
        )
        .order_by(col(Channel.id))
    )
    return (await session.execute(stmt)).scalars().all()


async def enqueue_reminders(db: Database, *, now: dt.datetime | None = None) -> int:
    """Insert due "still down" reminders; returns how many were new. Safe on every instance.

    Reminder ``n`` of a downtime is due ``n * remind_every`` minutes after the
    monitor went down; its dedupe key names ``n``, so concurrent scans insert it
    once, and reminders missed while no instance ran are not replayed.
    """
    now = now or utcnow()
    inserted = 0
    async with db.session() as s:
        channels = (
            (
                await s.execute(
                    select(Channel).where(
                        col(Channel.remind_every).is_not(None), col(Channel.enabled).is_(True)
                    )
                )
            )
            .scalars()
            .all()
        )
        channels = [c for c in channels if "down" in c.on]
        if not channels:
            return 0
        tenants = {c.tenant_id for c in channels}
        monitors = (
            (
                await s.execute(
                    select(Monitor).where(col(Monitor.state) == "down", col(Monitor.tenant_id).in_(tenants))
                )
            )
            .scalars()
            .all()
        )
        # A monitor whose outage is covered by a parent's (or still held) did not alert
        # "down", so it gets no "still down" reminders either.
        silent = (
            set(
                (
                    await s.execute(
                        select(col(Incident.monitor_id)).where(
                            col(Incident.tenant_id).in_(tenants),
                            col(Incident.resolved_at).is_(None),
                            col(Incident.notified).is_(False),
                        )
                    )
                )
                .scalars()
                .all()
            )
            if monitors
            else set()
        )
        rows = []
        for monitor in monitors:
            if monitor.id in silent:
                continue
            linked = set(monitor.channels or [])
            for channel in channels:
                if channel.tenant_id != monitor.tenant_id or channel.id not in linked:
                    continue
                period = dt.timedelta(minutes=channel.remind_every or 0)
                n = int((now - monitor.state_changed_at) / period) if period else 0
                if n < 1:
                    continue
                rows.append(
                    {
                        "tenant_id": monitor.tenant_id,
                        "channel_id": channel.id,
                        "monitor_id": monitor.id,
                        "dedupe_key": f"r:{monitor.id}:{monitor.state_seq}:{channel.id}:{n}",
                        "kind": "reminder",
                        "monitor_name": monitor.name,
                        "state": "down",
                        "previous_state": None,
                        "reason": (monitor.last_error or "")[:_REASON_MAX] or None,
                        "event_at": monitor.state_changed_at,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
        if not rows:
            return 0
        insert = sqlite_insert if db.is_sqlite else pg_insert
        for row in rows:
            stmt = insert(Delivery).values(**row).on_conflict_do_nothing(index_elements=["dedupe_key"])
            result = await s.execute(stmt)
            inserted += max(getattr(result, "rowcount", 0) or 0, 0)
        await s.commit()
    return inserted


# -------------------------------------------------------------------- claim


def _due(now: dt.datetime) -> ColumnElement[bool]:
    return or_(
        and_(col(Delivery.status) == "pending", col(Delivery.next_attempt_at) <= now),
        and_(col(Delivery.status) == "sending", col(Delivery.lease_expires_at) < now),
    )


async def claim(db: Database, owner: str, *, limit: int, lease_seconds: float) -> list[Claimed]:
    """Take up to ``limit`` due deliveries under a lease for ``owner``; send them, then record."""
    now = utcnow()
    due = _due(now)
    async with db.session() as s:
        pick = (
            select(col(Delivery.id))
            .where(due)
            .order_by(col(Delivery.next_attempt_at), col(Delivery.id))
            .limit(limit)
        )
        if not db.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        ids = list((await s.execute(pick)).scalars().all())
        if not ids:
            await s.rollback()
            return []
        # Re-check "due" in the UPDATE: on SQLite another writer may have moved
        # a row between the SELECT and here (PostgreSQL holds the row locks).
        await s.execute(
            update(Delivery)
            .where(col(Delivery.id).in_(ids), due)
            .values(
                status="sending",
                lease_owner=owner,
                lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                updated_at=now,
            )
        )
        rows = (
            await s.execute(
                select(Delivery, Channel)
                .join(Channel, col(Channel.id) == col(Delivery.channel_id))
                .where(col(Delivery.id).in_(ids), col(Delivery.lease_owner) == owner)
                .where(col(Delivery.status) == "sending")
                .order_by(col(Delivery.id))
            )
        ).all()
        await s.commit()
    return [Claimed(d, c) for d, c in rows]


async def release(db: Database, owner: str) -> int:
    """Hand back every lease ``owner`` holds (shutdown): the rows are due again at once."""
    async with db.session() as s:
        result = await s.execute(
            update(Delivery)
            .where(col(Delivery.lease_owner) == owner, col(Delivery.status) == "sending")
            .values(status="pending", lease_owner=None, lease_expires_at=None, updated_at=utcnow())
        )
        await s.commit()
    return max(getattr(result, "rowcount", 0) or 0, 0)


# ------------------------------------------------------------------- record


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where a delivery went after one attempt."""

    status: str
    next_attempt_at: dt.datetime | None = None
    channel_flagged: bool = False


async def cancel(db: Database, claimed: Claimed, owner: str, why: str) -> None:
    """Drop a claimed delivery without sending (its channel was disabled meanwhile)."""
    now = utcnow()
    async with db.session() as s:
        await s.execute(
            update(Delivery)
            .where(col(Delivery.id) == claimed.delivery.id, col(Delivery.lease_owner) == owner)
            .values(
                status="cancelled", last_error=why, lease_owner=None, lease_expires_at=None, finished_at=now
            )
        )
        await s.commit()


async def hold(db: Database, claimed: Claimed, owner: str, until: dt.datetime, why: str) -> None:
    """Put a claimed delivery back, unsent and without counting an attempt, until ``until``
    (the channel's quiet hours); ``why`` shows in the delivery log."""
    async with db.session() as s:
        await s.execute(
            update(Delivery)
            .where(col(Delivery.id) == claimed.delivery.id, col(Delivery.lease_owner) == owner)
            .values(
                status="pending",
                next_attempt_at=until,
                last_error=why[:_REASON_MAX],
                lease_owner=None,
                lease_expires_at=None,
                updated_at=utcnow(),
            )
        )
        await s.commit()


async def enqueue_incident_ack(
    session: AsyncSession, incident: Incident, *, exclude: Collection[int] = ()
) -> list[Delivery]:
    """An ``ack`` delivery for each linked, enabled PagerDuty channel of the incident's monitor
    (PagerDuty acknowledges its incident too). Call inside the INCIDENT_ACK transaction, on
    the first acknowledgement only; the dedupe key makes a second one impossible anyway.
    ``exclude``: channels not to tell (the PagerDuty service the ack came from)."""
    return await _enqueue_incident_followup(session, incident, "ack", exclude=exclude)


async def enqueue_incident_resolved(session: AsyncSession, incident: Incident) -> list[Delivery]:
    """A delivery with state ``resolved`` for each linked, enabled PagerDuty channel when an
    incident is resolved by hand (INCIDENT_RESOLVE), so PagerDuty resolves it too. Call inside
    that transaction. (A monitor coming back up alerts through the state-change hook.)"""
    return await _enqueue_incident_followup(session, incident, "resolved")


async def _enqueue_incident_followup(
    session: AsyncSession, incident: Incident, what: str, *, exclude: Collection[int] = ()
) -> list[Delivery]:
    monitor = await session.get(Monitor, incident.monitor_id)
    linked = (monitor.channels if monitor else []) or []
    wanted = sorted({i for i in linked if isinstance(i, int) and i not in exclude})
    if monitor is None or not wanted:
        return []
    channels = (
        (
            await session.execute(
                select(Channel)
                .where(
                    col(Channel.id).in_(wanted),
                    col(Channel.tenant_id) == incident.tenant_id,
                    col(Channel.enabled).is_(True),
                    col(Channel.kind).in_(ACK_KINDS),
                )
                .order_by(col(Channel.id))
            )
        )
        .scalars()
        .all()
    )
    added = []
    for channel in channels:
        delivery = Delivery(
            tenant_id=incident.tenant_id,
            channel_id=channel.id,  # type: ignore[arg-type]
            monitor_id=monitor.id,
            incident_id=incident.id,
            dedupe_key=f"{'a' if what == 'ack' else 'h'}:{incident.id}:{channel.id}",
            kind="ack" if what == "ack" else "state",
            monitor_name=monitor.name,
            state="down" if what == "ack" else "resolved",
            previous_state=None if what == "ack" else "down",
            reason=(incident.cause or "")[:_REASON_MAX] or None,
            event_at=(incident.acked_at if what == "ack" else incident.resolved_at) or utcnow(),
            next_attempt_at=utcnow(),
        )
        session.add(delivery)
        added.append(delivery)
    return added


async def record_attempt(
    db: Database,
    claimed: Claimed,
    owner: str,
    result: SendResult,
    *,
    started_at: dt.datetime,
    duration_ms: float,
    policy: RetryPolicy,
    flag_after: int,
) -> Outcome | None:
    """Store the attempt and move the delivery on; None when the lease was lost meanwhile.

    A lost lease means another worker re-claimed the row (this one was slower
    than the lease); the attempt is still logged, the row is left to the
    new holder.
    """
    now = utcnow()
    async with db.session() as s:
        stmt = select(Delivery).where(
            col(Delivery.id) == claimed.delivery.id,
            col(Delivery.lease_owner) == owner,
            col(Delivery.status) == "sending",
        )
        if not db.is_sqlite:
            stmt = stmt.with_for_update()
        delivery = (await s.execute(stmt)).scalar_one_or_none()
        attempt_no = (delivery.attempts if delivery else claimed.delivery.attempts) + 1
        s.add(
            DeliveryAttempt(
                delivery_id=claimed.delivery.id,  # type: ignore[arg-type]
                attempt=attempt_no,
                started_at=started_at,
                duration_ms=round(duration_ms, 3),
                ok=result.ok,
                permanent=result.permanent,
                status_code=result.status_code,
                error=result.error[:_REASON_MAX] if result.error else None,
                worker=owner,
            )
        )
        if delivery is None:
            await s.commit()
            return None
        delivery.attempts = attempt_no
        delivery.last_status_code = result.status_code
        delivery.last_error = result.error[:_REASON_MAX] if result.error else None
        delivery.lease_owner = None
        delivery.lease_expires_at = None
        delivery.updated_at = now
        outcome: Outcome
        if result.ok:
            delivery.status = "delivered"
            delivery.finished_at = now
            outcome = Outcome("delivered")
        else:
            delay = (
                None
                if result.permanent
                else next_retry_delay(attempt_no, policy, retry_after=result.retry_after)
            )
            if delay is None:
                delivery.status = "failed"
                delivery.finished_at = now
                outcome = Outcome("failed")
            else:
                delivery.status = "pending"
                delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
                outcome = Outcome("pending", next_attempt_at=delivery.next_attempt_at)
        flagged = await _update_channel_health(s, claimed, outcome.status, result, now, flag_after)
        await s.commit()
    return Outcome(outcome.status, outcome.next_attempt_at, flagged)


async def _update_channel_health(
    s: AsyncSession,
    claimed: Claimed,
    status: str,
    result: SendResult,
    now: dt.datetime,
    flag_after: int,
) -> bool:
    """Success resets the channel's failure streak and flag; a final failure extends it.

    Returns True when this failure is the one that flagged the channel.
    """
    channel_id = claimed.channel.id
    if status == "delivered":
        await s.execute(
            update(Channel)
            .where(
                col(Channel.id) == channel_id,
                or_(col(Channel.failure_streak) != 0, col(Channel.flagged_at).is_not(None)),
            )
            .values(failure_streak=0, flagged_at=None, flagged_reason=None)
        )
        return False
    if status != "failed":
        return False
    await s.execute(
        update(Channel)
        .where(col(Channel.id) == channel_id)
        .values(failure_streak=col(Channel.failure_streak) + 1)
    )
    channel = (
        await s.execute(
            select(Channel).where(col(Channel.id) == channel_id).execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if channel is None or channel.flagged_at is not None or channel.failure_streak < flag_after:
        return False
    channel.flagged_at = now
    channel.flagged_reason = (
        f"{channel.failure_streak} deliveries in a row failed; last error: {result.error or 'unknown'}"
    )[:_REASON_MAX]
    log.warning(
        "alert channel %s (tenant %s) flagged after %s failed deliveries in a row: %s",
        channel.id,
        channel.tenant_id,
        channel.failure_streak,
        result.error,
    )
    return True


async def purge_finished(db: Database, *, older_than: dt.datetime, batch: int = 1000) -> int:
    """Delete up to ``batch`` finished deliveries created before ``older_than`` (their attempts
    go with them). Returns how many; call again while it returns ``batch``.

    Oldest first by id, which follows creation time, so the primary key finds
    them without an extra index. Pending and in-flight rows are never touched.
    """
    async with db.session() as s:
        ids = (
            (
                await s.execute(
                    select(col(Delivery.id))
                    .where(
                        col(Delivery.status).in_(("delivered", "failed", "cancelled")),
                        col(Delivery.created_at) < older_than,
                    )
                    .order_by(col(Delivery.id))
                    .limit(batch)
                )
            )
            .scalars()
            .all()
        )
        if ids:
            # Attempts explicitly, not only by cascade: SQLite enforces foreign
            # keys per connection and a purge must not depend on it.
            await s.execute(delete(DeliveryAttempt).where(col(DeliveryAttempt.delivery_id).in_(ids)))
            await s.execute(delete(Delivery).where(col(Delivery.id).in_(ids)))
        await s.commit()
    return len(ids)


async def pending_count(
    db: Database, channel_ids: Sequence[int] | None = None, *, in_flight: bool = True
) -> int:
    """How many deliveries are still waiting: pending, and (``in_flight``) being sent right now.
    The ``outbox_depth`` gauge counts pending only."""
    statuses = ("pending", "sending") if in_flight else ("pending",)
    async with db.session() as s:
        stmt = select(func.count()).select_from(Delivery).where(col(Delivery.status).in_(statuses))
        if channel_ids is not None:
            stmt = stmt.where(col(Delivery.channel_id).in_(list(channel_ids)))
        return int(await s.scalar(stmt) or 0)

"""Escalation and outage grouping: who hears about an incident, when, and once.

Two things decide what an incident alerts, both kept durably in
``incident_escalations`` (one row per incident, :class:`IncidentEscalation`):

**Dependencies (no alert storms).** A monitor that depends on others
(``depends_on``) or belongs to a group with ``covers_members`` has *parents*.
When it goes down:

- a parent is already down → its incident is attached to the parent's
  incident (``parent_id``) and alerts nobody;
- otherwise its "down" alert is *held* for ``ALERT_DEPENDENCY_HOLD`` seconds:
  if a parent goes down meanwhile, the parent's incident takes it in (the
  parent's one alert lists the affected monitors); if not, the held alert is
  sent then, as the monitor's own.

A parent's incident opening attaches the open incidents of its dependents;
its recovery hands dependents that are still down back to the hold, so they
alert on their own if they stay down.

**Escalation policies.** A monitor's policy (or its tenant's default) lists
steps ``{"after": minutes, "channels": [...]}`` and ``repeat_every``. Steps
due at once are sent in the transaction that opens the incident; later steps
and repeats are sent by :func:`run_due`, which every instance's delivery
worker runs every ``ESCALATION_SCAN_INTERVAL`` seconds. It claims one due row
at a time with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), inserts the step's
deliveries into the outbox (dedupe key ``e:<incident>:<step>:<channel>``) and
moves the row on in the same transaction: a step is sent once, whichever
instance claims it, across restarts; a step missed while no instance ran is
sent late, never skipped (repeats missed meanwhile collapse to the latest).

:func:`acknowledge` is the one way an incident gets acknowledged (INCIDENT_ACK,
the dashboard, and any integration such as PagerDuty): it sets the ack once
and stops the escalation in the same transaction, and runs the listeners
registered with :func:`on_acknowledged`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sqlalchemy import String, and_, cast, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.alerting import outbox
from app.models.base import utcnow
from app.models.escalation import EscalationPolicy, IncidentEscalation
from app.models.incident import Incident
from app.models.monitor import Monitor
from app.storage.db import Database

log = logging.getLogger("watchpost.alerting")

_REASON_MAX = 500
#: At most this many affected monitors are named in an outage's alert (the count is always given).
_AFFECTED_NAMED = 20
#: Steps fired for one incident in one pass (several may fall due at once).
_STEPS_PER_PASS = 25

#: Monitor states in which an open incident's escalation waits instead of paging.
_QUIET_STATES = ("paused", "maintenance")
_QUIET_RECHECK = dt.timedelta(seconds=60)

AckListener = Callable[[AsyncSession, Incident], Awaitable[None]]
_ack_listeners: list[AckListener] = []


def on_acknowledged(listener: AckListener) -> AckListener:
    """Register ``listener(session, incident)``; :func:`acknowledge` awaits it inside the
    acknowledging transaction, once per incident (e.g. to queue a PagerDuty "acknowledge")."""
    if listener not in _ack_listeners:
        _ack_listeners.append(listener)
    return listener


# ------------------------------------------------------------------ schedule


def _minutes(value: Any) -> dt.timedelta:
    return dt.timedelta(minutes=float(value or 0))


def step_time(esc: IncidentEscalation, opened_at: dt.datetime, k: int) -> dt.datetime | None:
    """When step ``k`` is due: the policy's steps in order, then repeats of the last step."""
    steps = esc.steps or []
    if k < len(steps):
        return opened_at + _minutes(steps[k].get("after"))
    if not steps or not esc.repeat_every:
        return None
    return opened_at + _minutes(steps[-1].get("after")) + (k - len(steps) + 1) * _minutes(esc.repeat_every)


def _latest_repeat(esc: IncidentEscalation, opened_at: dt.datetime, now: dt.datetime) -> int:
    """The index of the newest repeat that is already due (missed repeats are not replayed)."""
    steps = esc.steps or []
    base = opened_at + _minutes(steps[-1].get("after"))
    period = _minutes(esc.repeat_every).total_seconds()
    r = max(1, math.floor((now - base).total_seconds() / period)) if period > 0 else 1
    return len(steps) - 1 + r


def _describe(esc: IncidentEscalation, k: int) -> str:
    steps = esc.steps or []
    if k < len(steps):
        after = float(steps[k].get("after") or 0)
        if after <= 0:
            return f"escalation step {k + 1} of {len(steps)}"
        return f"escalation step {k + 1} of {len(steps)}: not acknowledged after {after:g} min"
    return f"escalation repeat {k - len(steps) + 1}: still not acknowledged (every {esc.repeat_every:g} min)"


async def policy_for(session: AsyncSession, monitor: Monitor) -> EscalationPolicy | None:
    """The monitor's own policy, else its tenant's default, else None."""
    if monitor.escalation_policy is not None:
        policy = await session.get(EscalationPolicy, monitor.escalation_policy)
        if policy is not None and policy.tenant_id == monitor.tenant_id:
            return policy
    stmt = (
        select(EscalationPolicy)
        .where(
            col(EscalationPolicy.tenant_id) == monitor.tenant_id, col(EscalationPolicy.is_default).is_(True)
        )
        .order_by(col(EscalationPolicy.id))
        .limit(1)
    )
    return (await session.execute(stmt)).scalars().first()


def _schedule(
    incident: Incident, monitor: Monitor, policy: EscalationPolicy | None, **fields: Any
) -> IncidentEscalation:
    return IncidentEscalation(
        incident_id=_id(incident),
        tenant_id=incident.tenant_id,
        monitor_id=_id(monitor),
        policy_id=policy.id if policy else None,
        steps=[dict(s) for s in (policy.steps if policy else [])],
        repeat_every=policy.repeat_every if policy else None,
        **fields,
    )


async def _fire_due(
    session: AsyncSession,
    esc: IncidentEscalation,
    incident: Incident,
    monitor: Monitor,
    now: dt.datetime,
) -> int:
    """Send every step of ``esc`` that is due at ``now``; returns how many steps went out."""
    fired = 0
    while fired < _STEPS_PER_PASS and esc.due_at is not None and esc.due_at <= now:
        k = esc.step
        steps = esc.steps or []
        if k >= len(steps):
            k = max(k, _latest_repeat(esc, incident.opened_at, now))
        channels = [int(c) for c in steps[min(k, len(steps) - 1)].get("channels", [])]
        if k < len(steps) and float(steps[k].get("after") or 0) <= 0:
            # Due with the "down" alert itself: a channel that just got that alert is not sent
            # the same news twice. Later steps and repeats do re-notify ("still not acknowledged").
            channels = [c for c in channels if c not in (esc.notified or [])]
        cause = incident.cause or "check failed"
        added = await outbox.enqueue_state_change(
            session,
            monitor,
            None,
            "down",
            at=incident.opened_at,
            channel_ids=channels,
            key=f"e:{incident.id}:{k}",
            reason=f"{_describe(esc, k)}; {cause}"[:_REASON_MAX],
            kind="escalation",
        )
        esc.notified = sorted({*(esc.notified or []), *(d.channel_id for d in added)})
        esc.step = k + 1
        esc.due_at = step_time(esc, incident.opened_at, esc.step)
        esc.updated_at = now
        if esc.due_at is None:
            esc.stopped_at, esc.stop_reason = now, "completed"
        fired += 1
    return fired


# --------------------------------------------------------------- dependencies


async def parents_of(session: AsyncSession, monitor: Monitor) -> list[Monitor]:
    """The monitors whose outage covers ``monitor``: its ``depends_on`` and every enabled group
    of its tenant with ``covers_members`` that lists it as a member."""
    ids = {i for i in (monitor.depends_on or []) if i != monitor.id}
    groups = await session.execute(
        select(col(Monitor.id), col(Monitor.members)).where(
            col(Monitor.tenant_id) == monitor.tenant_id,
            col(Monitor.kind) == "group",
            col(Monitor.covers_members).is_(True),
        )
    )
    ids.update(
        int(gid or 0) for gid, members in groups.all() if monitor.id in (members or []) and gid != monitor.id
    )
    if not ids:
        return []
    rows = await session.execute(
        select(Monitor).where(col(Monitor.tenant_id) == monitor.tenant_id, col(Monitor.id).in_(sorted(ids)))
    )
    return list(rows.scalars().all())


async def _down_parent_incident(session: AsyncSession, parents: Iterable[Monitor]) -> Incident | None:
    """The open incident of a parent that is down now, followed up to its own root outage."""
    down = sorted(_id(p) for p in parents if p.state == "down")
    if not down:
        return None
    stmt = (
        select(Incident)
        .where(col(Incident.monitor_id).in_(down), col(Incident.resolved_at).is_(None))
        .order_by(col(Incident.id))
        .limit(1)
    )
    incident = (await session.execute(stmt)).scalars().first()
    for _ in range(10):  # a parent that is itself part of a bigger outage: attach to the root
        if incident is None or incident.parent_id is None:
            break
        up = await session.get(Incident, incident.parent_id)
        if up is None or up.resolved_at is not None:
            break
        incident = up
    return incident


async def dependents_of(session: AsyncSession, monitor: Monitor) -> list[int]:
    """Ids of the monitors ``monitor`` covers: its members if it ``covers_members``, and every
    monitor of its tenant whose ``depends_on`` names it."""
    ids = set(monitor.members or []) if monitor.kind == "group" and monitor.covers_members else set()
    rows = await session.execute(
        select(col(Monitor.id), col(Monitor.depends_on)).where(
            col(Monitor.tenant_id) == monitor.tenant_id,
            # Only monitors that depend on something (the JSON text of an empty list is "[]"),
            # so a mass outage of a large tenant does not read every monitor per incident.
            cast(col(Monitor.depends_on), String) != "[]",
        )
    )
    ids.update(int(mid or 0) for mid, deps in rows.all() if monitor.id in (deps or []))
    ids.discard(_id(monitor))
    return sorted(ids)


#: An incident that joined an outage, with its monitor's name (for the 903 "attached" event).
Attached = tuple[Incident, str]


async def _attach_dependents(
    session: AsyncSession,
    monitor: Monitor,
    incident: Incident,
    now: dt.datetime,
    joined: list[Attached] | None = None,
) -> list[str]:
    """Attach the open incidents of ``monitor``'s dependents to ``incident``; their held alerts
    are dropped (the outage's alert names them). Returns the affected monitors' names; the
    incidents newly attached are appended to ``joined``."""
    dependents = await dependents_of(session, monitor)
    if not dependents:
        return []
    rows = await session.execute(
        select(Incident, col(Monitor.name))
        .join(Monitor, col(Monitor.id) == col(Incident.monitor_id))
        .where(
            col(Incident.tenant_id) == monitor.tenant_id,
            col(Incident.monitor_id).in_(dependents),
            col(Incident.resolved_at).is_(None),
            col(Incident.id) != incident.id,
        )
        .order_by(col(Monitor.name))
    )
    found = rows.all()
    names = []
    held = []
    for child, name in found:
        names.append(str(name))
        if child.parent_id != incident.id:
            child.parent_id = incident.id
            if joined is not None:
                joined.append((child, str(name)))
        if not child.notified:
            held.append(_id(child))
    if held:
        await session.execute(
            update(IncidentEscalation)
            .where(
                col(IncidentEscalation.incident_id).in_(held), col(IncidentEscalation.stopped_at).is_(None)
            )
            .values(stopped_at=now, stop_reason="covered", due_at=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    await session.flush()
    return names


def _with_affected(cause: str | None, affected: list[str]) -> str | None:
    if not affected:
        return cause
    named = ", ".join(affected[:_AFFECTED_NAMED]) + (" …" if len(affected) > _AFFECTED_NAMED else "")
    text = f"{cause or 'down'}; {len(affected)} affected: {named}"
    return text[:_REASON_MAX]


async def _hold(session: AsyncSession, incident: Incident, monitor: Monitor, now: dt.datetime) -> None:
    """(Re)start the hold of an incident that has not alerted on its own."""
    esc = await session.get(IncidentEscalation, _id(incident))
    policy = await policy_for(session, monitor)
    fresh = _schedule(incident, monitor, policy, held=True, due_at=now, created_at=now, updated_at=now)
    if esc is None:
        session.add(fresh)
        return
    esc.policy_id, esc.steps, esc.repeat_every = fresh.policy_id, fresh.steps, fresh.repeat_every
    esc.held, esc.step, esc.due_at, esc.notified = True, 0, now, []
    esc.stopped_at, esc.stop_reason, esc.updated_at = None, None, now


# --------------------------------------------------------- state-change hook


async def on_transition(
    session: AsyncSession,
    monitor: Monitor,
    previous_state: str,
    state: str,
    *,
    incident: Incident | None,
    incident_action: str | None,
) -> list[Attached]:
    """The state-change hook's alerting body (inside the recording transaction, before commit).

    Returns the dependents' incidents this transition attached to ``incident`` (the recorder
    announces them after commit)."""
    joined: list[Attached] = []
    if incident_action == "opened" and incident is not None:
        await _opened(session, monitor, previous_state, incident, joined)
    elif incident_action == "resolved" and incident is not None:
        await _resolved(session, monitor, previous_state, state, incident)
    else:
        await outbox.enqueue_for_transition(session, monitor, previous_state, state, incident_action)
    return joined


async def _opened(
    session: AsyncSession, monitor: Monitor, previous_state: str, incident: Incident, joined: list[Attached]
) -> None:
    now = incident.opened_at
    parents = await parents_of(session, monitor)
    if parents:
        parent = await _down_parent_incident(session, parents)
        incident.notified = False
        if parent is not None:
            incident.parent_id = parent.id
            await session.flush()
            return
        await _attach_dependents(session, monitor, incident, now, joined)
        await _hold(session, incident, monitor, now)
        await session.flush()
        return
    affected = await _attach_dependents(session, monitor, incident, now, joined)
    added = await outbox.enqueue_state_change(
        session, monitor, previous_state, "down", reason=_with_affected(monitor.last_error, affected)
    )
    policy = await policy_for(session, monitor)
    if policy is None or not policy.steps:
        return
    esc = _schedule(
        incident,
        monitor,
        policy,
        notified=sorted({d.channel_id for d in added}),
        due_at=now,
        created_at=now,
        updated_at=now,
    )
    esc.due_at = step_time(esc, now, 0)
    session.add(esc)
    await _fire_due(session, esc, incident, monitor, now)
    await session.flush()


async def _resolved(
    session: AsyncSession, monitor: Monitor, previous_state: str, state: str, incident: Incident
) -> None:
    now = incident.resolved_at or utcnow()
    esc = await session.get(IncidentEscalation, _id(incident))
    escalated = list(esc.notified or []) if esc is not None else []
    await stop(session, _id(incident), "resolved", now=now)
    await _release_children(session, incident, now)
    if not incident.notified:
        return  # it never alerted on its own: its recovery alerts nobody either
    channels = sorted({*(monitor.channels or []), *escalated})
    await outbox.enqueue_state_change(
        session, monitor, previous_state, state, match="up", channel_ids=channels
    )


async def _release_children(session: AsyncSession, incident: Incident, now: dt.datetime) -> None:
    """The parent is back: dependents still down and silent go back to the hold, so they
    alert on their own if they stay down (and no other parent covers them)."""
    rows = await session.execute(
        select(Incident, Monitor)
        .join(Monitor, col(Monitor.id) == col(Incident.monitor_id))
        .where(
            col(Incident.parent_id) == incident.id,
            col(Incident.resolved_at).is_(None),
            col(Incident.notified).is_(False),
        )
    )
    for child, child_monitor in rows.all():
        await _hold(session, child, child_monitor, now)
    await session.flush()


async def unlink_channel(session: AsyncSession, tenant_id: int, channel_id: int) -> None:
    """A deleted channel leaves every policy's steps of its tenant (CHANNEL_DELETE)."""
    rows = await session.execute(select(EscalationPolicy).where(col(EscalationPolicy.tenant_id) == tenant_id))
    for policy in rows.scalars().all():
        if any(channel_id in (st.get("channels") or []) for st in policy.steps):
            policy.steps = [
                {**st, "channels": [c for c in st.get("channels") or [] if c != channel_id]}
                for st in policy.steps
            ]
            policy.updated_at = utcnow()


# ------------------------------------------------------------ acknowledgement


async def resolved_by_hand(session: AsyncSession, incident: Incident) -> None:
    """INCIDENT_RESOLVE: stop the escalation; dependents still down go back to the hold."""
    now = incident.resolved_at or utcnow()
    await stop(session, _id(incident), "resolved", now=now)
    await _release_children(session, incident, now)


async def stop(
    session: AsyncSession, incident_id: int, reason: str, *, now: dt.datetime | None = None
) -> bool:
    """Stop an incident's escalation; True only for the call that stopped it (once)."""
    now = now or utcnow()
    result = await session.execute(
        update(IncidentEscalation)
        .where(
            col(IncidentEscalation.incident_id) == incident_id, col(IncidentEscalation.stopped_at).is_(None)
        )
        .values(stopped_at=now, stop_reason=reason, due_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return (getattr(result, "rowcount", 0) or 0) == 1


async def acknowledge(
    session: AsyncSession, incident: Incident, actor: str, *, now: dt.datetime | None = None
) -> bool:
    """Acknowledge an open incident inside the caller's transaction: the first call sets who and
    when, stops the escalation and runs the :func:`on_acknowledged` listeners, and returns True;
    later calls (another instance, a second click, PagerDuty's echo) change nothing and return False.
    """
    now = now or utcnow()
    result = await session.execute(
        update(Incident)
        .where(
            col(Incident.id) == incident.id,
            col(Incident.acked_at).is_(None),
            col(Incident.resolved_at).is_(None),
        )
        .values(acked_at=now, acked_by=actor[:200])
        .execution_options(synchronize_session=False)
    )
    if (getattr(result, "rowcount", 0) or 0) != 1:
        await session.refresh(incident)
        return False
    incident.acked_at, incident.acked_by = now, actor[:200]
    await stop(session, _id(incident), "acknowledged", now=now)
    for listener in list(_ack_listeners):
        await listener(session, incident)
    return True


# ------------------------------------------------------------------- scanner


async def run_due(db: Database, *, hold: float, now: dt.datetime | None = None, limit: int = 200) -> int:
    """Send what is due: escalation steps, and held alerts whose hold has passed. Safe on every
    instance at once; returns how many rows were handled. One row per transaction, claimed with
    ``FOR UPDATE SKIP LOCKED`` together with its incident, so an ack or a recovery in flight is
    never waited on and never raced."""
    handled = 0
    skip: list[int] = []
    for _ in range(limit):
        at = now or utcnow()
        try:
            done = await _run_one(db, at, hold, skip)
        except Exception:
            # The claim itself failed (typically the database is unreachable): try next scan.
            log.exception("escalation scan failed; retried on the next scan")
            break
        if done is None:
            break
        handled += 1
        skip.append(done)
    return handled


async def _run_one(db: Database, now: dt.datetime, hold: float, skip: list[int]) -> int | None:
    held_until = now - dt.timedelta(seconds=hold)
    async with db.session() as s:
        stmt = (
            select(IncidentEscalation, Incident)
            .join(Incident, col(Incident.id) == col(IncidentEscalation.incident_id))
            .where(
                col(IncidentEscalation.stopped_at).is_(None),
                or_(
                    and_(col(IncidentEscalation.held).is_(False), col(IncidentEscalation.due_at) <= now),
                    and_(
                        col(IncidentEscalation.held).is_(True), col(IncidentEscalation.due_at) <= held_until
                    ),
                ),
            )
            .order_by(col(IncidentEscalation.due_at))
            .limit(1)
        )
        if skip:
            stmt = stmt.where(col(IncidentEscalation.incident_id).not_in(skip))
        if not db.is_sqlite:
            stmt = stmt.with_for_update(skip_locked=True)
        row = (await s.execute(stmt)).first()
        if row is None:
            await s.rollback()
            return None
        esc, incident = row
        incident_id = esc.incident_id
        try:
            await _advance(s, esc, incident, now)
            await s.commit()
        except Exception:
            # This row alone: it is retried on the next scan, the others go on now.
            await s.rollback()
            log.exception("escalation of incident %s failed; retried on the next scan", incident_id)
        return incident_id


async def _advance(s: AsyncSession, esc: IncidentEscalation, incident: Incident, now: dt.datetime) -> None:
    monitor = await s.get(Monitor, esc.monitor_id)
    if incident.resolved_at is not None or monitor is None:
        esc.stopped_at, esc.stop_reason, esc.due_at = now, "resolved", None
    elif incident.acked_at is not None:
        esc.stopped_at, esc.stop_reason, esc.due_at = now, "acknowledged", None
    elif monitor.state in _QUIET_STATES:
        # Paused or in maintenance while down: nobody is paged; look again later.
        esc.due_at, esc.updated_at = now + _QUIET_RECHECK, now
    elif esc.held:
        await _release_held(s, esc, incident, monitor, now)
    else:
        fired = await _fire_due(s, esc, incident, monitor, now)
        if fired:
            log.info("incident %s: sent escalation step %s", incident.id, esc.step)


async def _release_held(
    s: AsyncSession, esc: IncidentEscalation, incident: Incident, monitor: Monitor, now: dt.datetime
) -> None:
    parent = await _down_parent_incident(s, await parents_of(s, monitor))
    if parent is not None:
        incident.parent_id = parent.id
        esc.stopped_at, esc.stop_reason, esc.due_at, esc.updated_at = now, "covered", None, now
        return
    affected = await _attach_dependents(s, monitor, incident, now)
    added = await outbox.enqueue_state_change(
        s,
        monitor,
        None,
        "down",
        at=incident.opened_at,
        key=f"h:{incident.id}",  # released once: after it, the incident is never held again
        reason=_with_affected(incident.cause, affected),
    )
    incident.notified = True
    esc.held = False
    esc.notified = sorted({d.channel_id for d in added})
    esc.step = 0
    esc.due_at = step_time(esc, incident.opened_at, 0)
    esc.updated_at = now
    if esc.due_at is None:
        esc.stopped_at, esc.stop_reason = now, "completed"
        return
    await _fire_due(s, esc, incident, monitor, now)


def _id(row: Monitor | Incident) -> int:
    assert row.id is not None, "only stored rows are scheduled"
    return row.id

"""Incidents 300-303: list, get, acknowledge (who and when), resolve by hand.

Incidents open and resolve automatically (app.monitoring.recorder); these
packages let people see and act on them. Changes publish EVENT_INCIDENT (903)
on ``incidents`` after commit. Acknowledging goes through
:func:`app.alerting.escalation.acknowledge` (stops the escalation once);
INCIDENT_GET also shows the escalation schedule, the parent outage and the
incidents attached to this one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.alerting import escalation
from app.alerting.outbox import enqueue_incident_ack, enqueue_incident_resolved
from app.context import Context
from app.errors import Conflict, NotFound
from app.models.base import iso, utcnow
from app.models.escalation import EscalationPolicy, IncidentEscalation
from app.models.incident import Incident
from app.models.monitor import Monitor
from app.monitoring.wire import incident_to_wire
from app.protocol import PkgID, Request
from app.routing import ID, PackageRouter, obj
from app.storage.pagination import PAGE_SCHEMA, Page, paginate

router = PackageRouter()

_EXAMPLE = {
    "id": 4,
    "monitor_id": 1,
    "monitor": "api",
    "state": "open",
    "opened_at": "2026-11-22T10:00:00.000Z",
}


async def _load(session: AsyncSession, ctx: Context, incident_id: int) -> Incident:
    incident = await session.get(Incident, incident_id)
    if incident is None or incident.tenant_id != ctx.tenant_id:
        raise NotFound(f"no incident {incident_id} in this tenant")
    return incident


async def _names(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.execute(select(col(Monitor.id), col(Monitor.name)).where(col(Monitor.id).in_(ids)))
    return {int(r[0] or 0): str(r[1]) for r in rows.all()}


def _wire(incident: Incident, names: dict[int, str]) -> dict[str, Any]:
    return {**incident_to_wire(incident), "monitor": names.get(incident.monitor_id)}


@router.package(
    PkgID.INCIDENT_LIST,
    schema=obj(
        {
            **PAGE_SCHEMA,
            "state": {"enum": ["open", "acknowledged", "resolved", "unresolved"]},
            "monitor_id": ID,
        }
    ),
    response_example=[_EXAMPLE],
)
async def incident_list(req: Request, ctx: Context) -> Page:
    """This tenant's incidents, newest first; filter by state or monitor."""
    stmt = (
        select(Incident)
        .where(col(Incident.tenant_id) == ctx.tenant_id)
        .order_by(col(Incident.opened_at).desc(), col(Incident.id).desc())
    )
    state = req.data.get("state")
    if state == "resolved":
        stmt = stmt.where(col(Incident.resolved_at).is_not(None))
    elif state == "unresolved":
        stmt = stmt.where(col(Incident.resolved_at).is_(None))
    elif state == "open":
        stmt = stmt.where(col(Incident.resolved_at).is_(None), col(Incident.acked_at).is_(None))
    elif state == "acknowledged":
        stmt = stmt.where(col(Incident.resolved_at).is_(None), col(Incident.acked_at).is_not(None))
    if "monitor_id" in req.data:
        stmt = stmt.where(col(Incident.monitor_id) == req.data["monitor_id"])
    async with ctx.services.db.session() as s:
        rows, meta = await paginate(s, stmt, req.data)
        names = await _names(s, {r.monitor_id for r in rows})
    return Page([_wire(r, names) for r in rows], meta)


async def _escalation(session: AsyncSession, incident: Incident) -> dict[str, Any] | None:
    esc = await session.get(IncidentEscalation, incident.id)
    if esc is None:
        return None
    policy = await session.get(EscalationPolicy, esc.policy_id) if esc.policy_id is not None else None
    return {
        "policy_id": esc.policy_id,
        "policy": policy.name if policy is not None and policy.tenant_id == incident.tenant_id else None,
        "held": esc.held,
        "steps": len(esc.steps or []),
        "sent": esc.step,
        "repeat_every": esc.repeat_every,
        "next_at": iso(esc.due_at),
        "notified_channels": list(esc.notified or []),
        "stopped_at": iso(esc.stopped_at),
        "stop_reason": esc.stop_reason,
    }


@router.package(PkgID.INCIDENT_GET, schema=obj({"id": ID}, ["id"]), response_example=_EXAMPLE)
async def incident_get(req: Request, ctx: Context) -> dict[str, Any]:
    """One incident with its monitor's name, ack and resolution, its escalation schedule
    (``escalation``: null when it has none), and the incidents ``attached`` to it (dependents
    that were down during this outage and alerted with it)."""
    async with ctx.services.db.session() as s:
        incident = await _load(s, ctx, req.data["id"])
        attached = list(
            (
                await s.execute(
                    select(Incident)
                    .where(col(Incident.tenant_id) == ctx.tenant_id, col(Incident.parent_id) == incident.id)
                    .order_by(col(Incident.id))
                    .limit(1000)
                )
            )
            .scalars()
            .all()
        )
        names = await _names(s, {incident.monitor_id, *(a.monitor_id for a in attached)})
        esc = await _escalation(s, incident)
    return {**_wire(incident, names), "escalation": esc, "attached": [_wire(a, names) for a in attached]}


@router.package(PkgID.INCIDENT_ACK, schema=obj({"id": ID}, ["id"]), audit=True, response_example=_EXAMPLE)
async def incident_ack(req: Request, ctx: Context) -> dict[str, Any]:
    """Acknowledge an open incident: records who and when (the first ack is kept) and stops
    its escalation, on every instance, once."""
    ctx.audit_target = str(req.data["id"])
    async with ctx.tx() as s:
        incident = await _load(s, ctx, req.data["id"])
        if incident.resolved_at is not None:
            raise Conflict(f"incident {incident.id} is already resolved; there is nothing to acknowledge")
        names = await _names(s, {incident.monitor_id})
        if await escalation.acknowledge(s, incident, ctx.identity.actor):
            # PagerDuty channels acknowledge their incident too (same transaction).
            await enqueue_incident_ack(s, incident)
            await s.flush()
            ctx.publish(
                "incidents",
                PkgID.EVENT_INCIDENT,
                {"action": "acknowledged", "incident": _wire(incident, names)},
            )
    return _wire(incident, names)


@router.package(PkgID.INCIDENT_RESOLVE, schema=obj({"id": ID}, ["id"]), audit=True, response_example=_EXAMPLE)
async def incident_resolve(req: Request, ctx: Context) -> dict[str, Any]:
    """Resolve an incident by hand (e.g. a monitor that was deleted or paused while down)."""
    ctx.audit_target = str(req.data["id"])
    async with ctx.tx() as s:
        incident = await _load(s, ctx, req.data["id"])
        if incident.resolved_at is not None:
            raise Conflict(f"incident {incident.id} is already resolved")
        incident.resolved_at = utcnow()
        incident.resolved_by = ctx.identity.actor
        # PagerDuty channels resolve their incident too (same transaction).
        await enqueue_incident_resolved(s, incident)
        await s.flush()
        await escalation.resolved_by_hand(s, incident)
        names = await _names(s, {incident.monitor_id})
        ctx.publish(
            "incidents", PkgID.EVENT_INCIDENT, {"action": "resolved", "incident": _wire(incident, names)}
        )
    return _wire(incident, names)

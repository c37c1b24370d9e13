"""Alert channels 400–404 and the delivery log 410.

Every query is scoped to the connection's tenant; another tenant's channel
answers NOT_FOUND exactly like a missing one. Secrets are write-only: answers
carry the masked config (``app.alerting.channels``), and CHANNEL_UPDATE accepts
the masked form back without touching the stored secrets.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app import quotas
from app.alerting import escalation, message, prepare, senders, templates
from app.alerting.channels import (
    CHANNEL_FIELDS,
    DEFAULT_ON,
    apply_patch,
    channel_json,
    mask_patch,
    validate_config,
    validate_quiet_hours,
    validate_template,
)
from app.alerting.message import Alert
from app.alerting.outbox import HELD_PREFIX
from app.alerting.senders import Transport
from app.context import Context
from app.egress import EgressPolicy
from app.errors import Conflict, InvalidData, NotFound
from app.models.base import iso, utcnow
from app.models.channel import Channel
from app.models.delivery import STATUSES, Delivery, DeliveryAttempt
from app.models.monitor import Monitor
from app.models.tenant import Tenant
from app.protocol import PkgID, Request
from app.routing import ID, PackageRouter, obj
from app.storage.pagination import PAGE_SCHEMA, Page, paginate

router = PackageRouter()

_EXAMPLE = {
    "id": 1,
    "name": "ops webhook",
    "kind": "webhook",
    "config": {"url": "https://hooks.example.com/***", "secret": "***", "headers": {}},
    "on": ["down", "up"],
    "remind_every": None,
    "enabled": True,
    "flagged": False,
}


async def _load(session: AsyncSession, ctx: Context, channel_id: int) -> Channel:
    """The tenant's channel or NotFound (another tenant's id looks exactly like a missing one)."""
    channel = await session.get(Channel, channel_id)
    if channel is None or channel.tenant_id != ctx.tenant_id:
        raise NotFound(f"no alert channel {channel_id} in this tenant")
    return channel


def _audit_request(ctx: Context, data: dict[str, Any]) -> None:
    """Record what the client asked for in the audit row, secrets masked; set before any
    check so refused attempts (say, moving a channel without its secrets) are on record."""
    details = dict(data)
    if isinstance(data.get("config"), dict):
        details["config"] = mask_patch(data["config"])
    ctx.audit_details = details


def _name_taken(name: str) -> Conflict:
    return Conflict(f"an alert channel named {name!r} already exists in this tenant; pick another name")


@router.package(
    PkgID.CHANNEL_CREATE,
    schema=obj(dict(CHANNEL_FIELDS), ["name", "kind", "config"]),
    audit=True,
    response_example=_EXAMPLE,
)
async def channel_create(req: Request, ctx: Context) -> dict[str, Any]:
    """Create an alert channel; link monitors to it with the monitor field ``channels``."""
    data = req.data
    _audit_request(ctx, data)
    channel = Channel(
        tenant_id=ctx.tenant_id,
        name=data["name"],
        kind=data["kind"],
        config=validate_config(data["kind"], data["config"]),
        on=list(data.get("on") or DEFAULT_ON),
        remind_every=data.get("remind_every"),
        enabled=data.get("enabled", True),
        template=validate_template(data.get("template")),
        quiet_hours=validate_quiet_hours(data.get("quiet_hours")),
    )
    try:
        async with ctx.tx() as s:
            await quotas.reserve(s, ctx.tenant_id, ctx.settings, "channels")
            s.add(channel)
            await s.flush()
            ctx.audit_target = str(channel.id)
    except IntegrityError:
        raise _name_taken(data["name"]) from None
    return channel_json(channel)


@router.package(
    PkgID.CHANNEL_LIST,
    schema=obj(
        {
            **PAGE_SCHEMA,
            "kind": CHANNEL_FIELDS["kind"],
            "enabled": {"type": "boolean"},
            "flagged": {"type": "boolean"},
        }
    ),
    response_example=[_EXAMPLE],
)
async def channel_list(req: Request, ctx: Context) -> Page:
    """This tenant's alert channels in id order, secrets masked; filter by kind, enabled, flagged."""
    stmt = select(Channel).where(col(Channel.tenant_id) == ctx.tenant_id).order_by(col(Channel.id))
    if "kind" in req.data:
        stmt = stmt.where(col(Channel.kind) == req.data["kind"])
    if "enabled" in req.data:
        stmt = stmt.where(col(Channel.enabled).is_(req.data["enabled"]))
    if "flagged" in req.data:
        flagged = col(Channel.flagged_at)
        stmt = stmt.where(flagged.is_not(None) if req.data["flagged"] else flagged.is_(None))
    async with ctx.services.db.session() as s:
        rows, meta = await paginate(s, stmt, req.data)
    return Page([channel_json(c) for c in rows], meta)


@router.package(
    PkgID.CHANNEL_UPDATE,
    schema=obj({"id": ID, **CHANNEL_FIELDS}, ["id"]),
    audit=True,
    response_example=_EXAMPLE,
)
async def channel_update(req: Request, ctx: Context) -> dict[str, Any]:
    """Change a channel. ``config`` is a patch: keys given replace, ``null`` removes, ``***``
    keeps the stored secret, except that a patch moving the channel to another destination
    (URL origin; mail host, port, username, security) must give its secrets again or null
    them. Any update clears the failure flag."""
    data = req.data
    _audit_request(ctx, data)
    ctx.audit_target = str(data["id"])
    try:
        async with ctx.tx() as s:
            channel = await _load(s, ctx, data["id"])
            kind = data.get("kind", channel.kind)
            if kind != channel.kind and "config" not in data:
                raise InvalidData(
                    "changing kind needs a complete config for the new kind",
                    errors=[{"path": "config", "msg": "required when kind changes"}],
                )
            if "config" in data:
                base = channel.config if kind == channel.kind else {}
                channel.config = apply_patch(kind, base, data["config"])
            channel.kind = kind
            for key in ("name", "remind_every", "enabled"):
                if key in data:
                    setattr(channel, key, data[key])
            if "on" in data:
                channel.on = list(data["on"])
            if "template" in data:
                channel.template = validate_template(data["template"])
            if "quiet_hours" in data:
                channel.quiet_hours = validate_quiet_hours(data["quiet_hours"])
                # Deliveries held by the old schedule are looked at again now.
                await s.execute(
                    update(Delivery)
                    .where(
                        col(Delivery.channel_id) == channel.id,
                        col(Delivery.status) == "pending",
                        col(Delivery.last_error).startswith(HELD_PREFIX),
                    )
                    .values(next_attempt_at=utcnow())
                )
            channel.failure_streak = 0
            channel.flagged_at = None
            channel.flagged_reason = None
            channel.updated_at = utcnow()
            await s.flush()
    except IntegrityError:
        raise _name_taken(str(data.get("name"))) from None
    return channel_json(channel)


@router.package(
    PkgID.CHANNEL_DELETE,
    schema=obj({"id": ID}, ["id"]),
    audit=True,
    response_example={"id": 1, "deleted": True, "unlinked_monitors": [3]},
)
async def channel_delete(req: Request, ctx: Context) -> dict[str, Any]:
    """Delete a channel, its pending deliveries and delivery log; unlink it from monitors and policies."""
    channel_id = req.data["id"]
    ctx.audit_target = str(channel_id)
    async with ctx.tx() as s:
        channel = await _load(s, ctx, channel_id)
        # Monitors keep channel ids in a JSON list; drop this one where it appears.
        linked = await s.execute(select(Monitor).where(col(Monitor.tenant_id) == ctx.tenant_id))
        unlinked = []
        for monitor in linked.scalars():
            if channel_id in (monitor.channels or []):
                monitor.channels = [c for c in monitor.channels if c != channel_id]
                unlinked.append(monitor.id)
        await escalation.unlink_channel(s, ctx.tenant_id, channel_id)
        await s.delete(channel)
    return {
        "id": channel_id,
        "deleted": True,
        "unlinked_monitors": sorted(i for i in unlinked if i is not None),
    }


@router.package(
    PkgID.CHANNEL_TEST,
    schema=obj(
        {
            "id": ID,
            "kind": CHANNEL_FIELDS["kind"],
            "config": {"type": "object"},
            "template": CHANNEL_FIELDS["template"],
        }
    ),
    audit=True,
    response_example={
        "ok": True,
        "permanent": False,
        "status_code": 200,
        "error": None,
        "duration_ms": 84.2,
        "rendered": {"subject": "[Watchpost] Test message for ops", "body": "…"},
    },
)
async def channel_test(req: Request, ctx: Context) -> dict[str, Any]:
    """Send a test message now and report what the receiver said. Give ``id`` (optionally with a
    ``config`` patch to try before saving, under CHANNEL_UPDATE's destination rule), or
    ``kind`` and ``config`` for an unsaved channel. ``template`` tries a template before saving
    (default: the channel's). The message is rendered with a sample incident and returned as
    ``rendered``."""
    data = req.data
    _audit_request(ctx, data)
    if "id" in data:
        ctx.audit_target = str(data["id"])
        async with ctx.services.db.session() as s:
            channel = await _load(s, ctx, data["id"])
        kind, name = channel.kind, channel.name
        config = channel.config
        template = channel.template
        if "config" in data:
            config = apply_patch(kind, config, data["config"])
    elif "kind" in data and "config" in data:
        kind, name = data["kind"], "unsaved channel"
        config = validate_config(kind, data["config"])
        template = None
    else:
        raise InvalidData(
            "give the id of a channel, or kind and config of one to try",
            errors=[{"path": "id", "msg": "id, or kind and config, required"}],
        )
    if "template" in data:
        template = validate_template(data["template"])
    alert = await _test_alert(ctx, name, template)
    started = time.perf_counter()
    async with _transport(ctx, kind) as transport:
        result = await senders.send(kind, config, alert, transport)
    return {
        "ok": result.ok,
        "permanent": result.permanent,
        "status_code": result.status_code,
        "error": result.error,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "rendered": {"subject": message.subject(alert), "body": message.text(alert)},
    }


async def _test_alert(ctx: Context, channel_name: str, template: dict[str, Any] | None) -> Alert:
    """The test message: the default test text, or the channel's template rendered with a
    sample incident of this tenant."""
    async with ctx.services.db.session() as s:
        tenant = await s.get(Tenant, ctx.tenant_id)
    alert = Alert(
        monitor_name=channel_name,
        state="up",
        at=utcnow(),
        kind="test",
        tenant_id=ctx.tenant_id,
        tenant_name=tenant.name if tenant else None,
        timezone=tenant.timezone if tenant else None,
        dashboard_url=prepare.dashboard_url(ctx.settings.public_url),
    )
    if not template:
        return alert
    sample = templates.sample_alert(
        at=alert.at,
        tenant_id=alert.tenant_id,
        tenant_name=alert.tenant_name,
        timezone=alert.timezone,
        dashboard_url=alert.dashboard_url,
    )
    return prepare.with_template(sample, template)


@asynccontextmanager
async def _transport(ctx: Context, kind: str) -> AsyncIterator[Transport]:
    """The running worker's HTTP client when there is one, else a short-lived client;
    either way under ALERT_DENY_NETWORKS.

    The time budget stays inside the handler deadline (email gets a third of
    it: its bound is three socket timeouts).
    """
    settings = ctx.settings
    budget = max(1.0, float(settings.ws_handler_timeout) - 1.0)
    if kind == "email":
        budget /= 3
    timeout = min(settings.delivery_timeout, budget)
    worker = ctx.services.delivery_worker
    if worker is not None:
        shared = worker.transport
        yield Transport(shared.http, timeout, shared.smtp_ssl_context, shared.egress)
        return
    policy = EgressPolicy.for_alerts(settings)
    own = Transport(senders.make_http_client(policy), timeout, egress=policy)
    try:
        yield own
    finally:
        await own.http.aclose()


# --------------------------------------------------------------------- deliveries


def _delivery_json(d: Delivery, channel_names: dict[int, str], log: list[DeliveryAttempt]) -> dict[str, Any]:
    return {
        "id": d.id,
        "channel_id": d.channel_id,
        "channel": channel_names.get(d.channel_id),
        "monitor_id": d.monitor_id,
        "monitor": d.monitor_name,
        "incident_id": d.incident_id,
        "kind": d.kind,
        "state": d.state,
        "previous_state": d.previous_state,
        "reason": d.reason,
        "event_at": iso(d.event_at),
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at) if d.status == "pending" else None,
        "last_error": d.last_error,
        "last_status_code": d.last_status_code,
        "created_at": iso(d.created_at),
        "finished_at": iso(d.finished_at),
        "attempt_log": [
            {
                "attempt": a.attempt,
                "at": iso(a.started_at),
                "duration_ms": a.duration_ms,
                "ok": a.ok,
                "permanent": a.permanent,
                "status_code": a.status_code,
                "error": a.error,
            }
            for a in log
        ],
    }


@router.package(
    PkgID.DELIVERY_LIST,
    schema=obj(
        {
            **PAGE_SCHEMA,
            "channel_id": ID,
            "monitor_id": ID,
            "status": {"enum": list(STATUSES)},
            "kind": {"enum": ["state", "reminder", "certificate", "ack", "escalation"]},
        }
    ),
    response_example=[
        {
            "id": 7,
            "channel_id": 1,
            "monitor_id": 3,
            "state": "down",
            "status": "delivered",
            "attempts": 3,
            "attempt_log": [{"attempt": 1, "ok": False, "status_code": 500}],
        }
    ],
)
async def delivery_list(req: Request, ctx: Context) -> Page:
    """The delivery log, newest first: status, attempts with their errors; filter by channel,
    monitor, status, kind."""
    stmt = select(Delivery).where(col(Delivery.tenant_id) == ctx.tenant_id).order_by(col(Delivery.id).desc())
    for key in ("channel_id", "monitor_id", "status", "kind"):
        if key in req.data:
            stmt = stmt.where(getattr(Delivery, key) == req.data[key])
    async with ctx.services.db.session() as s:
        rows, meta = await paginate(s, stmt, req.data)
        ids = [d.id for d in rows]
        attempts: dict[int, list[DeliveryAttempt]] = {}
        names: dict[int, str] = {}
        if ids:
            found = await s.execute(
                select(DeliveryAttempt)
                .where(col(DeliveryAttempt.delivery_id).in_(ids))
                .order_by(col(DeliveryAttempt.id))
            )
            for a in found.scalars():
                attempts.setdefault(a.delivery_id, []).append(a)
            channel_rows = await s.execute(
                select(col(Channel.id), col(Channel.name)).where(
                    col(Channel.id).in_({d.channel_id for d in rows})
                )
            )
            names = {int(cid): name for cid, name in channel_rows.all() if cid is not None}
    return Page([_delivery_json(d, names, attempts.get(d.id or 0, [])) for d in rows], meta)

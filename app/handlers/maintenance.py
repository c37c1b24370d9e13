"""Maintenance windows 500-503: one-off windows for some or all of a tenant's monitors.

While a window covers a monitor its state is ``maintenance``, its failures open
no incident and fire no alert, and its checks are left out of uptime. The
collector applies windows at each check, so a window takes effect within one
interval of its start. Changes publish EVENT_MONITOR_CHANGED (902) on
``maintenance`` with ``{"action", "window"}``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.client_time import parse_time
from app.context import Context
from app.errors import Conflict, InvalidData, NotFound
from app.models.base import utcnow
from app.models.maintenance import MaintenanceWindow
from app.models.monitor import Monitor
from app.monitoring.wire import window_to_wire
from app.protocol import PkgID, Request
from app.routing import ID, VERSION, PackageRouter, obj
from app.storage.pagination import PAGE_SCHEMA, Page, paginate

router = PackageRouter()

_TIME = {"type": "string", "minLength": 10, "maxLength": 40}
_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": {"type": "string", "maxLength": 2000},
    "starts_at": _TIME,
    "ends_at": _TIME,
    "all_monitors": {"type": "boolean"},
    "monitors": {"type": "array", "maxItems": 10000, "items": ID},
}
_EXAMPLE = {
    "id": 2,
    "name": "db upgrade",
    "starts_at": "2026-11-22T22:00:00.000Z",
    "ends_at": "2026-11-22T23:00:00.000Z",
    "all_monitors": False,
    "monitors": [1, 3],
    "version": 1,
}


async def _validate(session: AsyncSession, ctx: Context, w: MaintenanceWindow) -> None:
    if w.ends_at <= w.starts_at:
        raise InvalidData(
            "ends_at must be after starts_at", errors=[{"path": "ends_at", "msg": "before starts_at"}]
        )
    if not w.all_monitors and not w.monitors:
        raise InvalidData(
            "name the monitors the window covers, or set all_monitors to true",
            errors=[{"path": "monitors", "msg": "empty"}],
        )
    if w.monitors:
        found = await session.execute(
            select(col(Monitor.id)).where(
                col(Monitor.tenant_id) == ctx.tenant_id, col(Monitor.id).in_(w.monitors)
            )
        )
        missing = sorted(set(w.monitors) - set(found.scalars().all()))
        if missing:
            raise InvalidData(
                f"monitors {missing} are not monitors of this tenant",
                errors=[{"path": "monitors", "msg": f"unknown monitor ids {missing}"}],
            )


async def _load(session: AsyncSession, ctx: Context, window_id: int) -> MaintenanceWindow:
    w = await session.get(MaintenanceWindow, window_id)
    if w is None or w.tenant_id != ctx.tenant_id:
        raise NotFound(f"no maintenance window {window_id} in this tenant")
    return w


def _event(ctx: Context, action: str, w: MaintenanceWindow) -> None:
    payload = {"id": w.id} if action == "deleted" else window_to_wire(w)
    ctx.publish("maintenance", PkgID.EVENT_MONITOR_CHANGED, {"action": action, "window": payload})


@router.package(
    PkgID.MAINTENANCE_CREATE,
    schema=obj(_FIELDS, ["name", "starts_at", "ends_at"]),
    audit=True,
    response_example=_EXAMPLE,
)
async def maintenance_create(req: Request, ctx: Context) -> dict[str, Any]:
    """Schedule a window; monitors switch to ``maintenance`` at their first check inside it."""
    data = req.data
    w = MaintenanceWindow(
        tenant_id=ctx.tenant_id,
        name=data["name"],
        description=data.get("description", ""),
        starts_at=parse_time(data["starts_at"], "starts_at"),
        ends_at=parse_time(data["ends_at"], "ends_at"),
        all_monitors=bool(data.get("all_monitors", False)),
        monitors=sorted(set(data.get("monitors") or [])),
    )
    async with ctx.tx() as s:
        await _validate(s, ctx, w)
        s.add(w)
        await s.flush()
        ctx.audit_target = str(w.id)
        _event(ctx, "created", w)
    return window_to_wire(w)


@router.package(
    PkgID.MAINTENANCE_LIST,
    schema=obj({**PAGE_SCHEMA, "active": {"type": "boolean"}, "upcoming": {"type": "boolean"}}),
    response_example=[_EXAMPLE],
)
async def maintenance_list(req: Request, ctx: Context) -> Page:
    """This tenant's windows, latest start first; ``active``/``upcoming`` narrow to those now or later."""
    now = utcnow()
    stmt = (
        select(MaintenanceWindow)
        .where(col(MaintenanceWindow.tenant_id) == ctx.tenant_id)
        .order_by(col(MaintenanceWindow.starts_at).desc(), col(MaintenanceWindow.id).desc())
    )
    if req.data.get("active"):
        stmt = stmt.where(col(MaintenanceWindow.starts_at) <= now, col(MaintenanceWindow.ends_at) > now)
    if req.data.get("upcoming"):
        stmt = stmt.where(col(MaintenanceWindow.starts_at) > now)
    async with ctx.services.db.session() as s:
        rows, meta = await paginate(s, stmt, req.data)
    return Page([window_to_wire(w) for w in rows], meta)


@router.package(
    PkgID.MAINTENANCE_UPDATE,
    schema=obj({"id": ID, "version": VERSION, **_FIELDS}, ["id", "version"]),
    audit=True,
    response_example=_EXAMPLE,
)
async def maintenance_update(req: Request, ctx: Context) -> dict[str, Any]:
    """Change a window; ``version`` must be the one you read (stale: CONFLICT)."""
    data = req.data
    ctx.audit_target = str(data["id"])
    async with ctx.tx() as s:
        w = await _load(s, ctx, data["id"])
        if w.version != data["version"]:
            raise Conflict(
                f"window {w.id} was changed since you read it (version {w.version}, "
                f"you sent {data['version']}); reload it and apply your change again"
            )
        for key in ("name", "description", "all_monitors"):
            if key in data:
                setattr(w, key, data[key])
        if "monitors" in data:
            w.monitors = sorted(set(data["monitors"]))
        for key in ("starts_at", "ends_at"):
            if key in data:
                setattr(w, key, parse_time(data[key], key))
        await _validate(s, ctx, w)
        w.version += 1
        w.updated_at = utcnow()
        await s.flush()
        _event(ctx, "updated", w)
    return window_to_wire(w)


@router.package(
    PkgID.MAINTENANCE_DELETE, schema=obj({"id": ID}, ["id"]), audit=True, response_example={"id": 2}
)
async def maintenance_delete(req: Request, ctx: Context) -> dict[str, Any]:
    """Delete a window (ending it early); covered monitors leave maintenance at their next check."""
    ctx.audit_target = str(req.data["id"])
    async with ctx.tx() as s:
        w = await _load(s, ctx, req.data["id"])
        await s.delete(w)
        _event(ctx, "deleted", w)
    return {"id": req.data["id"]}

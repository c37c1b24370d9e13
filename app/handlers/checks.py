"""Check history, heartbeats and statistics: 200, 201, 210-212."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlmodel import col

from app.client_time import parse_time
from app.context import Context
from app.errors import Conflict, NotFound
from app.handlers.monitors import load
from app.models.base import iso, utcnow
from app.models.check import CheckResult
from app.models.monitor import Monitor
from app.monitoring import recorder, stats
from app.monitoring.checks import CheckOutcome
from app.monitoring.state import State
from app.monitoring.wire import result_to_wire
from app.protocol import PkgID, Request
from app.routing import ID, PackageRouter, obj
from app.storage.keyset import MAX_BIG_ID, decode_cursor, decode_id_cursor, encode_cursor, encode_id_cursor
from app.storage.pagination import Page

router = PackageRouter()

_WINDOW = {"enum": list(stats.WINDOWS)}


@router.package(
    PkgID.CHECK_HISTORY,
    schema=obj(
        {
            "monitor_id": ID,
            "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
            "cursor": {"type": "string", "maxLength": 64},
            "since": {"type": "string", "maxLength": 40},
            "until": {"type": "string", "maxLength": 40},
        },
        ["monitor_id"],
    ),
    response_example=[
        {"id": 9, "monitor_id": 1, "ts": "2026-11-22T10:00:00.000Z", "ok": True, "latency_ms": 12.1}
    ],
)
async def check_history(req: Request, ctx: Context) -> Page:
    """One monitor's results, newest first, keyset-paginated by (ts, id): pass ``meta.next_cursor``."""
    data = req.data
    limit = int(data.get("limit", 100))
    stmt = select(CheckResult).where(col(CheckResult.monitor_id) == data["monitor_id"])
    for key, op in (("since", "ge"), ("until", "lt")):
        if key in data:
            bound = parse_time(data[key], key)
            stmt = stmt.where(col(CheckResult.ts) >= bound if op == "ge" else col(CheckResult.ts) < bound)
    if "cursor" in data:
        ts, rid = decode_cursor(data["cursor"], max_id=MAX_BIG_ID)
        stmt = stmt.where(
            or_(col(CheckResult.ts) < ts, and_(col(CheckResult.ts) == ts, col(CheckResult.id) < rid))
        )
    stmt = stmt.order_by(col(CheckResult.ts).desc(), col(CheckResult.id).desc()).limit(limit + 1)
    async with ctx.services.db.session() as s:
        await load(s, ctx, data["monitor_id"])
        rows = list((await s.execute(stmt)).scalars().all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    meta = {
        "next_cursor": encode_cursor(rows[-1].ts, rows[-1].id or 0) if has_more and rows else None,
        "has_more": has_more,
    }
    return Page([result_to_wire(r) for r in rows], meta)


class _LostRace(Exception):
    """The compare-and-set lost; raised inside ``ctx.tx`` so the attempt rolls back."""


@router.package(
    PkgID.HEARTBEAT_PUSH,
    schema=obj(
        {
            "push_token": {"type": "string", "minLength": 8, "maxLength": 64},
            "status": {"enum": ["up", "down"]},
            "msg": {"type": "string", "maxLength": 300},
            # A day in milliseconds: anything larger is a client bug, not a latency to average.
            "latency_ms": {"type": ["number", "null"], "minimum": 0, "maximum": 86_400_000},
        },
        ["push_token"],
    ),
    response_example={"monitor_id": 3, "state": "up", "next_deadline": "2026-11-22T10:01:30.000Z"},
)
async def heartbeat_push(req: Request, ctx: Context) -> dict[str, Any]:
    """A push monitor reports in (``status`` "down" reports a failure). The monitor goes down
    when no push arrives within interval + grace. Not audited: it is telemetry, not a change."""
    data = req.data
    ok = data.get("status", "up") == "up"
    outcome = CheckOutcome(
        ok, data.get("latency_ms"), None, None if ok else (data.get("msg") or "reported down")
    )
    for _attempt in range(3):
        try:
            async with ctx.tx(audit=False) as s:
                monitor = (
                    await s.execute(
                        select(Monitor).where(
                            col(Monitor.push_token) == data["push_token"],
                            col(Monitor.tenant_id) == ctx.tenant_id,
                        )
                    )
                ).scalar_one_or_none()
                if monitor is None or monitor.kind != "push":
                    raise NotFound("no push monitor with this push token in this tenant; check the token")
                s.expunge(monitor)
                now = utcnow()
                windows = await recorder.active_windows(s, {monitor.tenant_id}, now)
                deadline = now + timedelta(seconds=monitor.interval + monitor.grace)
                rec = await recorder.record(
                    s,
                    monitor,
                    outcome,
                    now=now,
                    in_maintenance=recorder.covered(monitor, windows),
                    next_check_at=deadline,
                )
                if rec is None:
                    raise _LostRace
                for _tenant, topic, pkg_id, payload in rec.events:
                    ctx.publish(topic, pkg_id, payload)
            return {"monitor_id": monitor.id, "state": monitor.state, "next_deadline": iso(deadline)}
        except _LostRace:
            continue
    raise Conflict("the monitor was updated concurrently; push again")


def _windows(data: dict[str, Any]) -> list[str]:
    return list(data.get("windows") or ["24h", "7d", "30d", "365d"])


@router.package(
    PkgID.STATS_UPTIME,
    schema=obj(
        {"monitor_id": ID, "windows": {"type": "array", "items": _WINDOW, "maxItems": 6}}, ["monitor_id"]
    ),
    response_example={"monitor_id": 1, "windows": {"24h": {"uptime": 0.999, "up": 1439, "checks": 1440}}},
)
async def stats_uptime(req: Request, ctx: Context) -> dict[str, Any]:
    """Uptime per window: up checks / (checks - checks in maintenance); null when nothing was counted."""
    now = utcnow()
    async with ctx.services.db.session() as s:
        monitor = await load(s, ctx, req.data["monitor_id"])
        out = {}
        for name in _windows(req.data):
            result = await stats.uptime(s, monitor, now - stats.WINDOWS[name], now)
            out[name] = result.to_wire()
    return {"monitor_id": monitor.id, "windows": out, "at": iso(now)}


@router.package(
    PkgID.STATS_LATENCY,
    schema=obj({"monitor_id": ID, "window": _WINDOW}, ["monitor_id"]),
    response_example={
        "monitor_id": 1,
        "window": "24h",
        "min": 8.1,
        "avg": 12.0,
        "p50": 11.2,
        "p95": 20.4,
        "max": 80.0,
    },
)
async def stats_latency(req: Request, ctx: Context) -> dict[str, Any]:
    """Latency of successful checks over a window (default 24h): min/avg/p50/p95/max in ms."""
    now = utcnow()
    window = req.data.get("window", "24h")
    raw_since = now - timedelta(days=ctx.settings.retention_days)
    async with ctx.services.db.session() as s:
        monitor = await load(s, ctx, req.data["monitor_id"])
        result = await stats.latency(s, monitor, now - stats.WINDOWS[window], now, raw_since=raw_since)
    return {"monitor_id": monitor.id, "window": window, **result}


#: Rows per STATUS_SUMMARY page: ~200-270 bytes each with usual names, so a page (~0.5 MiB)
#: stays well under the 1 MiB send queue, and a 10,000-monitor tenant is five round trips.
#: Long non-ASCII names (200 characters, up to 800 bytes) can make a page larger than the
#: queue; the queue still delivers it, as it does any single answer (app/ws/connection.py).
SUMMARY_PAGE = 2000


@router.package(
    PkgID.STATUS_SUMMARY,
    schema=obj(
        {
            "cursor": {"type": "string", "maxLength": 20},
            "limit": {"type": "integer", "minimum": 1, "maximum": SUMMARY_PAGE, "default": SUMMARY_PAGE},
        }
    ),
    response_example={
        "monitors": [{"id": 1, "name": "api", "state": "up", "uptime_24h": 1.0}],
        "counts": {"up": 1},
        "total": 1,
    },
)
async def status_summary(req: Request, ctx: Context) -> Page:
    """Every monitor's state, last latency and 24h uptime, in id order, ``limit`` (default and
    at most 2,000) per page: follow ``meta.next_cursor`` while ``meta.has_more``. The first
    page (no ``cursor``) also carries ``counts`` per state and ``total`` for the whole tenant;
    later pages carry only their rows, so a page costs the same at 50,000 monitors as at
    10,000 (the tenant is counted once per summary, not once per page).

    State and latency are live; ``uptime_24h`` is the cache refreshed every
    ROLLUP_INTERVAL (as of ``uptime_24h_at``); STATS_UPTIME is exact."""
    now = utcnow()
    data = req.data
    limit = int(data.get("limit", SUMMARY_PAGE))
    first = "cursor" not in data
    after = 0 if first else decode_id_cursor(data["cursor"])
    async with ctx.services.db.session() as s:
        monitors = await stats.summary(s, ctx.tenant_id, after=after, limit=limit + 1)
        found = await stats.state_counts(s, ctx.tenant_id) if first else None
    has_more = len(monitors) > limit
    monitors = monitors[:limit]
    meta = {
        "next_cursor": encode_id_cursor(monitors[-1]["id"]) if has_more else None,
        "has_more": has_more,
    }
    body: dict[str, Any] = {"monitors": monitors, "generated_at": iso(now)}
    if found is not None:
        body["counts"] = {state.value: 0 for state in State} | found
        body["total"] = sum(found.values())
    return Page(body, meta)

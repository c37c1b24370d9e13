"""Probes' results and per-location statistics: PROBE_REPORT (613), LOCATION_STATS (615).

docs/probes.md, "Reports": a probe token sends its location's results in batches with
idempotency keys; LOCATION_STATS shows each location of a monitor for viewers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from app.client_time import parse_time
from app.context import Context
from app.errors import InvalidData, PermissionDenied
from app.handlers.monitors import load
from app.models.base import iso, utcnow
from app.monitoring import locations, stats
from app.protocol import PkgID, Request
from app.routing import ID, PackageRouter, obj

router = PackageRouter()

#: The largest PROBE_REPORT_MAX the settings accept; the setting itself is checked per report.
_REPORT_MAX_CAP = 5000
#: Windows LOCATION_STATS offers: location history is kept for the retention period only.
LOCATION_WINDOWS = ("1h", "24h", "7d", "30d")

_RESULT = obj(
    {
        "key": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
        "monitor_id": ID,
        "ts": {"type": "string", "minLength": 10, "maxLength": 40},
        "ok": {"type": "boolean"},
        # A day in milliseconds, like HEARTBEAT_PUSH: larger is a client bug, not a latency.
        "latency_ms": {"type": ["number", "null"], "minimum": 0, "maximum": 86_400_000},
        "status_code": {"type": ["integer", "null"], "minimum": 0, "maximum": 999},
        "error": {"type": ["string", "null"], "maxLength": 300},
    },
    ["key", "monitor_id", "ts", "ok"],
)


@router.package(
    PkgID.PROBE_REPORT,
    schema=obj(
        {"results": {"type": "array", "items": _RESULT, "minItems": 1, "maxItems": _REPORT_MAX_CAP}},
        ["results"],
    ),
    response_example={
        "accepted": 2,
        "duplicates": 1,
        "refused": [{"index": 3, "monitor_id": 9, "reason": "the monitor is not checked from eu-west"}],
    },
)
async def probe_report(req: Request, ctx: Context) -> dict[str, Any]:
    """A probe's results for its location (1 to PROBE_REPORT_MAX per report), each with an
    idempotency key: a key stored before counts in ``duplicates`` and changes nothing.

    A result for a monitor that is not an enabled monitor of this tenant listing the
    probe's location, or whose ``ts`` is more than 60 s ahead or older than the retention
    period, is refused (``refused``: index, monitor_id, reason) and the rest are kept. The
    latest result per location only moves forward in time; a location whose state changes
    is announced with EVENT_LOCATION_STATE (908) on ``monitors`` and ``monitor.<id>``."""
    identity = ctx.identity
    if identity.location is None:
        raise PermissionDenied("PROBE_REPORT needs a probe token (role probe, with a location)")
    results: list[dict[str, Any]] = req.data["results"]
    limit = ctx.settings.probe_report_max
    if len(results) > limit:
        raise InvalidData(
            f"at most {limit} results per report (PROBE_REPORT_MAX); send the rest in another report",
            errors=[{"path": "results", "msg": f"more than {limit} items"}],
        )
    times = [parse_time(r["ts"], f"results.{i}.ts") for i, r in enumerate(results)]
    now = utcnow()
    async with ctx.tx(audit=False) as s:
        done = await locations.ingest(
            s,
            tenant_id=ctx.tenant_id,
            location=identity.location,
            token_id=identity.token_id,
            results=results,
            times=times,
            now=now,
            retention=timedelta(days=ctx.settings.retention_days),
        )
        for _tenant, topic, pkg_id, data in done.events:
            ctx.publish(topic, pkg_id, data)
    if done.decide_now and ctx.services.collector is not None:
        ctx.services.collector.wake()  # the moved monitors are due now
    return done.to_wire()


@router.package(
    PkgID.LOCATION_STATS,
    schema=obj({"monitor_id": ID, "window": {"enum": list(LOCATION_WINDOWS)}}, ["monitor_id"]),
    response_example={
        "monitor_id": 1,
        "window": "24h",
        "at": "2026-12-05T10:00:00.000Z",
        "locations": [
            {
                "location": "eu-west",
                "state": "up",
                "checked_at": "2026-12-05T09:59:31.000Z",
                "latency_ms": 41.0,
                "error": None,
                "checks": 1440,
                "up": 1438,
                "uptime": 0.9986,
                "p50": 40.2,
                "p95": 63.0,
            }
        ],
    },
)
async def location_stats(req: Request, ctx: Context) -> dict[str, Any]:
    """Each location of a monitor over a window (default 24h; 1h, 24h, 7d, 30d): its latest
    result and state (``unknown`` when older than interval + PROBE_GRACE), uptime (up /
    checks; null without checks), latency p50/p95 of successful checks (ms) and checks."""
    now = utcnow()
    window = req.data.get("window", "24h")
    async with ctx.services.db.session() as s:
        monitor = await load(s, ctx, req.data["monitor_id"])
        rows = await locations.location_stats(
            s, monitor, start=now - stats.WINDOWS[window], now=now, grace=ctx.settings.probe_grace
        )
    return {"monitor_id": monitor.id, "window": window, "at": iso(now), "locations": rows}

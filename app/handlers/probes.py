"""Probes 610-612 and 614 (docs/probes.md): a probe says hello, keeps a heartbeat and
reads its location's assignments; editors list the tenant's locations and probes.

A probe token's identity carries its tenant and location (app.auth.authenticator);
everything here is scoped to both, so a probe reads only its own location's
monitors of its own tenant. PROBE_HELLO attaches the connection to the location's
topic ``probe.<location id>`` through the session (handlers know no socket) and
asks it to mark the probe disconnected when the connection ends.
"""

from __future__ import annotations

import os
import platform
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from app.context import Context, Services
from app.errors import InvalidData, PermissionDenied
from app.events import scoped
from app.ids import MAX_ID
from app.models.base import iso, utcnow
from app.models.probe import LOCATION_PATTERN, Location, Probe
from app.models.token import ApiToken
from app.monitoring import assignments
from app.protocol import PkgID, Request
from app.routing import PackageRouter, obj

router = PackageRouter()

_SEQ = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
#: ``since`` larger than any seq: asks the broker only for a topic's current seq.
_CURRENT = 2**62
#: Most definitions per PROBE_ASSIGNMENTS page, and the default.
PAGE_MAX = 1000
PAGE_DEFAULT = 500
#: Heartbeats a probe may miss before PROBE_LIST shows it offline.
MISSED_HEARTBEATS = 3
#: Identifies this process in a probe row's ``instance`` (with a per-connection suffix).
_PROCESS = f"{platform.node()[:32]}.{os.getpid()}"

_DEFINITION_EXAMPLE = {
    "id": 17,
    "name": "api",
    "kind": "http",
    "interval": 60,
    "timeout": 10.0,
    "version": 3,
    "url": "https://example.com/health",
    "method": "GET",
    "headers": {"Authorization": "Bearer s3cret"},
    "body": None,
    "auth": None,
    "expected_status": ["200-399"],
    "keyword": None,
    "conditions": [],
    "verify_tls": True,
    "follow_redirects": True,
    "max_redirects": 10,
    "degraded_latency_ms": None,
    "host": None,
    "port": None,
    "options": {},
}


def _probe_identity(ctx: Context) -> tuple[int, int, str, int]:
    """(tenant id, location id, location name, token id) of the probe token on this connection."""
    ident = ctx.identity
    if ident.location_id is None or ident.location is None or ident.token_id is None:
        # RBAC lets only probe tokens reach here; a probe token always has a location.
        raise PermissionDenied("only a probe token (role 'probe') may call the probe packages")
    return ctx.tenant_id, ident.location_id, ident.location, ident.token_id


def _status_event(probe: Probe, location: str) -> dict[str, Any]:
    return {
        "location": location,
        "probe_id": probe.id,
        "connected": probe.connected,
        "version": probe.version,
        "last_seen_at": iso(probe.last_seen_at),
    }


async def _current_seq(ctx: Context, tenant_id: int, topic: str) -> int:
    hist = await ctx.services.broker.history(scoped(tenant_id, topic), _CURRENT)
    return hist.current_seq


@router.package(
    PkgID.PROBE_HELLO,
    schema=obj(
        {
            "version": {"type": "string", "minLength": 1, "maxLength": 64},
            "location": {"type": "string", "maxLength": 64, "pattern": LOCATION_PATTERN},
            "since": _SEQ,
        },
        ["version"],
    ),
    response_example={
        "location": "eu-west",
        "probe_id": 4,
        "seq": 1207,
        "recovered": True,
        "heartbeat_interval": 15.0,
        "grace": 90.0,
        "report_max": 500,
    },
)
async def probe_hello(req: Request, ctx: Context) -> dict[str, Any]:
    """Register a probe and attach its location's assignment events (906); ``since`` replays the missed ones.

    ``recovered`` says the replay covered the gap; otherwise load the snapshot with
    PROBE_ASSIGNMENTS. ``location``, if sent, must be the token's."""
    tenant_id, location_id, location, token_id = _probe_identity(ctx)
    if ctx.session is None:
        raise InvalidData("PROBE_HELLO needs a connection")
    asked = req.data.get("location")
    if asked is not None and asked != location:
        raise InvalidData(
            f"this token is for location {location!r}, not {asked!r}; use a token of {asked!r} "
            "or leave location out",
            errors=[{"path": "location", "msg": f"the token's location is {location!r}"}],
        )
    marker = f"{_PROCESS}.{secrets.token_hex(4)}"
    now = utcnow()
    values = {
        "connected": True,
        "instance": marker,
        "version": req.data["version"],
        "connected_since": now,
        "disconnected_at": None,
        "last_seen_at": now,
    }
    probe = await _upsert_probe(ctx, tenant_id, location_id, token_id, values)
    # The close hook first: a connection that ends while the topic is attached still marks
    # its row (the hook only touches the row while it still carries this connection's marker).
    ctx.session.on_close("probe", _disconnect_hook(ctx.services, tenant_id, token_id, location, marker))
    attached = await ctx.session.attach(assignments.topic(location_id), req.data.get("since"))
    ctx.publish("probes", PkgID.EVENT_PROBE_STATUS, _status_event(probe, location))
    await ctx.flush_events()
    settings = ctx.settings
    return {
        "location": location,
        "probe_id": probe.id,
        "seq": attached["seq"],
        "recovered": attached["recovered"],
        "heartbeat_interval": settings.probe_heartbeat,
        "grace": settings.probe_grace,
        "report_max": settings.probe_report_max,
    }


async def _upsert_probe(
    ctx: Context, tenant_id: int, location_id: int, token_id: int, values: dict[str, Any]
) -> Probe:
    """The token's probe row, created on its first hello (one row per token)."""
    for _attempt in range(2):
        try:
            async with ctx.tx() as s:
                probe = (
                    await s.execute(select(Probe).where(col(Probe.token_id) == token_id))
                ).scalar_one_or_none()
                if probe is None:
                    probe = Probe(tenant_id=tenant_id, location_id=location_id, token_id=token_id)
                    s.add(probe)
                for key, value in values.items():
                    setattr(probe, key, value)
                await s.flush()
                s.expunge(probe)
                return probe
        except IntegrityError:
            continue  # two connections of one token said hello at once: the row exists now
    raise InvalidData("this probe's token is saying hello on another connection right now; retry")


def _disconnect_hook(services: Services, tenant_id: int, token_id: int, location: str, marker: str) -> Any:
    async def hook() -> None:
        now = utcnow()
        async with services.db.session() as s:
            res = await s.execute(
                update(Probe)
                .where(col(Probe.token_id) == token_id, col(Probe.instance) == marker)
                .values(connected=False, disconnected_at=now, instance=None)
                .execution_options(synchronize_session=False)
            )
            if getattr(res, "rowcount", 0) != 1:
                await s.rollback()
                return  # a newer connection of the same token owns the row now
            probe = (await s.execute(select(Probe).where(col(Probe.token_id) == token_id))).scalar_one()
            await s.commit()
        await services.events.publish(
            tenant_id, "probes", PkgID.EVENT_PROBE_STATUS, _status_event(probe, location)
        )

    return hook


@router.package(
    PkgID.PROBE_HEARTBEAT,
    schema=obj(
        {
            "buffered": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
            "lag_ms": {"type": ["number", "null"], "minimum": 0, "maximum": 86_400_000},
            "monitors": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        }
    ),
    response_example={"server_time": 1764000000.0},
)
async def probe_heartbeat(req: Request, ctx: Context) -> dict[str, Any]:
    """A probe is alive: what it buffers and how late its checks start (PROBE_LIST shows both)."""
    _tenant_id, _location_id, _location, token_id = _probe_identity(ctx)
    values: dict[str, Any] = {"last_seen_at": utcnow()}
    if "buffered" in req.data:
        values["buffered"] = req.data["buffered"]
    if "lag_ms" in req.data:
        values["lag_ms"] = req.data["lag_ms"]
    async with ctx.tx() as s:
        res = await s.execute(
            update(Probe)
            .where(col(Probe.token_id) == token_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if getattr(res, "rowcount", 0) != 1:
            raise InvalidData("say PROBE_HELLO (610) first: this probe is not registered")
    return {"server_time": time.time()}


@router.package(
    PkgID.PROBE_ASSIGNMENTS,
    schema=obj(
        {
            "after_id": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
            "limit": {"type": "integer", "minimum": 1, "maximum": PAGE_MAX},
        }
    ),
    response_example={"seq": 1207, "monitors": [_DEFINITION_EXAMPLE], "next_after_id": None},
)
async def probe_assignments(req: Request, ctx: Context) -> dict[str, Any]:
    """One page (by monitor id) of the definitions this probe's location runs, secrets included."""
    tenant_id, location_id, location, _token_id = _probe_identity(ctx)
    # The seq first: an event published while the page is read is then newer than it, and
    # the probe applies it after the snapshot (docs/probes.md).
    seq = await _current_seq(ctx, tenant_id, assignments.topic(location_id))
    async with ctx.services.db.session() as s:
        found, next_after = await assignments.assigned_page(
            s,
            tenant_id,
            location,
            int(req.data.get("after_id", 0)),
            int(req.data.get("limit", PAGE_DEFAULT)),
        )
    return {"seq": seq, "monitors": found, "next_after_id": next_after}


def probe_status(probe: Probe, now: datetime, heartbeat: float) -> str:
    """``online`` (connected, heard from within 3 heartbeats), ``offline`` or ``never``."""
    if probe.connected_since is None:
        return "never"
    seen = probe.last_seen_at
    if seen is not None and seen.tzinfo is None:
        seen = seen.replace(tzinfo=UTC)  # stored naive, in UTC (SQLite)
    fresh = seen is not None and now - seen <= timedelta(seconds=MISSED_HEARTBEATS * heartbeat)
    return "online" if probe.connected and fresh else "offline"


@router.package(
    PkgID.PROBE_LIST,
    schema=obj({}),
    response_example={
        "locations": [
            {
                "name": "eu-west",
                "status": "online",
                "probes": [
                    {
                        "id": 4,
                        "token": "probe-eu",
                        "token_id": 12,
                        "status": "online",
                        "version": "1.0",
                        "connected": True,
                        "connected_since": "2026-12-05T21:00:00Z",
                        "disconnected_at": None,
                        "last_seen_at": "2026-12-05T21:40:00Z",
                        "last_report_at": "2026-12-05T21:40:01Z",
                        "lag_ms": 3.5,
                        "buffered": 0,
                    }
                ],
            }
        ]
    },
)
async def probe_list(req: Request, ctx: Context) -> dict[str, Any]:
    """The tenant's locations with their probes: online (heard from within 3 heartbeats), offline, never."""
    tenant_id = ctx.tenant_id
    async with ctx.services.db.session() as s:
        places = (
            await s.execute(
                select(Location).where(col(Location.tenant_id) == tenant_id).order_by(col(Location.name))
            )
        ).scalars()
        rows = (
            await s.execute(
                select(Probe, col(ApiToken.name))
                .join(ApiToken, col(ApiToken.id) == col(Probe.token_id))
                .where(col(Probe.tenant_id) == tenant_id)
                .order_by(col(Probe.id))
            )
        ).all()
        locations = list(places)
    now = utcnow()
    heartbeat = ctx.settings.probe_heartbeat
    per: dict[int, list[dict[str, Any]]] = {}
    for probe, token_name in rows:
        per.setdefault(probe.location_id, []).append(
            {
                "id": probe.id,
                "token": token_name,
                "token_id": probe.token_id,
                "status": probe_status(probe, now, heartbeat),
                "version": probe.version,
                "connected": probe.connected,
                "connected_since": iso(probe.connected_since),
                "disconnected_at": iso(probe.disconnected_at),
                "last_seen_at": iso(probe.last_seen_at),
                "last_report_at": iso(probe.last_report_at),
                "lag_ms": probe.lag_ms,
                "buffered": probe.buffered,
            }
        )
    out = []
    for place in locations:
        probes = per.get(int(place.id or 0), [])
        states = {p["status"] for p in probes}
        status = "online" if "online" in states else "offline" if "offline" in states else "never"
        out.append({"name": place.name, "status": status, "probes": probes})
    return {"locations": out}

"""Monitors 108-109: a whole fleet definition in and out (docs/monitoring.md "Fleet import and export").

MONITOR_IMPORT applies a file of monitor definitions by name in one
transaction, audited as one action: create what is missing, change only the
fields that differ, and with ``delete_missing`` delete what the file does not
name. ``dry_run`` answers the same diff and changes nothing. A fleet larger
than one frame arrives in chunks (app.monitoring.fleet_upload), so 10,000
monitors cost a few dozen frames, far under the per-user message rate.
MONITOR_EXPORT pages the tenant's monitors by id, in the rows import takes.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app import quotas
from app.context import Context
from app.errors import Conflict, InvalidData
from app.handlers.monitors import _CHECK_FIELDS, _wake_collector, first_due
from app.ids import ID, MAX_ID
from app.models.base import utcnow
from app.models.channel import Channel
from app.models.escalation import EscalationPolicy
from app.models.monitor import Monitor
from app.models.probe import Location
from app.monitoring import assignments, fleet
from app.monitoring.definition import (
    MONITOR_FIELDS_SCHEMA,
    ROUTING_FIELDS_SCHEMA,
    monitor_to_wire,
    new_push_token,
)
from app.monitoring.fleet_upload import MAX_ROWS, Uploads
from app.monitoring.state import State
from app.monitoring.stats import floor_hour
from app.protocol import PkgID, Request
from app.routing import PackageRouter, SchemaCheck, obj

router = PackageRouter()

#: Unfinished chunked imports of this process (they live as long as the chunks' connection needs).
UPLOADS = Uploads()

#: Above this many changed monitors one EVENT_MONITOR_CHANGED "imported" replaces the
#: per-monitor events: 10,000 events would overflow every dashboard's send queue.
EVENT_LIMIT = 200
#: Names listed per diff list; the counts are always exact.
LIST_LIMIT = 1000
#: JSON bytes of monitors per MONITOR_EXPORT page, well under the 1 MiB send queue.
EXPORT_PAGE_BYTES = 256 * 1024

#: Characters of a refused row's name quoted in an error.
_QUOTE = 200

_NAME_OR_ID = {"oneOf": [ID, {"type": "string", "minLength": 1, "maxLength": 200}]}

#: One row of a fleet file: a MONITOR_CREATE body whose members, channels, dependencies and
#: escalation policy may be names.
ROW_SCHEMA = obj(
    {
        **MONITOR_FIELDS_SCHEMA,
        "members": {"type": "array", "maxItems": 1000, "items": _NAME_OR_ID},
        "channels": {"type": "array", "maxItems": 50, "items": _NAME_OR_ID},
        **ROUTING_FIELDS_SCHEMA,
        "depends_on": {**ROUTING_FIELDS_SCHEMA["depends_on"], "items": _NAME_OR_ID},
        "escalation_policy": {"oneOf": [*_NAME_OR_ID["oneOf"], {"type": "null"}]},
    },
    ["name", "kind"],
)
_ROW_CHECK = SchemaCheck(ROW_SCHEMA)

_MONITORS = Monitor.__table__  # type: ignore[attr-defined]
_CHANNELS = Channel.__table__  # type: ignore[attr-defined]
_READ = ("id", "name", "version", "state_seq", "push_token", *fleet.COMPARED)


@router.package(
    PkgID.MONITOR_IMPORT,
    schema=obj(
        {
            "monitors": {"type": "array", "maxItems": MAX_ROWS, "items": {"type": "object"}},
            "import_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "chunk": {"type": "integer", "minimum": 0, "maximum": MAX_ROWS},
            "chunks": {"type": "integer", "minimum": 1, "maximum": MAX_ROWS},
            "dry_run": {"type": "boolean"},
            "delete_missing": {"type": "boolean"},
        },
        ["monitors"],
    ),
    audit=True,
    response_example={
        "applied": True,
        "counts": {"create": 1, "update": 1, "delete": 0, "unchanged": 9998},
        "create": ["api"],
        "update": [{"name": "db", "fields": ["interval"]}],
        "delete": [],
        "unchanged": 9998,
    },
)
async def monitor_import(req: Request, ctx: Context) -> dict[str, Any]:
    """Apply a fleet definition by name (create, change, optionally delete); chunks for large fleets."""
    data = req.data
    chunks = int(data.get("chunks", 1))
    if chunks > 1 and "import_id" not in data:
        raise InvalidData(
            "a chunked import needs an import_id (any string you choose, the same on every chunk)",
            errors=[{"path": "import_id", "msg": "required when chunks > 1"}],
        )
    owner = (ctx.tenant_id, ctx.identity.actor)
    rows = UPLOADS.add(
        owner,
        str(data.get("import_id", "")),
        int(data.get("chunk", 0)),
        chunks,
        data["monitors"],
        len(orjson.dumps(data["monitors"])),
    )
    if rows is None:
        ctx.audited = True  # a received chunk is no action yet: the import is audited once, when applied
        return {"import_id": data["import_id"], "received": int(data.get("chunk", 0)) + 1, "chunks": chunks}
    _check_rows(rows)
    dry_run = bool(data.get("dry_run", False))
    delete_missing = bool(data.get("delete_missing", False))
    try:
        async with ctx.tx() as s:
            if not dry_run:
                await quotas.hold(s, ctx.tenant_id)  # before reading: no create of the tenant interleaves
            stored, extra = await _read_fleet(s, ctx.tenant_id, lock=not dry_run)
            channels = await _channel_names(s, ctx.tenant_id)
            planned = fleet.plan(
                rows,
                stored,
                {name: cid for cid, name in channels.items()},
                delete_missing=delete_missing,
                min_interval=ctx.settings.monitor_min_interval,
                timeout_max=ctx.settings.check_timeout_max,
                locations=await _location_names(s, ctx.tenant_id),
                policies={name: pid for pid, name in (await _policy_names(s, ctx.tenant_id)).items()},
            )
            diff = planned.diff()
            ctx.audit_details = {
                "rows": len(rows),
                "dry_run": dry_run,
                "delete_missing": delete_missing,
                **{k: len(diff[k]) for k in ("create", "update", "delete")},
                "unchanged": planned.unchanged,
            }
            if not dry_run:
                await _apply(s, ctx, planned, extra)
    except IntegrityError:
        # Only a concurrent MONITOR_CREATE/UPDATE taking a name between our read and write.
        raise Conflict("a monitor name in the file was taken meanwhile; run the import again") from None
    if not dry_run and (planned.create or planned.update or planned.delete):
        _wake_collector(ctx)
    return _answer(diff, applied=not dry_run)


def _check_rows(rows: list[Any]) -> None:
    errors: list[dict[str, str]] = []
    for i, row in enumerate(rows):
        found = _ROW_CHECK.errors(row)
        if found:
            # A bad row may carry a huge value: the answer quotes at most a bounded part of it.
            name = str(row.get("name", "?"))[:_QUOTE] if isinstance(row, dict) else "?"
            for e in found[:3]:
                path = f"monitors[{i}]" + (f".{e['path']}" if e.get("path") else "")
                msg = f"row {i} ({name!r}): {e['msg']}"
                errors.append({"path": path, "name": name, "msg": msg[: 2 * _QUOTE]})
        if len(errors) >= fleet.MAX_ERRORS:
            break
    if errors:
        raise InvalidData(
            f"{errors[0]['msg']}; fix the rows listed in errors, nothing was applied", errors=errors
        )


async def _read_fleet(
    s: AsyncSession, tenant_id: int, *, lock: bool
) -> tuple[list[fleet.Stored], dict[int, dict[str, Any]]]:
    stmt = select(*[_MONITORS.c[k] for k in _READ]).where(_MONITORS.c.tenant_id == tenant_id)
    if lock:
        stmt = stmt.with_for_update()  # PostgreSQL: a concurrent MONITOR_UPDATE waits; SQLite: hold() did it
    rows = (await s.execute(stmt)).mappings().all()
    stored = [fleet.Stored(r["id"], r["name"], {k: r[k] for k in fleet.COMPARED}) for r in rows]
    return stored, {r["id"]: dict(r) for r in rows}


async def _location_names(s: AsyncSession, tenant_id: int) -> set[str]:
    rows = await s.execute(select(col(Location.name)).where(col(Location.tenant_id) == tenant_id))
    return set(rows.scalars())


async def _policy_names(s: AsyncSession, tenant_id: int) -> dict[int, str]:
    found = await s.execute(
        select(col(EscalationPolicy.id), col(EscalationPolicy.name)).where(
            col(EscalationPolicy.tenant_id) == tenant_id
        )
    )
    return {int(pid or 0): str(name) for pid, name in found.all()}


async def _channel_names(s: AsyncSession, tenant_id: int) -> dict[int, str]:
    found = await s.execute(
        select(_CHANNELS.c.id, _CHANNELS.c.name).where(_CHANNELS.c.tenant_id == tenant_id)
    )
    return {int(cid): str(name) for cid, name in found.all()}


async def _apply(
    s: AsyncSession, ctx: Context, planned: fleet.Plan, extra: dict[int, dict[str, Any]]
) -> None:
    now = utcnow()
    if planned.delete:
        ids = [m.id for m in planned.delete]
        for start in range(0, len(ids), 1000):
            await s.execute(
                delete(Monitor)
                .where(col(Monitor.id).in_(ids[start : start + 1000]))
                .execution_options(synchronize_session=False)
            )
    if planned.create:
        await quotas.reserve(s, ctx.tenant_id, ctx.settings, "monitors", count=len(planned.create))
    new_ids: dict[str, int] = {}
    created: list[dict[str, Any]] = []
    #: New monitors depending on other new ones: their ids are all known after the last insert
    #: (dependencies may form chains and longer loops, so they do not order the inserts).
    later: list[tuple[dict[str, Any], list[fleet.Ref]]] = []
    # Core INSERT … RETURNING in batches: building 10,000 ORM objects alone costs over a second
    # of the event loop.
    template = {**_new_row_defaults(), "tenant_id": ctx.tenant_id, "rolled_until": floor_hour(now)}
    template.update(state_changed_at=now, created_at=now, updated_at=now)
    for layer in planned.create_layers():
        batch = []
        for c in layer:
            row = {**template, **c.values, "members": _resolve(c.values["members"], new_ids)}
            if any(isinstance(d, str) for d in c.values["depends_on"]):
                row["depends_on"] = [d for d in c.values["depends_on"] if isinstance(d, int)]
                later.append((row, c.values["depends_on"]))
            row["push_token"] = new_push_token() if row["kind"] == "push" else None
            row["state"] = State.PENDING.value if row["enabled"] else State.PAUSED.value
            row["next_check_at"] = first_due(row, ctx)
            batch.append(row)
        for start in range(0, len(batch), 1000):
            part = batch[start : start + 1000]
            found = await s.execute(insert(_MONITORS).returning(_MONITORS.c.id, _MONITORS.c.name), part)
            new_ids.update({str(name): int(mid) for mid, name in found.all()})
        for row in batch:
            row["id"] = new_ids[row["name"]]
        created.extend(batch)
    if later:
        for row, wanted in later:
            row["depends_on"] = _resolve(wanted, new_ids)
        deps = [{"id": row["id"], "depends_on": row["depends_on"]} for row, _ in later]
        for start in range(0, len(deps), 1000):
            await s.execute(update(Monitor), deps[start : start + 1000])
    params = []
    for ch in planned.update:
        old = extra[ch.id]
        changes = dict(ch.changes)
        for key in ("members", "depends_on"):
            if key in changes:
                changes[key] = _resolve(changes[key], new_ids)
        if "enabled" in changes:
            changes["state"] = State.PENDING.value if changes["enabled"] else State.PAUSED.value
            changes.update(fail_streak=0, ok_streak=0, state_changed_at=now)
            changes.update(lease_owner=None, lease_expires_at=None)
        if ch.values["kind"] == "push" and not old["push_token"]:
            changes["push_token"] = new_push_token()
        if any(k in changes for k in _CHECK_FIELDS) or changes.get("enabled") is True:
            changes["next_check_at"] = first_due(ch.values, ctx)
        changes.update(version=old["version"] + 1, state_seq=old["state_seq"] + 1, updated_at=now)
        params.append({"id": ch.id, **changes})
    for start in range(0, len(params), 1000):
        # ORM bulk UPDATE by primary key: one executemany per set of changed columns.
        await s.execute(update(Monitor), params[start : start + 1000])
    await _publish(s, ctx, planned, created)
    await _publish_assignments(s, ctx, planned, created, params, extra)


async def _publish_assignments(
    s: AsyncSession,
    ctx: Context,
    planned: fleet.Plan,
    created: list[dict[str, Any]],
    params: list[dict[str, Any]],
    extra: dict[int, dict[str, Any]],
) -> None:
    """EVENT_PROBE_ASSIGNMENT (906) for what the import changed on each probe location: one
    per monitor, or one ``reload`` for a location with more than assignments.EVENT_LIMIT."""
    pairs: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
    for gone in planned.delete:
        pairs.append((assignments.snapshot(extra[gone.id]), None))
    for row in created:
        pairs.append((None, assignments.snapshot(row)))
    for param in params:
        old = extra[param["id"]]
        pairs.append((assignments.snapshot(old), assignments.snapshot({**old, **param})))
    per = assignments.group(pairs)
    for topic, payload in await assignments.events(s, ctx.tenant_id, per):
        ctx.publish(topic, PkgID.EVENT_PROBE_ASSIGNMENT, payload)


def _new_row_defaults() -> dict[str, Any]:
    """Every column of a new monitor row at its model default (the import overrides the rest)."""
    row = Monitor(tenant_id=0, name="", kind="push").model_dump()
    row.pop("id", None)
    return row


def _resolve(members: list[fleet.Ref], new_ids: dict[str, int]) -> list[int]:
    return [new_ids[m] if isinstance(m, str) else m for m in members]


async def _publish(s: AsyncSession, ctx: Context, planned: fleet.Plan, created: list[dict[str, Any]]) -> None:
    """Queue the events sent after commit: per monitor for a small import, one summary otherwise."""
    changed = len(planned.create) + len(planned.update) + len(planned.delete)
    if changed == 0:
        return
    if changed > EVENT_LIMIT:
        ctx.publish(
            "monitors",
            PkgID.EVENT_MONITOR_CHANGED,
            {
                "action": "imported",
                "created": len(planned.create),
                "updated": len(planned.update),
                "deleted": len(planned.delete),
            },
        )
        return
    for monitor in created:
        ctx.publish(
            "monitors",
            PkgID.EVENT_MONITOR_CHANGED,
            {"action": "created", "monitor": monitor_to_wire(monitor, show_push_token=False)},
        )
    if planned.update:
        ids = [c.id for c in planned.update]
        rows = (await s.execute(select(_MONITORS).where(_MONITORS.c.id.in_(ids)))).mappings().all()
        for row in rows:
            ctx.publish(
                "monitors",
                PkgID.EVENT_MONITOR_CHANGED,
                {"action": "updated", "monitor": monitor_to_wire(dict(row), show_push_token=False)},
            )
    for gone in planned.delete:
        ctx.publish(
            "monitors", PkgID.EVENT_MONITOR_CHANGED, {"action": "deleted", "monitor": {"id": gone.id}}
        )


def _answer(diff: dict[str, Any], *, applied: bool) -> dict[str, Any]:
    counts = {k: len(diff[k]) for k in ("create", "update", "delete")} | {"unchanged": diff["unchanged"]}
    out: dict[str, Any] = {"applied": applied, "counts": counts, "unchanged": diff["unchanged"]}
    for key in ("create", "update", "delete"):
        out[key] = diff[key][:LIST_LIMIT]
    out["truncated"] = any(len(diff[k]) > LIST_LIMIT for k in ("create", "update", "delete"))
    return out


@router.package(
    PkgID.MONITOR_EXPORT,
    schema=obj(
        {
            "after": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
        }
    ),
    response_example={
        "monitors": [{"name": "api", "kind": "http", "url": "https://example.com/health"}],
        "next": 17,
    },
)
async def monitor_export(req: Request, ctx: Context) -> dict[str, Any]:
    """The tenant's monitors as import rows, in id order; pass ``next`` as ``after`` until it is null."""
    after = int(req.data.get("after", 0))
    limit = int(req.data.get("limit", 500))
    timeout_max = ctx.settings.check_timeout_max
    async with ctx.services.db.session() as s:
        stmt = (
            select(*[_MONITORS.c[k] for k in ("id", "name", *fleet.COMPARED)])
            .where(_MONITORS.c.tenant_id == ctx.tenant_id, _MONITORS.c.id > after)
            .order_by(_MONITORS.c.id)
            .limit(limit + 1)
        )
        rows = list((await s.execute(stmt)).mappings().all())
        member_ids = {m for r in rows for key in ("members", "depends_on") for m in r[key] or []}
        names = {r["id"]: r["name"] for r in rows}
        missing = member_ids - names.keys()
        if missing:
            found = await s.execute(
                select(col(Monitor.id), col(Monitor.name)).where(
                    col(Monitor.tenant_id) == ctx.tenant_id, col(Monitor.id).in_(missing)
                )
            )
            names.update({mid: name for mid, name in found.all()})
        channels = await _channel_names(s, ctx.tenant_id)
        policies = await _policy_names(s, ctx.tenant_id)
    out: list[dict[str, Any]] = []
    size = 0
    last: int | None = None
    for r in rows[:limit]:
        row = fleet.to_row(
            dict(r),
            r["name"],
            member_names=names,
            channel_names=channels,
            policy_names=policies,
            timeout_max=timeout_max,
        )
        size += len(orjson.dumps(row))
        if out and size > EXPORT_PAGE_BYTES:
            break
        out.append(row)
        last = r["id"]
    more = len(out) < len(rows)
    return {"monitors": out, "next": last if more else None}

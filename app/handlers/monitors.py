"""Monitors 100-107: CRUD with optimistic versions, pause/resume, check now.

Every query is scoped to the connection's tenant; another tenant's monitor
answers NOT_FOUND exactly like a missing one. Definition changes publish
EVENT_MONITOR_CHANGED (902) on ``monitors`` after commit; pause/resume also
publish EVENT_MONITOR_STATUS (900) because the state changes.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app import quotas
from app.alerting.channels import unknown_channel_ids
from app.context import Context
from app.errors import Conflict, InvalidData, NotFound
from app.models.base import iso, utcnow
from app.models.escalation import EscalationPolicy
from app.models.monitor import Monitor
from app.models.probe import LOCAL
from app.monitoring import assignments, kinds, locations, recorder
from app.monitoring.checks import CheckOutcome, cert_days_left, run_http_check, run_tcp_check
from app.monitoring.collector import group_outcome, internal_error, missed_push
from app.monitoring.conditions import parse_all
from app.monitoring.definition import (
    DEFAULTS,
    KINDS,
    MONITOR_FIELDS_SCHEMA,
    ROUTING_DEFAULTS,
    ROUTING_FIELDS_SCHEMA,
    effective_timeout,
    http_spec,
    kind_values,
    merge_update,
    monitor_to_wire,
    new_push_token,
    normalise,
    unknown_locations,
    validate_definition,
    with_defaults,
)
from app.monitoring.request import mask_request
from app.monitoring.state import State
from app.monitoring.stats import floor_hour
from app.monitoring.wire import result_to_wire
from app.protocol import PkgID, Request
from app.routing import ID, VERSION, PackageRouter, obj
from app.storage.db import Database
from app.storage.pagination import PAGE_SCHEMA, Page, paginate
from app.urls import mask_credentials

router = PackageRouter()

#: Fields whose change means the next check should use the new definition soon.
_CHECK_FIELDS = (
    "kind",
    "url",
    "method",
    "expected_status",
    "keyword",
    "verify_tls",
    "follow_redirects",
    "max_redirects",
    "headers",
    "body",
    "auth",
    "conditions",
    "degraded_latency_ms",
    "host",
    "port",
    "interval",
    "timeout",
    "members",
    "min_up",
    "grace",
    "options",
)

_EXAMPLE = {
    "id": 1,
    "name": "api",
    "kind": "http",
    "url": "https://example.com/health",
    "state": "up",
    "version": 1,
}


def show_token(ctx: Context) -> bool:
    """A push token lets its holder report on a monitor's behalf, so it is shown to whoever
    may change the monitor: the role actions.json gives MONITOR_UPDATE, not one named here."""
    return ctx.services.policy.allows(PkgID.MONITOR_UPDATE, ctx.identity.role)


def first_due(monitor: Monitor | Mapping[str, Any], ctx: Context) -> datetime:
    """When a new or resumed monitor is first checked: spread over the jitter window."""
    get = (lambda k: getattr(monitor, k)) if isinstance(monitor, Monitor) else monitor.__getitem__
    now = utcnow()
    if get("kind") == "push":
        return now + timedelta(seconds=get("interval") + get("grace"))
    spread = min(float(get("interval")), ctx.settings.collector_jitter)
    return now + timedelta(seconds=random.uniform(0, max(0.0, spread)))


async def load(session: AsyncSession, ctx: Context, monitor_id: int) -> Monitor:
    """The tenant's monitor or NotFound (another tenant's id looks exactly like a missing one)."""
    monitor = await session.get(Monitor, monitor_id)
    if monitor is None or monitor.tenant_id != ctx.tenant_id:
        raise NotFound(f"no monitor {monitor_id} in this tenant")
    return monitor


async def _check_members(
    session: AsyncSession, ctx: Context, values: dict[str, Any], self_id: int | None
) -> None:
    if values["kind"] != "group":
        return
    members = list(values.get("members") or [])
    if self_id is not None and self_id in members:
        raise InvalidData(
            "a group cannot be its own member", errors=[{"path": "members", "msg": "contains itself"}]
        )
    found = await session.execute(
        select(col(Monitor.id), col(Monitor.members)).where(
            col(Monitor.tenant_id) == ctx.tenant_id, col(Monitor.id).in_(members)
        )
    )
    rows = found.all()
    missing = sorted(set(members) - {r[0] for r in rows})
    if missing:
        raise InvalidData(
            f"members {missing} are not monitors of this tenant",
            errors=[{"path": "members", "msg": f"unknown monitor ids {missing}"}],
        )
    if self_id is not None and any(self_id in (r[1] or []) for r in rows):
        raise InvalidData(
            "a group cannot contain a group that contains it", errors=[{"path": "members", "msg": "cycle"}]
        )


async def _check_channels(session: AsyncSession, ctx: Context, channel_ids: list[int]) -> None:
    unknown = await unknown_channel_ids(session, ctx.tenant_id, channel_ids)
    if unknown:
        # Another tenant's channel looks exactly like a missing one.
        raise InvalidData(
            f"channels {unknown} are not alert channels of this tenant; CHANNEL_LIST shows their ids",
            errors=[{"path": "channels", "msg": f"unknown channel ids {unknown}"}],
        )


def _audit(ctx: Context, data: Mapping[str, Any]) -> None:
    """Record what was asked in the audit row, secrets masked like in answers."""
    details = dict(data)
    if isinstance(details.get("url"), str):
        details["url"] = mask_credentials(details["url"])
    if isinstance(details.get("options"), Mapping):
        details["options"] = kinds.mask_options(str(details.get("kind") or ""), details["options"])
    if "headers" in details or "auth" in details:
        details["headers"], details["auth"] = mask_request(details.get("headers"), details.get("auth"))
    ctx.audit_details = details


async def _check_routing(
    session: AsyncSession, ctx: Context, values: dict[str, Any], self_id: int | None
) -> None:
    """``depends_on`` names other monitors of this tenant, without a direct cycle;
    ``escalation_policy`` is one of this tenant's policies."""
    errors = []
    deps = list(values.get("depends_on") or [])
    if len(set(deps)) != len(deps):
        errors.append({"path": "depends_on", "msg": "depends_on must not repeat a monitor id"})
    if self_id is not None and self_id in deps:
        errors.append({"path": "depends_on", "msg": "a monitor cannot depend on itself"})
    if deps:
        rows = (
            await session.execute(
                select(col(Monitor.id), col(Monitor.depends_on)).where(
                    col(Monitor.tenant_id) == ctx.tenant_id, col(Monitor.id).in_(deps)
                )
            )
        ).all()
        missing = sorted(set(deps) - {r[0] for r in rows} - {self_id})
        if missing:
            errors.append({"path": "depends_on", "msg": f"unknown monitor ids {missing}"})
        cyclic = sorted(int(r[0] or 0) for r in rows if self_id is not None and self_id in (r[1] or []))
        if cyclic:
            errors.append({"path": "depends_on", "msg": f"monitors {cyclic} depend on this one (a cycle)"})
    wanted = [name for name in values.get("locations") or [] if name != LOCAL]
    if wanted:
        known = await assignments.location_ids(session, ctx.tenant_id, wanted)
        problem = unknown_locations(wanted, known)
        if problem:
            errors.append({"path": "locations", "msg": problem})
    policy_id = values.get("escalation_policy")
    if policy_id is not None:
        policy = await session.get(EscalationPolicy, policy_id)
        if policy is None or policy.tenant_id != ctx.tenant_id:
            errors.append(
                {
                    "path": "escalation_policy",
                    "msg": f"unknown escalation policy {policy_id}; see ESCALATION_LIST",
                }
            )
    if errors:
        raise InvalidData(f"invalid monitor: {errors[0]['path']}: {errors[0]['msg']}", errors=errors)


def _validate(values: dict[str, Any], ctx: Context) -> None:
    validate_definition(
        values,
        min_interval=ctx.settings.monitor_min_interval,
        timeout_max=ctx.settings.check_timeout_max,
    )


def _changed_event(ctx: Context, action: str, monitor: Monitor) -> None:
    payload = {"id": monitor.id} if action == "deleted" else monitor_to_wire(monitor, show_push_token=False)
    ctx.publish("monitors", PkgID.EVENT_MONITOR_CHANGED, {"action": action, "monitor": payload})


async def _assignment_events(
    ctx: Context, session: AsyncSession, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> None:
    """EVENT_PROBE_ASSIGNMENT (906) on each probe location the change concerns, after commit
    (``before``/``after``: :func:`app.monitoring.assignments.snapshot`, None: absent)."""
    per = assignments.group([(before, after)])
    for topic, payload in await assignments.events(session, ctx.tenant_id, per):
        ctx.publish(topic, PkgID.EVENT_PROBE_ASSIGNMENT, payload)


async def _status_event(ctx: Context, session: AsyncSession, monitor: Monitor, previous: str) -> None:
    if previous == monitor.state:
        return
    changed_at = monitor_to_wire(monitor)["state_changed_at"]
    for _tenant, topic, pkg_id, data in await recorder.page_events(session, monitor, previous, changed_at):
        ctx.publish(topic, pkg_id, data)
    ctx.publish(
        "monitors",
        PkgID.EVENT_MONITOR_STATUS,
        {
            "id": monitor.id,
            "name": monitor.name,
            "state": monitor.state,
            "previous": previous,
            "changed_at": monitor_to_wire(monitor)["state_changed_at"],
            "error": None,
            "latency_ms": None,
        },
    )


@router.package(
    PkgID.MONITOR_CREATE,
    schema=obj({**MONITOR_FIELDS_SCHEMA, **ROUTING_FIELDS_SCHEMA}, ["name", "kind"]),
    audit=True,
    response_example=_EXAMPLE,
)
async def monitor_create(req: Request, ctx: Context) -> dict[str, Any]:
    """Create a monitor; its first check runs within the collector's jitter window."""
    _audit(ctx, req.data)
    values = normalise(with_defaults(ROUTING_DEFAULTS | req.data, timeout_max=ctx.settings.check_timeout_max))
    _validate(values, ctx)
    now = utcnow()
    monitor = Monitor(tenant_id=ctx.tenant_id, **values)
    monitor.push_token = new_push_token() if monitor.kind == "push" else None
    monitor.state = State.PENDING.value if monitor.enabled else State.PAUSED.value
    monitor.next_check_at = first_due(monitor, ctx)
    monitor.rolled_until = floor_hour(now)
    try:
        async with ctx.tx() as s:
            await quotas.reserve(s, ctx.tenant_id, ctx.settings, "monitors")
            await _check_members(s, ctx, values, None)
            await _check_channels(s, ctx, values["channels"])
            await _check_routing(s, ctx, values, None)
            s.add(monitor)
            await s.flush()
            ctx.audit_target = str(monitor.id)
            _changed_event(ctx, "created", monitor)
            await _assignment_events(ctx, s, None, assignments.snapshot(monitor))
    except IntegrityError:
        raise Conflict(
            f"a monitor named {values['name']!r} already exists in this tenant; pick another name"
        ) from None
    _wake_collector(ctx)
    return monitor_to_wire(monitor, show_push_token=show_token(ctx))


_MONITORS = Monitor.__table__  # type: ignore[attr-defined]


async def _fetch_monitors_wire(db: Database, ids: list[int]) -> dict[int, tuple[int, dict[str, Any]]]:
    """id -> (tenant_id, wire form with the push token); each row converted once per batch."""

    rows = await db.rows_by_id(_MONITORS, ids)
    return {row["id"]: (row["tenant_id"], monitor_to_wire(row)) for row in rows}


@router.package(PkgID.MONITOR_GET, schema=obj({"id": ID}, ["id"]), response_example=_EXAMPLE)
async def monitor_get(req: Request, ctx: Context) -> dict[str, Any]:
    """One monitor with its live state; a monitor checked from locations other than
    ``["local"]`` also carries ``location_status``: per location its ``state`` (up, down,
    or unknown when its latest result is older than interval + PROBE_GRACE),
    ``checked_at``, ``latency_ms`` and ``error``.

    The hottest read: concurrent lookups on this process share one query
    (:class:`app.storage.batch.BatchLoader`); a lookup never joins a query
    already sent, so it always sees writes committed before it arrived.
    """
    tenant_id = ctx.tenant_id
    db = ctx.services.db
    loader = db.loader("monitors", functools.partial(_fetch_monitors_wire, db))
    found = await loader.load(req.data["id"])
    if found is None or found[0] != tenant_id:
        raise NotFound(f"no monitor {req.data['id']} in this tenant")
    # The wire dict may be shared with other requests of the same batch: copy, never mutate.
    wire: dict[str, Any] = found[1]
    if not show_token(ctx):
        wire = {**wire, "push_token": None}
    if not locations.is_default(wire.get("locations")):
        # Checked from several places: each location's latest result (one indexed read).
        async with db.session() as s:
            latest = await locations.latest(s, int(wire["id"]))
        wire = {
            **wire,
            "location_status": locations.status_wire(
                list(wire["locations"]),
                latest,
                interval=int(wire["interval"]),
                grace=ctx.settings.probe_grace,
                now=utcnow(),
            ),
        }
    return wire


@router.package(
    PkgID.MONITOR_LIST,
    schema=obj(
        {
            **PAGE_SCHEMA,
            "state": {"enum": [s.value for s in State]},
            "kind": {"enum": list(KINDS)},
            "tag": {"type": "string", "minLength": 1, "maxLength": 64},
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
        }
    ),
    response_example=[_EXAMPLE],
)
async def monitor_list(req: Request, ctx: Context) -> Page:
    """This tenant's monitors in id order, filtered by state, kind, tag or name (substring)."""
    stmt = select(Monitor).where(col(Monitor.tenant_id) == ctx.tenant_id).order_by(col(Monitor.id))
    data = req.data
    if "state" in data:
        stmt = stmt.where(col(Monitor.state) == data["state"])
    if "kind" in data:
        stmt = stmt.where(col(Monitor.kind) == data["kind"])
    if "name" in data:
        stmt = stmt.where(func.lower(col(Monitor.name)).contains(data["name"].lower(), autoescape=True))
    if "tag" in data:
        # Tags are a JSON array of strings; match the quoted element in its text form.
        needle = '"' + data["tag"].replace("\\", "\\\\").replace('"', '\\"') + '"'
        stmt = stmt.where(cast(col(Monitor.tags), String).contains(needle, autoescape=True))
    async with ctx.services.db.session() as s:
        rows, meta = await paginate(s, stmt, data)
    shown = show_token(ctx)
    return Page([monitor_to_wire(m, show_push_token=shown) for m in rows], meta)


@router.package(
    PkgID.MONITOR_UPDATE,
    schema=obj(
        {"id": ID, "version": VERSION, **MONITOR_FIELDS_SCHEMA, **ROUTING_FIELDS_SCHEMA}, ["id", "version"]
    ),
    audit=True,
    response_example=_EXAMPLE,
)
async def monitor_update(req: Request, ctx: Context) -> dict[str, Any]:
    """Change a monitor's definition. ``version`` must be the one you read; a stale one is CONFLICT."""
    data = dict(req.data)
    _audit(ctx, data)
    monitor_id, version = data.pop("id"), data.pop("version")
    ctx.audit_target = str(monitor_id)
    refresh_pages: list[int] = []
    try:
        async with ctx.tx() as s:
            monitor = await load(s, ctx, monitor_id)
            if monitor.version != version:
                raise Conflict(
                    f"monitor {monitor_id} was changed since you read it (version {monitor.version}, "
                    f"you sent {version}); reload it and apply your change again"
                )
            before = assignments.snapshot(monitor)
            current = {key: getattr(monitor, key) for key in (*DEFAULTS, *ROUTING_DEFAULTS)} | {
                "name": monitor.name,
                "kind": monitor.kind,
            }
            values = normalise(merge_update(current, data, timeout_max=ctx.settings.check_timeout_max))
            _validate(values, ctx)
            await _check_members(s, ctx, values, monitor_id)
            if "channels" in data:  # ids saved before this check existed do not block other edits
                await _check_channels(s, ctx, values["channels"])
            if any(k in data for k in ROUTING_DEFAULTS) or "locations" in data:
                await _check_routing(s, ctx, values, monitor_id)
            now = utcnow()
            changes: dict[str, Any] = {k: v for k, v in values.items() if current.get(k) != v}
            previous_state = monitor.state
            if "enabled" in changes:
                changes["state"] = State.PENDING.value if values["enabled"] else State.PAUSED.value
                changes.update(fail_streak=0, ok_streak=0, state_changed_at=now)
            if values["kind"] == "push" and not monitor.push_token:
                changes["push_token"] = new_push_token()
            if any(k in changes for k in _CHECK_FIELDS) or changes.get("enabled") is True:
                probe = Monitor(**{**current, **values, "tenant_id": monitor.tenant_id})
                changes["next_check_at"] = first_due(probe, ctx)
            changes.update(version=version + 1, state_seq=monitor.state_seq + 1, updated_at=now)
            # Compare-and-set on the version: two concurrent updates cannot both win.
            res = await s.execute(
                update(Monitor)
                .where(col(Monitor.id) == monitor_id, col(Monitor.version) == version)
                .values(**changes)
                .execution_options(synchronize_session=False)
            )
            if getattr(res, "rowcount", 0) != 1:
                raise Conflict(f"monitor {monitor_id} was changed concurrently; reload it and retry")
            await s.refresh(monitor)
            _changed_event(ctx, "updated", monitor)
            await _status_event(ctx, s, monitor, previous_state)
            await _assignment_events(ctx, s, before, assignments.snapshot(monitor))
            if "name" in changes:
                refresh_pages = await recorder.page_ids(s, monitor_id)
    except IntegrityError:
        raise Conflict(
            f"a monitor named {data.get('name')!r} already exists in this tenant; pick another name"
        ) from None
    _pages_changed(ctx, refresh_pages)
    _wake_collector(ctx)
    return monitor_to_wire(monitor, show_push_token=show_token(ctx))


def _pages_changed(ctx: Context, pages: list[int]) -> None:
    """Status pages showing a renamed or deleted monitor read their view again (after the
    commit: ``at`` is later than the change, see app/handlers/status_pages.py)."""
    at = iso(utcnow())
    for page_id in pages:
        data = {"action": "page_updated", "page_id": page_id, "at": at}
        ctx.publish(f"status_page.{page_id}", PkgID.EVENT_MONITOR_CHANGED, data)


@router.package(PkgID.MONITOR_DELETE, schema=obj({"id": ID}, ["id"]), audit=True, response_example={"id": 1})
async def monitor_delete(req: Request, ctx: Context) -> dict[str, Any]:
    """Delete a monitor with its history, rollups and incidents, and from others' ``depends_on``.

    A member of a group answers 5 CONFLICT naming the group: remove it from the group first
    (deleted under it, the group would count one member fewer against its ``min_up``)."""
    ctx.audit_target = str(req.data["id"])
    async with ctx.tx() as s:
        monitor = await load(s, ctx, req.data["id"])
        await _refuse_if_member(s, ctx, req.data["id"])
        pages = await recorder.page_ids(s, req.data["id"])
        before = assignments.snapshot(monitor)
        dependents = await _drop_dependency(s, ctx, req.data["id"])
        await s.delete(monitor)
        _changed_event(ctx, "deleted", monitor)
        for other in dependents:
            _changed_event(ctx, "updated", other)
        await _assignment_events(ctx, s, before, None)
    _pages_changed(ctx, pages)
    return {"id": req.data["id"]}


async def _refuse_if_member(s: AsyncSession, ctx: Context, monitor_id: int) -> None:
    """A group's member cannot be deleted out from under it: the group would count one
    member fewer against its ``min_up`` and could go down for no outage at all."""
    rows = await s.execute(
        select(col(Monitor.id), col(Monitor.name), col(Monitor.members)).where(
            col(Monitor.tenant_id) == ctx.tenant_id, col(Monitor.kind) == "group"
        )
    )
    groups = [(gid, name) for gid, name, members in rows.all() if monitor_id in (members or [])]
    if groups:
        named = ", ".join(f"{name!r} (id {gid})" for gid, name in groups)
        raise Conflict(f"monitor {monitor_id} is a member of group {named}; remove it from the group first")


async def _drop_dependency(s: AsyncSession, ctx: Context, monitor_id: int) -> list[Monitor]:
    """Remove ``monitor_id`` from the ``depends_on`` of the tenant's other monitors (locked, in
    the caller's transaction); the monitors changed."""
    stmt = (
        select(Monitor)
        .where(
            col(Monitor.tenant_id) == ctx.tenant_id,
            col(Monitor.id) != monitor_id,
            cast(col(Monitor.depends_on), String) != "[]",
        )
        .with_for_update()
    )
    changed = []
    now = utcnow()
    for other in (await s.execute(stmt)).scalars().all():
        if monitor_id in (other.depends_on or []):
            other.depends_on = [d for d in other.depends_on if d != monitor_id]
            other.version += 1
            other.updated_at = now
            changed.append(other)
    if changed:
        await s.flush()
    return changed


async def _set_enabled(req: Request, ctx: Context, enabled: bool) -> dict[str, Any]:
    ctx.audit_target = str(req.data["id"])
    async with ctx.tx() as s:
        monitor = await load(s, ctx, req.data["id"])
        previous = monitor.state
        before = assignments.snapshot(monitor)
        if monitor.enabled != enabled:
            now = utcnow()
            monitor.enabled = enabled
            monitor.state = State.PENDING.value if enabled else State.PAUSED.value
            monitor.state_changed_at = now
            monitor.fail_streak = monitor.ok_streak = 0
            monitor.state_seq += 1  # an in-flight check must not overwrite the pause
            monitor.version += 1
            monitor.updated_at = now
            monitor.lease_owner = monitor.lease_expires_at = None
            if enabled:
                monitor.next_check_at = first_due(monitor, ctx)
            await s.flush()
            _changed_event(ctx, "updated", monitor)
            await _status_event(ctx, s, monitor, previous)
            await _assignment_events(ctx, s, before, assignments.snapshot(monitor))
    if enabled:
        _wake_collector(ctx)
    return monitor_to_wire(monitor, show_push_token=show_token(ctx))


@router.package(PkgID.MONITOR_PAUSE, schema=obj({"id": ID}, ["id"]), audit=True, response_example=_EXAMPLE)
async def monitor_pause(req: Request, ctx: Context) -> dict[str, Any]:
    """Stop checking a monitor; its state becomes ``paused`` (idempotent)."""
    return await _set_enabled(req, ctx, False)


@router.package(PkgID.MONITOR_RESUME, schema=obj({"id": ID}, ["id"]), audit=True, response_example=_EXAMPLE)
async def monitor_resume(req: Request, ctx: Context) -> dict[str, Any]:
    """Check a paused monitor again; it starts from ``pending`` (idempotent)."""
    return await _set_enabled(req, ctx, True)


def _outcome_wire(outcome: CheckOutcome) -> dict[str, Any]:
    return {
        "ok": outcome.ok,
        "latency_ms": outcome.latency_ms,
        "status_code": outcome.status_code,
        "error": outcome.error,
        "degraded": outcome.degraded,
        "warning": outcome.warning,
        "cert_expires_at": iso(outcome.cert_expires_at),
        "cert_days_left": cert_days_left(outcome.cert_expires_at),
        "cert_issuer": outcome.cert_issuer,
    }


async def _quorum_now(monitor: Monitor, ctx: Context) -> CheckOutcome:
    """CHECK_NOW of a monitor checked from several locations, decided as the collector
    decides it (docs/probes.md). Conflict when every location is unknown."""
    local = None
    started = utcnow()
    if LOCAL in (monitor.locations or []):
        local = await _probe(monitor, ctx)
    outcome, events = await locations.decide_from_locations(
        ctx.services.db, monitor, local, started_at=started, grace=ctx.settings.probe_grace
    )
    for _tenant, topic, pkg_id, data in events:
        ctx.publish(topic, pkg_id, data)
    await ctx.flush_events()
    if outcome is None:
        raise Conflict(
            "no location of this monitor has a recent result (its probes are offline or have "
            "not reported yet): nothing to record"
        )
    return outcome


async def _probe(values: dict[str, Any] | Monitor, ctx: Context) -> CheckOutcome:
    get = (lambda k: getattr(values, k)) if isinstance(values, Monitor) else values.get
    # Leave the handler deadline room to record the result.
    budget = max(0.5, ctx.settings.ws_handler_timeout - 2.0)
    timeout = min(effective_timeout(get("timeout"), ctx.settings.check_timeout_max), budget)
    try:
        if get("kind") == "http":
            spec = http_spec(
                values,
                timeout_max=ctx.settings.check_timeout_max,
                max_body_bytes=ctx.settings.check_max_body_bytes,
            )
            return await run_http_check(dataclasses.replace(spec, timeout=timeout))
        if get("kind") in kinds.NAMES:
            return await kinds.run(str(get("kind")), kind_values(values), timeout)
        return await run_tcp_check(
            str(get("host")), int(get("port") or 0), timeout, conditions=parse_all(get("conditions"))
        )
    # A row stored before validation was strict: a failed result, not status 1.
    except Exception as exc:  # noqa: BLE001
        return internal_error(exc, get("url"), get("options"))


async def _test_unsaved(values: dict[str, Any], ctx: Context) -> CheckOutcome:
    """The result an unsaved definition would get now, recorded nowhere."""
    if values["kind"] == "group":
        async with ctx.services.db.session() as s:
            await _check_members(s, ctx, values, None)
            probe = Monitor(tenant_id=ctx.tenant_id, **values)
            return group_outcome(probe, await recorder.group_member_states(s, probe))
    if values["kind"] == "push":
        # Nothing can have pushed to a monitor that does not exist yet: what it would
        # report if saved and never pushed to.
        return missed_push(Monitor(tenant_id=ctx.tenant_id, **values))
    return await _probe(values, ctx)


@router.package(
    PkgID.MONITOR_CHECK_NOW,
    schema={
        "oneOf": [
            obj({"id": ID}, ["id"]),
            obj({"monitor": obj(dict(MONITOR_FIELDS_SCHEMA), ["kind"])}, ["monitor"]),
        ]
    },
    audit=True,
    response_example={
        "result": {
            "ok": True,
            "latency_ms": 12.5,
            "status_code": 200,
            "error": None,
            "degraded": False,
            "warning": None,
            "cert_days_left": 60,
        },
        "state": "up",
    },
)
async def monitor_check_now(req: Request, ctx: Context) -> dict[str, Any]:
    """Run one check now. With ``id`` the result is recorded (state, incidents, events) like a
    scheduled one (a monitor with locations other than ``["local"]``: decided by its quorum,
    the server checking only if ``local`` is one of them; 5 CONFLICT when every location is
    unknown); with ``monitor`` (an unsaved definition of any kind) it is only returned —
    "test before save": a group is judged from its members' states, a push monitor answers
    what it would record if no push came."""
    if "monitor" in req.data:
        _audit(ctx, req.data["monitor"])
        values = normalise(
            with_defaults(
                {"name": "unsaved", **req.data["monitor"]}, timeout_max=ctx.settings.check_timeout_max
            )
        )
        _validate(values, ctx)
        return {"result": _outcome_wire(await _test_unsaved(values, ctx)), "recorded": False}
    monitor_id = req.data["id"]
    ctx.audit_target = str(monitor_id)
    async with ctx.services.db.session() as s:
        monitor = await load(s, ctx, monitor_id)
    if monitor.kind == "push":
        raise InvalidData(
            "push monitors are checked by their pushes; send HEARTBEAT_PUSH (201) with the push token",
            errors=[{"path": "id", "msg": "push monitor"}],
        )
    if monitor.kind != "group" and not locations.is_default(monitor.locations):
        outcome: CheckOutcome | None = await _quorum_now(monitor, ctx)
    else:
        outcome = await _probe(monitor, ctx) if monitor.kind != "group" else None
    rec: recorder.Recording | None = None
    for _attempt in range(3):
        try:
            async with ctx.tx() as s:
                monitor = await load(s, ctx, monitor_id)
                s.expunge(monitor)
                members = None
                if monitor.kind == "group":
                    members = await recorder.group_member_states(s, monitor)
                    outcome = group_outcome(monitor, members)
                assert outcome is not None
                now = utcnow()
                windows = await recorder.active_windows(s, {monitor.tenant_id}, now)
                rec = await recorder.record(
                    s,
                    monitor,
                    outcome,
                    now=now,
                    in_maintenance=recorder.covered(monitor, windows),
                    members=members,
                )
                if rec is None:
                    raise _LostRace
                for _tenant, topic, pkg_id, data in rec.events:
                    ctx.publish(topic, pkg_id, data)
            break
        except _LostRace:
            continue  # another writer recorded first; re-read the state and apply ours on top
    if rec is None or outcome is None:
        raise Conflict(f"monitor {monitor_id} is being checked right now; try again in a moment")
    return {
        "result": {
            **result_to_wire(rec.result),
            **{
                k: v
                for k, v in _outcome_wire(outcome).items()
                if k in ("degraded", "warning", "cert_expires_at", "cert_days_left", "cert_issuer")
            },
        },
        "state": rec.monitor.state,
        "recorded": True,
    }


class _LostRace(Exception):
    """The compare-and-set lost; raised inside ``ctx.tx`` so the attempt rolls back."""


def _wake_collector(ctx: Context) -> None:
    collector = ctx.services.collector
    if collector is not None:
        collector.wake()

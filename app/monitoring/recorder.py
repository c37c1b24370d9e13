"""Record one outcome for one monitor: result row, state step, compare-and-set,
incidents and the alerting hook, all in the caller's transaction.

Used by the collector (scheduled checks, push deadlines, groups), CHECK_NOW and
HEARTBEAT_PUSH. The caller commits, then publishes ``Recording.events`` (never
before: an event must not announce a change that was rolled back). When
:func:`record` returns None the compare-and-set lost — another writer recorded
first — and the caller must roll back (its result is dropped, not double-counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, bindparam, case, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.check import CheckResult
from app.models.incident import Incident
from app.models.maintenance import MaintenanceWindow
from app.models.monitor import Monitor
from app.models.status_page import StatusPageMonitor
from app.monitoring import certs, hooks
from app.monitoring.checks import CheckOutcome, cert_days_left
from app.monitoring.state import UP_LIKE, State, Step, group_state, step
from app.monitoring.wire import incident_to_wire, result_to_wire
from app.protocol import PkgID

#: (tenant_id, tenant-relative topic, pkg_id, data)
Event = tuple[int, str, int, Any]


@dataclass(slots=True)
class Recording:
    monitor: Monitor
    result: CheckResult
    transition: tuple[State, State] | None
    incident: Incident | None = None
    incident_action: str | None = None
    #: Dependents' incidents this transition attached to ``incident`` (with their monitors' names).
    attached: list[tuple[Incident, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


async def active_windows(
    session: AsyncSession, tenant_ids: set[int], now: datetime
) -> list[MaintenanceWindow]:
    """Maintenance windows of these tenants that cover ``now``."""
    if not tenant_ids:
        return []
    rows = await session.execute(
        select(MaintenanceWindow).where(
            col(MaintenanceWindow.tenant_id).in_(tenant_ids),
            col(MaintenanceWindow.ends_at) > now,
            col(MaintenanceWindow.starts_at) <= now,
        )
    )
    return list(rows.scalars().all())


def covered(monitor: Monitor, windows: list[MaintenanceWindow]) -> bool:
    return any(
        w.tenant_id == monitor.tenant_id and (w.all_monitors or monitor.id in (w.monitors or []))
        for w in windows
    )


async def group_member_states(session: AsyncSession, group: Monitor) -> list[str]:
    if not group.members:
        return []
    rows = await session.execute(
        select(col(Monitor.state)).where(
            col(Monitor.tenant_id) == group.tenant_id,
            col(Monitor.id).in_(group.members),
        )
    )
    return [str(s) for s in rows.scalars().all()]


def decide(
    monitor: Monitor,
    ok: bool | None,
    *,
    in_maintenance: bool,
    members: list[str] | None = None,
    degraded: bool = False,
) -> Step:
    """The state step for one outcome. Groups derive their state from ``members``."""
    if monitor.kind == "group" and members is not None and monitor.enabled:
        derived = State.MAINTENANCE if in_maintenance else group_state(members, monitor.min_up)
        current = State(monitor.state)
        return Step(derived, 0, 0, None if derived == current else (current, derived))
    return step(
        monitor.state,
        monitor.fail_streak,
        monitor.ok_streak,
        ok,
        fail_threshold=monitor.fail_threshold,
        recover_threshold=monitor.recover_threshold,
        in_maintenance=in_maintenance,
        paused=not monitor.enabled,
        degraded=degraded,
    )


async def record(
    session: AsyncSession,
    monitor: Monitor,
    outcome: CheckOutcome,
    *,
    now: datetime,
    in_maintenance: bool,
    next_check_at: datetime | None = None,
    lease_owner: str | None = None,
    members: list[str] | None = None,
) -> Recording | None:
    """Record ``outcome`` for ``monitor`` (a detached snapshot: never added to the session).

    ``lease_owner`` set: only succeed while this owner still holds the lease.
    ``next_check_at`` None keeps the schedule (CHECK_NOW). On success the
    snapshot carries the new state and the lease is released.
    """
    decision = decide(
        monitor, outcome.ok, in_maintenance=in_maintenance, members=members, degraded=outcome.degraded
    )
    # A degraded check keeps its warning where a failure keeps its error.
    said = outcome.error or outcome.warning
    values: dict[str, Any] = {
        "state": decision.state.value,
        "state_seq": monitor.state_seq + 1,
        "fail_streak": decision.fail_streak,
        "ok_streak": decision.ok_streak,
        "last_checked_at": now,
        "last_latency_ms": outcome.latency_ms,
        "last_status_code": outcome.status_code,
        "last_error": (said or None) and said[:300],
    }
    cert_threshold = _certificate(monitor, outcome, values, now, in_maintenance)
    if decision.transition is not None:
        values["state_changed_at"] = now
    if next_check_at is not None:
        # If someone moved the due time while we checked (a member nudged this group),
        # keep theirs: it is earlier and reflects newer information.
        values["next_check_at"] = case(
            (col(Monitor.next_check_at) == monitor.next_check_at, next_check_at),
            else_=col(Monitor.next_check_at),
        )
    conditions = [col(Monitor.id) == monitor.id, col(Monitor.state_seq) == monitor.state_seq]
    if lease_owner is not None:
        conditions.append(col(Monitor.lease_owner) == lease_owner)
        values["lease_owner"] = None
        values["lease_expires_at"] = None
    res = await session.execute(
        update(Monitor).where(*conditions).values(**values).execution_options(synchronize_session=False)
    )
    if getattr(res, "rowcount", 0) != 1:
        return None
    for key, value in values.items():
        if key != "next_check_at":  # an SQL expression, not a value
            setattr(monitor, key, value)
    if next_check_at is not None:
        monitor.next_check_at = next_check_at

    result = CheckResult(
        monitor_id=_id(monitor),
        tenant_id=monitor.tenant_id,
        ts=now,
        ok=outcome.ok,
        latency_ms=outcome.latency_ms,
        status_code=outcome.status_code,
        error=values["last_error"],
        maintenance=in_maintenance,
    )
    session.add(result)
    await session.flush()
    rec = Recording(monitor, result, decision.transition)
    if cert_threshold is not None:
        await hooks.on_certificate_expiring(session, monitor, cert_threshold, now=now)
    if decision.transition is not None:
        await _incidents(session, rec, outcome, now)
        await _nudge_groups(session, monitor, now)
        rec.attached = await hooks.on_state_change(
            session, monitor, decision.transition, incident=rec.incident, incident_action=rec.incident_action
        )
    rec.events = _events(rec)
    if decision.transition is not None:
        rec.events.extend(
            await page_events(
                session,
                monitor,
                decision.transition[0].value,
                result_to_wire(result)["ts"],
            )
        )
    return rec


def _certificate(
    monitor: Monitor, outcome: CheckOutcome, values: dict[str, Any], now: datetime, in_maintenance: bool
) -> int | None:
    """Put the certificate the check saw into ``values``; return the expiry threshold to
    alert now, if any (once per threshold and certificate; never in maintenance)."""
    expires = outcome.cert_expires_at
    if expires is None:
        return None
    values["cert_expires_at"] = expires
    values["cert_issuer"] = outcome.cert_issuer
    alerted = monitor.cert_alerted
    if certs.renewed(monitor.cert_expires_at, expires) and alerted is not None:
        alerted = values["cert_alerted"] = None
    days_left = cert_days_left(expires, now)
    if days_left is None or in_maintenance or not monitor.enabled:
        return None
    threshold = certs.due_threshold(days_left, monitor.cert_alert_days, alerted)
    if threshold is not None:
        values["cert_alerted"] = threshold
    return threshold


async def page_ids(session: AsyncSession, monitor_id: int) -> list[int]:
    """The status pages showing monitor ``monitor_id``."""
    rows = await session.execute(
        select(col(StatusPageMonitor.page_id)).where(col(StatusPageMonitor.monitor_id) == monitor_id)
    )
    return [int(page_id) for page_id in rows.scalars().all()]


async def page_events(session: AsyncSession, monitor: Monitor, previous: str, changed_at: Any) -> list[Event]:
    """EVENT_MONITOR_STATUS for every status page showing ``monitor`` (topic ``status_page.<id>``).

    What a page may show and nothing more: name, state, time and latency; never the
    error text or the definition (anonymous viewers read these topics).
    """
    pages = await page_ids(session, _id(monitor))
    data = {
        "id": monitor.id,
        "name": monitor.name,
        "state": monitor.state,
        "previous": previous,
        "changed_at": changed_at,
        "latency_ms": monitor.last_latency_ms,
    }
    return [
        (monitor.tenant_id, f"status_page.{page_id}", int(PkgID.EVENT_MONITOR_STATUS), data)
        for page_id in pages
    ]


#: Monitor columns a steady outcome writes (no transition: state and streaks only).
_STEADY_COLUMNS = (
    "state",
    "fail_streak",
    "ok_streak",
    "last_checked_at",
    "last_latency_ms",
    "last_status_code",
    "last_error",
    "cert_expires_at",
    "next_check_at",
)


async def record_steady(
    session: AsyncSession,
    items: list[tuple[Monitor, CheckOutcome, bool, datetime]],
    *,
    now: datetime,
    lease_owner: str,
    is_sqlite: bool,
) -> list[Recording | None]:
    """Record leased outcomes that change no state (the common case), many at once.

    ``items`` are (monitor, outcome, in_maintenance, next_check_at); each must give
    no transition under :func:`decide`, or a quiet one (see :func:`is_quiet`: no
    incident to open or resolve, no alert, no group to nudge), which only adds
    ``state_changed_at`` and the status event; the caller sends the others to
    :func:`record`.
    The compare-and-set is the one :func:`record` does (``state_seq`` and
    ``lease_owner``), but for the whole batch in one statement on PostgreSQL
    (``UPDATE … FROM unnest(<one array per column>) RETURNING id``; one cached
    statement per row on SQLite), and the results are one multi-row INSERT. No incident, group or
    alerting work: none of it happens without a transition. Returns a Recording,
    or None where the compare-and-set lost, in ``items`` order.
    """
    if not items:
        return []
    table = Monitor.__table__  # type: ignore[attr-defined]
    rows: list[dict[str, Any]] = []
    transitions: list[tuple[State, State] | None] = []
    for monitor, outcome, in_maintenance, next_check_at in items:
        decision = decide(monitor, outcome.ok, in_maintenance=in_maintenance, degraded=outcome.degraded)
        transitions.append(decision.transition)
        # A degraded check keeps its warning where a failure keeps its error (as in record()).
        said = outcome.error or outcome.warning
        rows.append(
            {
                "state_changed_at": now if decision.transition is not None else None,
                "id": monitor.id,
                "seq": monitor.state_seq,
                "due": monitor.next_check_at,
                "state": decision.state.value,
                "fail_streak": decision.fail_streak,
                "ok_streak": decision.ok_streak,
                "last_checked_at": now,
                "last_latency_ms": outcome.latency_ms,
                "last_status_code": outcome.status_code,
                "last_error": (said or None) and said[:300],
                "cert_expires_at": outcome.cert_expires_at,
                "next_check_at": next_check_at,
            }
        )
    won: set[int] = set()
    conn = await session.connection()
    if is_sqlite:
        stmt = _steady_update_one(table, lease_owner)
        for row in rows:
            res = await conn.execute(stmt, {f"b_{k}": v for k, v in row.items()})
            if getattr(res, "rowcount", 0) == 1:
                won.add(row["id"])
    else:
        # One array per column: the statement text never changes, so it is prepared once
        # and cached (a VALUES list would be compiled anew for every batch).
        params: dict[str, Any] = {name: [row[name] for row in rows] for name in _PG_STEADY_ARRAYS}
        params["lease_owner"] = lease_owner
        won = {int(i) for i in (await conn.execute(_PG_STEADY_UPDATE, params)).scalars().all()}
    kept = [
        (item, row, transition)
        for item, row, transition in zip(items, rows, transitions, strict=True)
        if row["id"] in won
    ]
    results: list[CheckResult] = []
    if kept:
        result_rows = [
            {
                "monitor_id": row["id"],
                "tenant_id": monitor.tenant_id,
                "ts": now,
                "ok": outcome.ok,
                "latency_ms": outcome.latency_ms,
                "status_code": outcome.status_code,
                "error": row["last_error"],
                "maintenance": in_maintenance,
            }
            for (monitor, outcome, in_maintenance, _due), row, _t in kept
        ]
        inserted = await conn.execute(
            insert(CheckResult.__table__).returning(  # type: ignore[attr-defined]
                CheckResult.__table__.c.id,  # type: ignore[attr-defined]
                sort_by_parameter_order=True,
            ),
            result_rows,
        )
        ids = [int(i) for i in inserted.scalars().all()]
        results = [CheckResult(id=i, **r) for i, r in zip(ids, result_rows, strict=True)]
    out: dict[int, Recording] = {}
    for ((monitor, _o, _m, _due), row, transition), result in zip(kept, results, strict=True):
        monitor.state_seq += 1
        for name in _STEADY_COLUMNS:
            if name == "cert_expires_at" and row[name] is None:
                continue
            setattr(monitor, name, row[name])
        if transition is not None:
            monitor.state_changed_at = now
        monitor.lease_owner = None
        monitor.lease_expires_at = None
        rec = Recording(monitor, result, transition)
        rec.events = _events(rec)
        out[row["id"]] = rec
    return [out.get(row["id"]) for row in rows]


#: Column arrays of the PostgreSQL steady UPDATE, with their element types.
_PG_STEADY_ARRAYS = {
    "id": "integer",
    "seq": "integer",
    "due": "timestamptz",
    "state": "varchar",
    "fail_streak": "integer",
    "ok_streak": "integer",
    "last_checked_at": "timestamptz",
    "last_latency_ms": "float8",
    "last_status_code": "integer",
    "last_error": "varchar",
    "cert_expires_at": "timestamptz",
    "next_check_at": "timestamptz",
    "state_changed_at": "timestamptz",
}

#: The batch compare-and-set on PostgreSQL: the rows whose state_seq and lease_owner
#: still match are updated and returned; the others (another writer won) are untouched.
_PG_STEADY_UPDATE = text(
    "UPDATE monitors AS m SET state = v.state, state_seq = m.state_seq + 1, "
    "fail_streak = v.fail_streak, ok_streak = v.ok_streak, last_checked_at = v.last_checked_at, "
    "last_latency_ms = v.last_latency_ms, last_status_code = v.last_status_code, "
    "last_error = v.last_error, "
    # Only HTTPS outcomes carry a certificate; keep the last one seen otherwise.
    "cert_expires_at = COALESCE(v.cert_expires_at, m.cert_expires_at), "
    "state_changed_at = COALESCE(v.state_changed_at, m.state_changed_at), "
    # As in record(): if someone moved the due time while we checked, keep theirs.
    "next_check_at = CASE WHEN m.next_check_at = v.due THEN v.next_check_at ELSE m.next_check_at END, "
    "lease_owner = NULL, lease_expires_at = NULL "
    "FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _PG_STEADY_ARRAYS.items())
    + ") AS v("
    + ", ".join(_PG_STEADY_ARRAYS)
    + ") WHERE m.id = v.id AND m.state_seq = v.seq AND m.lease_owner = :lease_owner RETURNING m.id"
)


def _steady_values(table: Any, v: Any) -> dict[str, Any]:
    """SET clause of the per-row steady UPDATE (SQLite); ``v`` holds the bound new values."""
    return {
        "state": v.state,
        "state_seq": table.c.state_seq + 1,
        "fail_streak": v.fail_streak,
        "ok_streak": v.ok_streak,
        "last_checked_at": v.last_checked_at,
        "last_latency_ms": v.last_latency_ms,
        "last_status_code": v.last_status_code,
        "last_error": v.last_error,
        "cert_expires_at": case(
            (v.cert_expires_at.is_(None), table.c.cert_expires_at), else_=v.cert_expires_at
        ),
        "state_changed_at": case(
            (v.state_changed_at.is_(None), table.c.state_changed_at), else_=v.state_changed_at
        ),
        "next_check_at": case((table.c.next_check_at == v.due, v.next_check_at), else_=table.c.next_check_at),
        "lease_owner": None,
        "lease_expires_at": None,
    }


class _Binds:
    """Attribute access to the bind parameters of the per-row steady UPDATE; named ``b_<field>``
    (a bind named like a column it sets is reserved by SQLAlchemy)."""

    def __init__(self, table: Any) -> None:
        types = {name: table.c[name].type for name in (*_STEADY_COLUMNS, "state_changed_at")}
        types |= {"id": Integer(), "seq": Integer(), "due": table.c.next_check_at.type}
        self._params = {name: bindparam(f"b_{name}", type_=kind) for name, kind in types.items()}

    def __getattr__(self, name: str) -> Any:
        return self._params[name]


def _steady_update_one(table: Any, lease_owner: str) -> Any:
    v = _Binds(table)
    return (
        update(table)
        .where(table.c.id == v.id, table.c.state_seq == v.seq, table.c.lease_owner == lease_owner)
        .values(_steady_values(table, v))
    )


async def _nudge_groups(session: AsyncSession, member: Monitor, now: datetime) -> None:
    """Make the groups containing ``member`` due now, so a member's transition reaches
    its groups within one collector tick instead of one group interval.

    A group being evaluated right now keeps this earlier due time (see :func:`record`),
    so it is evaluated once more with the member's new state."""
    # One read per tenant and transaction: a batch with many transitions (a fleet's
    # first checks, a network outage) would otherwise scan the groups once per member.
    ids = await _groups_containing(session, member)
    if ids:
        await session.execute(
            update(Monitor)
            .where(col(Monitor.id).in_(ids))
            .values(next_check_at=now)
            .execution_options(synchronize_session=False)
        )


async def _groups_containing(session: AsyncSession, member: Monitor) -> list[int]:
    """Ids of the enabled groups of ``member``'s tenant that list it."""
    cache: dict[int, list[tuple[int, list[int] | None]]] = session.info.setdefault("watchpost_groups", {})
    groups = cache.get(member.tenant_id)
    if groups is None:
        rows = await session.execute(
            select(col(Monitor.id), col(Monitor.members)).where(
                col(Monitor.tenant_id) == member.tenant_id,
                col(Monitor.kind) == "group",
                col(Monitor.enabled).is_(True),
            )
        )
        groups = cache[member.tenant_id] = [(int(gid or 0), members) for gid, members in rows.all()]
    return [gid for gid, members in groups if member.id in (members or [])]


async def is_quiet(session: AsyncSession, monitor: Monitor, transition: tuple[State, State]) -> bool:
    """Whether recording this transition does nothing beyond the monitor row, its result and
    the status event: no incident opens (not into down) or resolves (no open incident,
    read by :func:`prefetch_open_incidents`), no alert (those follow incidents; a group's
    up -> degraded is never quiet) and no group lists the monitor. A fleet's first checks
    (pending -> up) are quiet."""
    previous, new = transition
    if new == State.DOWN or monitor.kind == "group" or State.DEGRADED in (previous, new):
        # Into or out of degraded alerts the channels that follow it.
        return False
    if new in UP_LIKE:
        known: dict[int, Incident | None] | None = session.info.get("watchpost_open_incidents")
        if known is None or monitor.id not in known or known[_id(monitor)] is not None:
            return False
    if await page_ids(session, _id(monitor)):
        return False  # status pages showing it get their live event from record()
    return not await _groups_containing(session, monitor)


def certificate_steady(monitor: Monitor, outcome: CheckOutcome, now: datetime, in_maintenance: bool) -> bool:
    """Whether the certificate this outcome saw changes nothing but ``cert_expires_at``:
    the same issuer, no renewal and no threshold to alert (then :func:`record_steady` may
    take it; otherwise :func:`record` does the certificate work)."""
    if outcome.cert_expires_at is None:
        return True
    values: dict[str, Any] = {}
    threshold = _certificate(monitor, outcome, values, now, in_maintenance)
    return threshold is None and "cert_alerted" not in values and values["cert_issuer"] == monitor.cert_issuer


async def prefetch_open_incidents(session: AsyncSession, monitor_ids: list[int]) -> None:
    """Read the open incidents of these monitors in one query, for the transitions the
    caller is about to record one by one in this session (each is used once)."""
    if not monitor_ids:
        return
    rows = await session.execute(
        select(Incident).where(col(Incident.monitor_id).in_(monitor_ids), col(Incident.resolved_at).is_(None))
    )
    known: dict[int, Incident | None] = dict.fromkeys(monitor_ids)
    for incident in rows.scalars().all():
        known[incident.monitor_id] = incident
    session.info["watchpost_open_incidents"] = known


async def _incidents(session: AsyncSession, rec: Recording, outcome: CheckOutcome, now: datetime) -> None:
    assert rec.transition is not None
    new = rec.transition[1]
    if new != State.DOWN and new not in UP_LIKE:
        return  # pending, paused, maintenance: an open incident stays open
    known: dict[int, Incident | None] | None = session.info.get("watchpost_open_incidents")
    if known is not None and rec.monitor.id in known:
        open_incident = known.pop(_id(rec.monitor))  # read once, by prefetch_open_incidents
    else:
        open_incident = (
            await session.execute(
                select(Incident).where(
                    col(Incident.monitor_id) == rec.monitor.id,
                    col(Incident.resolved_at).is_(None),
                )
            )
        ).scalar_one_or_none()
    if new == State.DOWN and open_incident is None:
        incident = Incident(
            tenant_id=rec.monitor.tenant_id,
            monitor_id=_id(rec.monitor),
            cause=(outcome.error or "check failed")[:300],
            opened_at=now,
        )
        session.add(incident)
        await session.flush()
        rec.incident, rec.incident_action = incident, "opened"
    elif new in UP_LIKE and open_incident is not None:
        open_incident.resolved_at = now
        open_incident.resolved_by = "monitor"
        await session.flush()
        rec.incident, rec.incident_action = open_incident, "resolved"


def _id(monitor: Monitor) -> int:
    assert monitor.id is not None, "only stored monitors are recorded"
    return monitor.id


def _events(rec: Recording) -> list[Event]:
    m = rec.monitor
    tenant = m.tenant_id
    events: list[Event] = [
        (
            tenant,
            f"monitor.{m.id}",
            int(PkgID.EVENT_CHECK_RESULT),
            {**result_to_wire(rec.result), "state": m.state},
        )
    ]
    if rec.transition is not None:
        events.append(
            (
                tenant,
                "monitors",
                int(PkgID.EVENT_MONITOR_STATUS),
                {
                    "id": m.id,
                    "name": m.name,
                    "state": rec.transition[1].value,
                    "previous": rec.transition[0].value,
                    "changed_at": result_to_wire(rec.result)["ts"],
                    "error": m.last_error,
                    "latency_ms": m.last_latency_ms,
                },
            )
        )
    if rec.incident is not None and rec.incident_action is not None:
        events.append(
            (
                tenant,
                "incidents",
                int(PkgID.EVENT_INCIDENT),
                {
                    "action": rec.incident_action,
                    "incident": {**incident_to_wire(rec.incident), "monitor": m.name},
                },
            )
        )
    for child, name in rec.attached:
        events.append(
            (
                tenant,
                "incidents",
                int(PkgID.EVENT_INCIDENT),
                {"action": "attached", "incident": {**incident_to_wire(child), "monitor": name}},
            )
        )
    return events

"""Results per location (docs/probes.md): probes' reports, the server's own ``local``
result for monitors checked from several places, the quorum and per-location statistics.

Storage:

- ``location_checks``: every result once (history, statistics). A probe's result carries
  its idempotency key, unique per tenant and location: stored with ``INSERT … ON CONFLICT
  DO NOTHING`` (PostgreSQL and SQLite), so a resend is counted as a duplicate and changes
  nothing.
- ``location_results``: the latest result per (monitor, location), upserted only when the
  new result is newer (``WHERE checked_at < excluded.checked_at``): a replayed old result
  fills history and never overwrites a newer one.

A report of ``n`` results costs a fixed number of statements whatever ``n`` (one read of
the monitors, one insert per 500 results, one read and one upsert of the latest results,
one update of the probe row), not ``n`` of them.

The state of a location for a monitor is ``up``/``down`` from its latest result, or
``unknown`` when that result is older than ``interval + PROBE_GRACE`` (its probe is
offline, lagging or was never started).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.base import iso, utcnow
from app.models.monitor import Monitor
from app.models.probe import LOCAL as LOCAL
from app.models.probe import LocationCheck, LocationResult, Probe
from app.monitoring.checks import CheckOutcome
from app.monitoring.recorder import Event
from app.monitoring.stats import percentile
from app.protocol import PkgID

if TYPE_CHECKING:
    from app.storage.db import Database

UP, DOWN, UNKNOWN = "up", "down", "unknown"
_CHECKS = LocationCheck.__table__  # type: ignore[attr-defined]
_LATEST = LocationResult.__table__  # type: ignore[attr-defined]
#: A result may start at most this far in the future (clocks of probes drift a little).
FUTURE_SLACK = timedelta(seconds=60)
#: Rows per INSERT of a report (8 bound values each: far below both databases' limits).
INSERT_CHUNK = 500
#: Longest error text kept per result and per quorum outcome.
ERROR_MAX = 300


def is_default(locations: Any) -> bool:
    """True for a monitor checked only by the server's own collector (no quorum work at all)."""
    return not locations or list(locations) == [LOCAL]


def freshness(
    checked_at: datetime | None, state: str | None, interval: int, grace: float, now: datetime
) -> str:
    """``up``/``down`` from a latest result, ``unknown`` when none or older than interval + grace."""
    if checked_at is None or state is None:
        return UNKNOWN
    if now - checked_at > timedelta(seconds=interval + grace):
        return UNKNOWN
    return state


# -- reports ------------------------------------------------------------------------------


@dataclass(slots=True)
class Ingested:
    """What PROBE_REPORT answers, and the events to publish after the commit."""

    accepted: int = 0
    duplicates: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    #: Monitors moved to be decided at once (a location changed state): wake the collector.
    decide_now: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "refused": self.refused}


def _insert(session: AsyncSession) -> Any:
    return sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert


async def ingest(
    session: AsyncSession,
    *,
    tenant_id: int,
    location: str,
    token_id: int | None,
    results: list[dict[str, Any]],
    times: list[datetime],
    now: datetime,
    retention: timedelta,
) -> Ingested:
    """Validate, store and apply one report (``times``: each result's parsed ``ts``).

    A result is refused (listed, stored nowhere) when its monitor is not one of this
    tenant's enabled monitors listing ``location``, or its time is out of range; the
    others are kept. The caller commits, then publishes ``events``.
    """
    out = Ingested()
    ids = {int(r["monitor_id"]) for r in results}
    rows = await session.execute(
        select(col(Monitor.id), col(Monitor.enabled), col(Monitor.locations)).where(
            col(Monitor.tenant_id) == tenant_id, col(Monitor.id).in_(ids)
        )
    )
    monitors = {int(mid or 0): (bool(enabled), list(locs or [LOCAL])) for mid, enabled, locs in rows.all()}
    oldest = now - retention
    keep: list[dict[str, Any]] = []
    for index, (result, ts) in enumerate(zip(results, times, strict=True)):
        mid = int(result["monitor_id"])
        reason = None
        found = monitors.get(mid)
        if found is None:
            reason = "no such monitor in this tenant"
        elif not found[0]:
            reason = "the monitor is paused"
        elif location not in found[1]:
            reason = f"the monitor is not checked from {location}"
        elif ts > now + FUTURE_SLACK:
            reason = "ts is more than 60 s in the future"
        elif ts < oldest:
            reason = f"ts is older than the retention period ({retention.days} days)"
        if reason is not None:
            out.refused.append({"index": index, "monitor_id": mid, "reason": reason})
            continue
        ok = bool(result["ok"])
        error = result.get("error")
        keep.append(
            {
                "monitor_id": mid,
                "tenant_id": tenant_id,
                "location": location,
                "ts": ts,
                "ok": ok,
                "latency_ms": result.get("latency_ms"),
                "status_code": result.get("status_code"),
                "error": None if ok else ((error or "check failed")[:ERROR_MAX]),
                "key": result["key"],
            }
        )
    if keep:
        # Core statement with the rows as parameters: SQLAlchemy sends them as batched
        # multi-row INSERTs ("insertmanyvalues") from one cached compilation; an ORM
        # .values(list) would compile 9 bind parameters per row on every report.
        stmt = (
            _insert(session)(_CHECKS)
            .on_conflict_do_nothing(index_elements=["tenant_id", "location", "key"])
            .returning(_CHECKS.c.key)
        )
        stored: set[str] = set()
        for i in range(0, len(keep), INSERT_CHUNK):
            inserted = await session.execute(stmt, keep[i : i + INSERT_CHUNK])
            stored.update(str(k) for k in inserted.scalars().all())
        # A key twice in one report is stored once and the second counts as a duplicate.
        new: list[dict[str, Any]] = []
        for row in keep:
            if row["key"] in stored:
                stored.discard(row["key"])
                new.append(row)
        out.accepted = len(new)
        out.duplicates = len(keep) - len(new)
        out.events = await apply_latest(session, new, now=now)
        out.decide_now = await decide_soon(session, out.events, now=now)
    if token_id is not None:
        await session.execute(
            update(Probe)
            .where(col(Probe.token_id) == token_id)
            .values(last_report_at=now, results_total=col(Probe.results_total) + out.accepted)
            .execution_options(synchronize_session=False)
        )
    return out


async def decide_soon(session: AsyncSession, events: list[Event], *, now: datetime) -> int:
    """Monitors one of whose locations just changed state are due now instead of at their
    next due time: a quorum reached (or lost) between two due times is decided within a
    collector tick, not up to an interval later. Returns how many monitors moved."""
    ids = {
        int(data["monitor_id"])
        for _tenant, topic, pkg_id, data in events
        if pkg_id == PkgID.EVENT_LOCATION_STATE and topic == "monitors"
    }
    if not ids:
        return 0
    moved = await session.execute(
        update(Monitor)
        .where(col(Monitor.id).in_(ids), col(Monitor.enabled).is_(True), col(Monitor.next_check_at) > now)
        .values(next_check_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(moved, "rowcount", 0) or 0)


async def apply_latest(session: AsyncSession, rows: list[dict[str, Any]], *, now: datetime) -> list[Event]:
    """Move each (monitor, location)'s latest result forward to the newest of ``rows``
    (never back); EVENT_LOCATION_STATE for each whose state changed."""
    newest: dict[tuple[int, str], dict[str, Any]] = {}
    for row in rows:
        k = (row["monitor_id"], row["location"])
        if k not in newest or row["ts"] > newest[k]["ts"]:
            newest[k] = row
    if not newest:
        return []
    locs = {loc for _m, loc in newest}
    before = {
        (int(m), str(loc)): (str(state), checked)
        for m, loc, state, checked in (
            await session.execute(
                select(
                    col(LocationResult.monitor_id),
                    col(LocationResult.location),
                    col(LocationResult.state),
                    col(LocationResult.checked_at),
                ).where(
                    col(LocationResult.monitor_id).in_({m for m, _l in newest}),
                    col(LocationResult.location).in_(locs),
                )
            )
        ).all()
    }
    values = [
        {
            "monitor_id": r["monitor_id"],
            "location": r["location"],
            "tenant_id": r["tenant_id"],
            "state": UP if r["ok"] else DOWN,
            "checked_at": r["ts"],
            "latency_ms": r["latency_ms"],
            "status_code": r["status_code"],
            "error": r["error"],
            "received_at": now,
        }
        for (m, loc), r in sorted(newest.items(), key=lambda item: item[0])
        if (m, loc) not in before or before[(m, loc)][1] < r["ts"]
    ]  # in key order: concurrent reports lock the rows they share in the same order
    if not values:
        return []
    stmt = _insert(session)(_LATEST)
    stmt = stmt.on_conflict_do_update(
        index_elements=["monitor_id", "location"],
        set_={
            name: stmt.excluded[name]
            for name in ("state", "checked_at", "latency_ms", "status_code", "error", "received_at")
        },
        where=_LATEST.c.checked_at < stmt.excluded.checked_at,
    )
    await session.execute(stmt, values)
    events: list[Event] = []
    for v in values:
        previous = before.get((v["monitor_id"], v["location"]))
        if previous is not None and previous[0] == v["state"]:
            continue
        data = {
            "monitor_id": v["monitor_id"],
            "location": v["location"],
            "state": v["state"],
            "previous": previous[0] if previous is not None else None,
            "error": v["error"],
            "checked_at": iso(v["checked_at"]),
        }
        tenant = int(v["tenant_id"])
        pkg = int(PkgID.EVENT_LOCATION_STATE)
        events.append((tenant, "monitors", pkg, data))
        events.append((tenant, f"monitor.{v['monitor_id']}", pkg, data))
    return events


async def store_local(
    session: AsyncSession, monitor: Monitor, outcome: CheckOutcome, *, ts: datetime, now: datetime
) -> list[Event]:
    """The server's own check of a monitor with several locations, as location ``local``."""
    row: dict[str, Any] = {
        "monitor_id": monitor.id,
        "tenant_id": monitor.tenant_id,
        "location": LOCAL,
        "ts": ts,
        "ok": outcome.ok,
        "latency_ms": outcome.latency_ms,
        "status_code": outcome.status_code,
        "error": None if outcome.ok else (outcome.error or "check failed")[:ERROR_MAX],
        "key": None,
    }
    session.add(LocationCheck.model_validate(row))
    await session.flush()
    return await apply_latest(session, [row], now=now)


# -- quorum -------------------------------------------------------------------------------


async def latest(session: AsyncSession, monitor_id: int) -> list[LocationResult]:
    rows = await session.execute(select(LocationResult).where(col(LocationResult.monitor_id) == monitor_id))
    return list(rows.scalars().all())


async def decide_from_locations(
    db: Database, monitor: Monitor, local: CheckOutcome | None, *, started_at: datetime, grace: float
) -> tuple[CheckOutcome | None, list[Event]]:
    """One decision of a monitor checked from several locations, as the collector and
    CHECK_NOW take it: the server's own check (``local``, run by the caller when ``local``
    is one of its locations, started at ``started_at``) stored as that location's result,
    then the quorum over every location's latest result. Returns the outcome (None: every
    location unknown) and the events to publish (908 for a ``local`` state change)."""
    events: list[Event] = []
    async with db.session() as session:
        if local is not None:
            events = await store_local(session, monitor, local, ts=started_at, now=utcnow())
        rows = await latest(session, monitor.id or 0)
        await session.commit()
    return decide(monitor, rows, now=utcnow(), grace=grace, local=local), events


def decide(
    monitor: Monitor,
    results: list[LocationResult],
    *,
    now: datetime,
    grace: float,
    local: CheckOutcome | None,
) -> CheckOutcome | None:
    """The monitor's outcome from its locations' latest results (docs/probes.md, "How the
    state is decided"); None when every location is unknown (nothing to record)."""
    names = list(monitor.locations or [LOCAL])
    by_name = {r.location: r for r in results}
    down: list[tuple[str, str]] = []
    up_latency: list[float] = []
    known = 0
    for name in names:
        row = by_name.get(name)
        if row is None:
            continue
        state = freshness(row.checked_at, row.state, monitor.interval, grace, now)
        if state == UNKNOWN:
            continue
        known += 1
        if state == DOWN:
            down.append((name, row.error or "check failed"))
        elif row.latency_ms is not None:
            up_latency.append(float(row.latency_ms))
    if not known:
        return None
    if len(down) >= monitor.quorum:
        head = (
            f"down in {', '.join(n for n, _e in down)} "
            f"({len(down)} of {len(names)} locations, quorum {monitor.quorum}): "
        )
        text = head + "; ".join(f"{n}: {e}" for n, e in down)
        if len(text) > ERROR_MAX:
            text = text[: ERROR_MAX - 1] + "…"
        return CheckOutcome(False, None, local.status_code if local is not None else None, text)
    if local is not None and local.ok:
        return local
    # No local check, or it failed but fewer than quorum locations did: up, as the others see it.
    return CheckOutcome(True, statistics.median(up_latency) if up_latency else None, None, None)


def status_wire(
    locations: list[str], results: list[LocationResult], *, interval: int, grace: float, now: datetime
) -> list[dict[str, Any]]:
    """``location_status`` of MONITOR_GET: each location's latest result and state."""
    by_name = {r.location: r for r in results}
    out = []
    for name in locations:
        row = by_name.get(name)
        out.append(
            {
                "location": name,
                "state": freshness(
                    row.checked_at if row else None, row.state if row else None, interval, grace, now
                ),
                "checked_at": iso(row.checked_at) if row else None,
                "latency_ms": row.latency_ms if row else None,
                "error": row.error if row else None,
            }
        )
    return out


# -- statistics ---------------------------------------------------------------------------


async def location_stats(
    session: AsyncSession, monitor: Monitor, *, start: datetime, now: datetime, grace: float
) -> list[dict[str, Any]]:
    """Per location of ``monitor``: latest result and state, uptime, latency p50/p95 and
    check count over ``[start, now)`` from ``location_checks``."""
    names = list(monitor.locations or [LOCAL])
    counts = {
        str(loc): (int(total), int(up or 0))
        for loc, total, up in (
            await session.execute(
                select(
                    col(LocationCheck.location),
                    func.count(),
                    func.sum(case((col(LocationCheck.ok).is_(True), 1), else_=0)),
                )
                .where(
                    col(LocationCheck.monitor_id) == monitor.id,
                    col(LocationCheck.ts) >= start,
                    col(LocationCheck.ts) < now + FUTURE_SLACK,
                )
                .group_by(col(LocationCheck.location))
            )
        ).all()
    }
    latencies: dict[str, list[float]] = {}
    for loc, value in (
        await session.execute(
            select(col(LocationCheck.location), col(LocationCheck.latency_ms))
            .where(
                col(LocationCheck.monitor_id) == monitor.id,
                col(LocationCheck.ts) >= start,
                col(LocationCheck.ts) < now + FUTURE_SLACK,
                col(LocationCheck.ok).is_(True),
                col(LocationCheck.latency_ms).is_not(None),
            )
            .order_by(col(LocationCheck.latency_ms))
        )
    ).all():
        latencies.setdefault(str(loc), []).append(float(value or 0.0))
    status = status_wire(
        names, await latest(session, monitor.id or 0), interval=monitor.interval, grace=grace, now=now
    )
    out = []
    for entry in status:
        name = entry["location"]
        total, up = counts.get(name, (0, 0))
        values = latencies.get(name, [])
        out.append(
            {
                **entry,
                "checks": total,
                "up": up,
                "uptime": (up / total) if total else None,
                "p50": percentile(values, 50),
                "p95": percentile(values, 95),
            }
        )
    return out

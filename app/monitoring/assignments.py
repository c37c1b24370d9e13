"""What each probe location runs (docs/probes.md, "Assignments").

A monitor is *assigned* to a location while it is enabled and lists the location
(``local``, the server's own collector, is never a probe's). A probe reads its
location's assignments as **definitions**: what a runner needs, stored secrets
included (the probe must run the checks), and nothing else (no alert channels,
no routing, no state).

:func:`changes` turns one monitor's definition before and after a change (None:
did not exist) into the EVENT_PROBE_ASSIGNMENT (906) payloads per location; the
handlers publish them on :func:`topic` after the commit. :func:`assigned_page`
is PROBE_ASSIGNMENTS' keyset page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import String, cast, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.monitor import Monitor
from app.models.probe import LOCAL, Location
from app.monitoring.request import DEFAULT_MAX_REDIRECTS

#: The fields of a definition, in wire order: identity and schedule, then the kinds' fields.
DEFINITION_FIELDS = (
    "id",
    "name",
    "kind",
    "interval",
    "timeout",
    "version",
    "url",
    "method",
    "headers",
    "body",
    "auth",
    "expected_status",
    "keyword",
    "conditions",
    "verify_tls",
    "follow_redirects",
    "max_redirects",
    "degraded_latency_ms",
    "host",
    "port",
    "options",
)
#: Fields that decide whether (and where) a monitor is assigned, besides the definition's.
_ROUTING = ("enabled", "locations")
#: Above this many assignment events for one location in one change (a large import), that
#: location gets one ``{"op": "reload"}`` instead: a probe's send queue holds 1,000 frames
#: (WS_SEND_QUEUE_MAX), and one reload of the snapshot is cheaper than thousands of events.
EVENT_LIMIT = 200

Row = Mapping[str, Any] | Monitor


def topic(location_id: int) -> str:
    """The tenant-relative topic of a location's assignment events (attached by PROBE_HELLO)."""
    return f"probe.{location_id}"


def _get(m: Row, key: str) -> Any:
    return getattr(m, key) if isinstance(m, Monitor) else m.get(key)


def definition(m: Row) -> dict[str, Any]:
    """The monitor as a probe runs it: runner fields with their stored (unmasked) secrets."""
    out = {name: _get(m, name) for name in DEFINITION_FIELDS}
    out["headers"] = dict(out["headers"] or {})
    out["options"] = dict(out["options"] or {})
    out["conditions"] = list(out["conditions"] or [])
    out["expected_status"] = list(out["expected_status"] or [])
    if out["max_redirects"] is None:
        out["max_redirects"] = DEFAULT_MAX_REDIRECTS
    return out


def snapshot(m: Row) -> dict[str, Any]:
    """What :func:`changes` compares: the definition plus where and whether it runs."""
    return {**definition(m), **{k: _get(m, k) for k in _ROUTING}}


def assigned(m: Mapping[str, Any] | Monitor | None) -> set[str]:
    """The probe locations (not ``local``) running the monitor now; empty while paused."""
    if m is None or not _get(m, "enabled"):
        return set()
    return {name for name in _get(m, "locations") or () if name != LOCAL}


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Location name -> the 906 payload one monitor's change sends there.

    ``before``/``after`` are :func:`snapshot` results (None: the monitor did not exist /
    was deleted). A location still assigned gets ``upsert`` when the definition changed
    (the version alone does not count: a rename of a tag is no news to a probe); one it
    left (locations changed, paused, deleted) gets ``remove``.
    """
    was, now = assigned(before), assigned(after)
    out: dict[str, dict[str, Any]] = {}
    if after is not None and now:
        new_def = {k: after[k] for k in DEFINITION_FIELDS}
        old_def = {k: before[k] for k in DEFINITION_FIELDS} if before is not None else None
        same = old_def is not None and {**old_def, "version": 0} == {**new_def, "version": 0}
        for name in sorted(now):
            if name not in was or not same:
                out[name] = {"op": "upsert", "monitor": new_def}
    gone_id = (before or after or {}).get("id")
    for name in sorted(was - now):
        out[name] = {"op": "remove", "monitor_id": gone_id}
    return out


def group(
    pairs: Iterable[tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]],
) -> dict[str, list[dict[str, Any]]]:
    """Every change of a batch (an import) per location, in order; a location with more than
    :data:`EVENT_LIMIT` gets one ``{"op": "reload"}`` instead."""
    per: dict[str, list[dict[str, Any]]] = {}
    for before, after in pairs:
        for name, payload in changes(before, after).items():
            per.setdefault(name, []).append(payload)
    return {name: ([{"op": "reload"}] if len(items) > EVENT_LIMIT else items) for name, items in per.items()}


async def location_ids(session: AsyncSession, tenant_id: int, names: Iterable[str]) -> dict[str, int]:
    """The tenant's location ids by name (names without a location are left out)."""
    wanted = sorted(set(names) - {LOCAL})
    if not wanted:
        return {}
    rows = await session.execute(
        select(col(Location.name), col(Location.id)).where(
            col(Location.tenant_id) == tenant_id, col(Location.name).in_(wanted)
        )
    )
    return {str(name): int(lid or 0) for name, lid in rows.all()}


async def events(
    session: AsyncSession, tenant_id: int, per_location: Mapping[str, list[dict[str, Any]]]
) -> list[tuple[str, dict[str, Any]]]:
    """(topic, payload) for each change, in order, on each location's topic."""
    if not per_location:
        return []
    ids = await location_ids(session, tenant_id, per_location)
    return [(topic(ids[name]), p) for name, items in per_location.items() if name in ids for p in items]


async def assigned_page(
    session: AsyncSession, tenant_id: int, location: str, after_id: int, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """One keyset page of the location's assignments: (definitions, next_after_id or None).

    The JSON list is filtered portably (SQLite and PostgreSQL) with a LIKE on its text
    for the quoted name (``_`` and ``%`` escaped), then confirmed here; ``next_after_id``
    follows the rows read, so a page may hold fewer than ``limit`` definitions and still
    have a next one.
    """
    needle = f'"{location}"'
    stmt = (
        select(Monitor)
        .where(
            col(Monitor.tenant_id) == tenant_id,
            col(Monitor.enabled).is_(True),
            col(Monitor.id) > after_id,
            cast(col(Monitor.locations), String).contains(needle, autoescape=True),
        )
        .order_by(col(Monitor.id))
        .limit(limit)
    )
    rows = list((await session.execute(stmt)).scalars())
    found = [definition(m) for m in rows if location in assigned(m)]
    next_after = int(rows[-1].id or 0) if len(rows) == limit else None
    return found, next_after

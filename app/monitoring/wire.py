"""Wire shapes of check results, incidents and maintenance windows (responses and events)."""

from __future__ import annotations

from typing import Any

from app.models.base import iso
from app.models.check import CheckResult
from app.models.incident import Incident
from app.models.maintenance import MaintenanceWindow


def result_to_wire(r: CheckResult) -> dict[str, Any]:
    return {
        "id": r.id,
        "monitor_id": r.monitor_id,
        "ts": iso(r.ts),
        "ok": r.ok,
        "latency_ms": r.latency_ms,
        "status_code": r.status_code,
        "error": r.error,
        "maintenance": r.maintenance,
    }


def incident_to_wire(i: Incident) -> dict[str, Any]:
    duration = None
    if i.resolved_at is not None:
        duration = round((i.resolved_at - i.opened_at).total_seconds(), 3)
    return {
        "id": i.id,
        "monitor_id": i.monitor_id,
        "cause": i.cause,
        "opened_at": iso(i.opened_at),
        "acked_at": iso(i.acked_at),
        "acked_by": i.acked_by,
        "resolved_at": iso(i.resolved_at),
        "resolved_by": i.resolved_by,
        "duration_s": duration,
        "state": "resolved" if i.resolved_at is not None else ("acknowledged" if i.acked_at else "open"),
        "parent_id": i.parent_id,
        "notified": i.notified,
    }


def window_to_wire(w: MaintenanceWindow) -> dict[str, Any]:
    return {
        "id": w.id,
        "name": w.name,
        "description": w.description,
        "starts_at": iso(w.starts_at),
        "ends_at": iso(w.ends_at),
        "all_monitors": w.all_monitors,
        "monitors": w.monitors,
        "version": w.version,
        "created_at": iso(w.created_at),
        "updated_at": iso(w.updated_at),
    }

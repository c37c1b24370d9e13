"""AUDIT_LIST (800): the tenant's audit trail, newest first, for admins.

Rows are written by the request context in the same transaction as the change
they record (``app.context``); this module only reads them. Rows never hold
secrets: they name the package, the target id and the outcome, and for some
packages (alert channels) ``details``, the request with every secret masked.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlmodel import col

from app.client_time import parse_time
from app.context import Context
from app.models.audit import AuditEntry
from app.models.base import iso
from app.protocol import PkgID, Request
from app.routing import PackageRouter, obj
from app.storage.pagination import PAGE_SCHEMA, Page, paginate

router = PackageRouter()

_TIME = {"type": "string", "minLength": 10, "maxLength": 40}


def audit_json(row: AuditEntry) -> dict[str, Any]:
    return {
        "id": row.id,
        "ts": iso(row.ts),
        "actor": row.actor,
        "action": row.action,
        "pkg_id": row.pkg_id,
        "target_id": row.target_id,
        "req_id": row.req_id,
        "status_code": row.status_code,
        "client_addr": row.client_addr,
        "details": row.details,
    }


@router.package(
    PkgID.AUDIT_LIST,
    schema=obj(
        {
            **PAGE_SCHEMA,
            "actor": {"type": "string", "minLength": 1, "maxLength": 200},
            "action": {"type": "string", "minLength": 1, "maxLength": 64},
            "pkg_id": {"type": "integer", "minimum": 1, "maximum": 65535},
            "target_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "req_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "status_code": {"type": "integer", "minimum": 0, "maximum": 65535},
            "failed": {"type": "boolean"},
            "since": _TIME,
            "until": _TIME,
        }
    ),
    response_example=[
        {
            "id": 41,
            "ts": "2026-11-22T10:00:00.000Z",
            "actor": "user:alice",
            "action": "CHANNEL_CREATE",
            "pkg_id": 400,
            "target_id": "7",
            "req_id": "3f0c7a8e-3c1b-4a47-9d0e-0d5d0c3b9a11",
            "status_code": 0,
            "client_addr": "10.0.0.5",
            "details": {
                "name": "ops webhook",
                "kind": "webhook",
                "config": {"url": "https://hooks.example.com/***", "secret": "***"},
            },
        }
    ],
)
async def audit_list(req: Request, ctx: Context) -> Page:
    """This tenant's audit rows, newest first; filter by actor, action, pkg_id, target, req_id,
    outcome (``status_code`` or ``failed``) and time (``since`` inclusive, ``until`` exclusive)."""
    data = req.data
    stmt = select(AuditEntry).where(col(AuditEntry.tenant_id) == ctx.tenant_id)
    for key in ("actor", "action", "pkg_id", "target_id", "req_id", "status_code"):
        if key in data:
            stmt = stmt.where(getattr(AuditEntry, key) == data[key])
    if "failed" in data:
        code = col(AuditEntry.status_code)
        stmt = stmt.where(code != 0 if data["failed"] else code == 0)
    if "since" in data:
        stmt = stmt.where(col(AuditEntry.ts) >= parse_time(data["since"], "since"))
    if "until" in data:
        stmt = stmt.where(col(AuditEntry.ts) < parse_time(data["until"], "until"))
    stmt = stmt.order_by(col(AuditEntry.id).desc())
    async with ctx.services.db.session() as s:
        rows, meta = await paginate(s, stmt, data)
    return Page([audit_json(r) for r in rows], meta)

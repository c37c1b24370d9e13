from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index
from sqlmodel import Field, SQLModel

from app.models.base import utcnow


class AuditEntry(SQLModel, table=True):
    """One mutating request (or login / token event). Never holds secrets: ``details``
    is what the client asked for, with every secret masked by the handler."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_tenant_id_desc", "tenant_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    ts: datetime = Field(default_factory=utcnow)
    tenant_id: int | None = Field(default=None, index=False)
    #: "user:<username>" or "token:<name>"
    actor: str = Field(max_length=200)
    action: str = Field(max_length=64)
    pkg_id: int | None = None
    target_id: str | None = Field(default=None, max_length=64)
    req_id: str | None = Field(default=None, max_length=64)
    status_code: int = 0
    client_addr: str | None = Field(default=None, max_length=64)
    details: dict[str, Any] | None = Field(default=None, sa_type=JSON)

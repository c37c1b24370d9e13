"""One-off maintenance windows: no incidents or alerts for covered monitors."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index
from sqlmodel import Field, SQLModel

from app.models.base import utcnow


class MaintenanceWindow(SQLModel, table=True):
    __tablename__ = "maintenance_windows"
    __table_args__ = (
        # "Which windows are active now for this tenant" and MAINTENANCE_LIST.
        Index("ix_maintenance_tenant_ends", "tenant_id", "ends_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE")
    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=2000)
    starts_at: datetime
    ends_at: datetime
    #: True: every monitor of the tenant; else only ``monitors``.
    all_monitors: bool = False
    monitors: list[int] = Field(default_factory=list, sa_type=JSON)
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

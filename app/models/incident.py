"""Incidents: opened when a monitor goes down, resolved when it comes back."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from app.models.base import utcnow


class Incident(SQLModel, table=True):
    __tablename__ = "incidents"
    __table_args__ = (
        # INCIDENT_LIST: newest first per tenant.
        Index("ix_incidents_tenant_opened", "tenant_id", "opened_at", "id"),
        Index("ix_incidents_monitor", "monitor_id", "opened_at"),
        # At most one open incident per monitor, enforced by the database so two
        # instances can never open two.
        Index(
            "uq_incidents_open_per_monitor",
            "monitor_id",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
            sqlite_where=text("resolved_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE")
    monitor_id: int = Field(foreign_key="monitors.id", ondelete="CASCADE")
    #: The failing check's error when the incident opened.
    cause: str | None = Field(default=None, max_length=300)
    opened_at: datetime = Field(default_factory=utcnow)
    acked_at: datetime | None = None
    acked_by: str | None = Field(default=None, max_length=200)
    resolved_at: datetime | None = None
    #: "monitor" when the monitor came back up, else the actor who resolved it.
    resolved_by: str | None = Field(default=None, max_length=200)
    #: The incident of a monitor this one depends on (or of its covering group) that was
    #: down at the same time: this incident is part of that outage and alerted with it.
    parent_id: int | None = Field(default=None, index=True)
    #: False while the incident has not alerted on its own (held or attached to a parent);
    #: its recovery then alerts nobody either.
    notified: bool = True

"""Public status pages: a page, the monitors it shows (a lookup table kept in step
with its sections) and the short notices editors post on it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index
from sqlmodel import Field, SQLModel

from app.models.base import utcnow


class StatusPage(SQLModel, table=True):
    __tablename__ = "status_pages"
    __table_args__ = (Index("ix_status_pages_tenant_id", "tenant_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE")
    #: Unique across the server: it is the page's public address (/status/<slug>).
    slug: str = Field(max_length=64, unique=True)
    title: str = Field(max_length=200)
    description: str = Field(default="", max_length=2000)
    logo_url: str | None = Field(default=None, max_length=2048)
    footer: str = Field(default="", max_length=500)
    #: True: anyone may read the page; False: tenant members only (anonymous: 404).
    public: bool = False
    #: Uptime window shown next to each monitor: 24h, 7d or 30d.
    uptime_window: str = Field(default="24h", max_length=8)
    show_latency: bool = False
    #: Ordered sections: [{"title": str, "monitors": [monitor ids in order]}].
    sections: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class StatusPageMonitor(SQLModel, table=True):
    """Which monitors a page shows: rewritten with the page's sections, read when a
    monitor changes state (which page topics to tell) and by badges."""

    __tablename__ = "status_page_monitors"
    __table_args__ = (Index("ix_status_page_monitors_monitor", "monitor_id"),)

    page_id: int = Field(foreign_key="status_pages.id", ondelete="CASCADE", primary_key=True)
    monitor_id: int = Field(foreign_key="monitors.id", ondelete="CASCADE", primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE")


class StatusPost(SQLModel, table=True):
    """A notice on a page (incident report, announcement), active until resolved."""

    __tablename__ = "status_posts"
    __table_args__ = (Index("ix_status_posts_page", "page_id", "created_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    page_id: int = Field(foreign_key="status_pages.id", ondelete="CASCADE")
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE")
    title: str = Field(max_length=200)
    body: str = Field(default="", max_length=5000)
    #: "text" (shown as written) or "markdown" (limited CommonMark, no HTML).
    format: str = Field(default="text", max_length=16)
    #: "info", "minor", "major" or "critical".
    severity: str = Field(default="info", max_length=16)
    created_by: str | None = Field(default=None, max_length=200)
    resolved_at: datetime | None = None
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

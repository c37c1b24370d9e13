"""Alert channels: where a tenant's alerts go (webhook, Slack, Discord, email).

``config`` holds the kind's settings including its secrets (signing secret,
SMTP password, webhook URLs that embed tokens); the wire form in
:mod:`app.alerting.channels` masks them, and nothing else reads them but the
senders.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import utcnow


class Channel(SQLModel, table=True):
    __tablename__ = "channels"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_channel_tenant_name"),
        # CHANNEL_LIST: a tenant's channels in id order.
        Index("ix_channels_tenant_id", "tenant_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE")
    name: str = Field(max_length=200)
    kind: str = Field(max_length=16)
    config: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    #: Monitor states that alert through this channel.
    on: list[str] = Field(default_factory=lambda: ["down", "up"], sa_type=JSON)
    #: Minutes between "still down" reminders; None = no reminders.
    remind_every: int | None = None
    enabled: bool = True
    #: Message templates: ``{"subject": …, "body": …}`` (Jinja2, sandboxed); None = the defaults.
    template: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    #: Notification schedule: ``{"timezone", "windows": [{"days", "start", "end"}], "critical"}``;
    #: alerts inside a window are held until it ends (critical monitors pass). None = always.
    quiet_hours: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    #: Deliveries that ended failed in a row (permanent error or retries spent);
    #: a success resets it.
    failure_streak: int = 0
    #: Set when ``failure_streak`` reaches the flag threshold; cleared by a
    #: success or by CHANNEL_UPDATE. A flagged channel still gets deliveries.
    flagged_at: datetime | None = None
    flagged_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

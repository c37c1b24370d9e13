"""The alert outbox: one row per (state change, channel), and every attempt to send it.

A delivery is inserted in the same transaction as the state change it
announces (``app.alerting.outbox``), so a committed change always has its
deliveries and a rolled-back one never does. It carries a snapshot of what to
say (monitor name, states, reason, time), so the message is right even if the
monitor is renamed or deleted before the send.

Status flow: ``pending`` → ``sending`` (claimed under a lease) → ``delivered``
| ``failed``, or back to ``pending`` with a later ``next_attempt_at`` after a
transient failure; ``cancelled`` when the channel was disabled before the send.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer
from sqlmodel import Field, SQLModel

from app.models.base import utcnow

STATUSES = ("pending", "sending", "delivered", "failed", "cancelled")


class Delivery(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (
        # The workers' claim: due pending rows and expired leases, oldest first.
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        # DELIVERY_LIST: newest first per tenant, optionally by channel, monitor or status.
        Index("ix_deliveries_tenant_id", "tenant_id", "id"),
        Index("ix_deliveries_channel_id", "channel_id", "id"),
        Index("ix_deliveries_tenant_monitor", "tenant_id", "monitor_id", "id"),
        Index("ix_deliveries_tenant_status", "tenant_id", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE")
    channel_id: int = Field(foreign_key="channels.id", ondelete="CASCADE")
    #: Kept after the monitor is deleted (the log outlives it); no foreign key.
    monitor_id: int | None = None
    #: The incident the alert is about (PagerDuty's dedup key); no foreign key either.
    incident_id: int | None = None
    #: One delivery per (monitor state change, channel) and per reminder, enforced
    #: by the database: "s:<monitor>:<state_seq>:<channel>" / "r:…:<n>".
    dedupe_key: str = Field(max_length=120, unique=True)
    #: "state" | "reminder" | "test" | "ack" (an incident acknowledged in Watchpost)
    kind: str = Field(default="state", max_length=16)
    # --- what to say (snapshot at the state change)
    monitor_name: str = Field(max_length=200)
    state: str = Field(max_length=16)
    previous_state: str | None = Field(default=None, max_length=16)
    reason: str | None = Field(default=None, max_length=500)
    event_at: datetime = Field(default_factory=utcnow)
    # --- progress
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = None
    last_error: str | None = Field(default=None, max_length=500)
    last_status_code: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class DeliveryAttempt(SQLModel, table=True):
    """One try at sending a delivery: when, how long, what the receiver said."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_delivery", "delivery_id", "id"),)

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    )
    delivery_id: int = Field(
        sa_column=Column(Integer, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False)
    )
    attempt: int
    started_at: datetime = Field(default_factory=utcnow)
    duration_ms: float = 0.0
    ok: bool = False
    permanent: bool = False
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=500)
    #: The instance that made the attempt (its worker id).
    worker: str | None = Field(default=None, max_length=64)

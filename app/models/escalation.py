"""Escalation policies and the per-incident escalation schedule.

A policy says who hears about an incident and when: ``steps`` is a list of
``{"after": minutes, "channels": [ids]}`` (step 0 usually ``after: 0``, "at
once"), ``repeat_every`` minutes re-notifies the last step's channels until the
incident is acknowledged or resolved. A monitor names its policy
(``escalation_policy``) or falls back to its tenant's default policy.

:class:`IncidentEscalation` is the durable schedule of one incident: the next
step to fire and when. Every instance scans it (``app.alerting.escalation``),
claiming due rows with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, and a step's
deliveries are inserted in the same transaction that moves the row on, so a
step is sent once across restarts and instances.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import utcnow


class EscalationPolicy(SQLModel, table=True):
    __tablename__ = "escalation_policies"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_escalation_policy_tenant_name"),
        # ESCALATION_LIST, and the tenant's default policy.
        Index("ix_escalation_policies_tenant_id", "tenant_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE")
    name: str = Field(max_length=200)
    #: [{"after": minutes (number, may be fractional), "channels": [channel ids]}], ``after`` ascending.
    steps: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    #: Minutes between repeats of the last step until acknowledged or resolved; None = no repeats.
    repeat_every: float | None = None
    #: Used by every monitor of the tenant that names no policy of its own (one per tenant).
    is_default: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class IncidentEscalation(SQLModel, table=True):
    """The alerting schedule of one incident: a held first alert, then escalation steps."""

    __tablename__ = "incident_escalations"
    __table_args__ = (
        # The scanners' claim: rows that are still running, by due time.
        Index("ix_incident_escalations_due", "stopped_at", "due_at"),
    )

    incident_id: int = Field(
        sa_column=Column(Integer, ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True)
    )
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE")
    monitor_id: int
    #: The policy the steps were copied from (None: only a held alert, no policy).
    policy_id: int | None = None
    #: Copy of the policy's steps and repeat when the schedule started.
    steps: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    repeat_every: float | None = None
    #: True while the monitor's "down" alert waits to see whether a parent covers it.
    held: bool = False
    #: How many steps (then repeats) have been sent; the next one to send.
    step: int = 0
    #: When the next step (or the held alert) is due; None = nothing more to send.
    due_at: datetime | None = None
    #: Channels this schedule has notified so far (they also hear the recovery).
    notified: list[int] = Field(default_factory=list, sa_type=JSON)
    stopped_at: datetime | None = None
    #: "acknowledged", "resolved", "covered", "completed" or "policy deleted".
    stop_reason: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

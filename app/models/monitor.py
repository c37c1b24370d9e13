"""A monitored target: its definition (wire fields), its live state and its
collector bookkeeping (schedule and lease) in one row, so claiming, checking
and recording a state change each touch exactly one row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import utcnow


class Monitor(SQLModel, table=True):
    __tablename__ = "monitors"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_monitor_tenant_name"),
        # MONITOR_LIST / STATUS_SUMMARY: a tenant's monitors in id order, optionally by state or kind.
        Index("ix_monitors_tenant_id", "tenant_id", "id"),
        Index("ix_monitors_tenant_state", "tenant_id", "state"),
        # The collector's claim: enabled monitors whose next_check_at has passed.
        Index("ix_monitors_due", "enabled", "next_check_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE")
    name: str = Field(max_length=200)
    kind: str = Field(max_length=16)
    # --- http
    url: str | None = Field(default=None, max_length=2048)
    method: str = Field(default="GET", max_length=10)
    #: Wire form: codes and "lo-hi" ranges, e.g. [200, "300-399"].
    expected_status: list[Any] = Field(default_factory=lambda: ["200-399"], sa_type=JSON)
    keyword: str | None = Field(default=None, max_length=500)
    verify_tls: bool = True
    follow_redirects: bool = True
    #: Most redirects followed (None: 10); only with ``follow_redirects``.
    max_redirects: int | None = None
    #: Request headers {name: value}; values of secret-looking names are write-only.
    headers: dict[str, str] | None = Field(default=None, sa_type=JSON)
    #: Request body sent as-is (POST/PUT/PATCH).
    body: str | None = Field(default=None, max_length=65536)
    #: {"type": "basic", "username", "password"} or {"type": "bearer", "token"}; secrets write-only.
    auth: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    #: Condition texts (app.monitoring.conditions), checked after expected_status and keyword.
    conditions: list[str] | None = Field(default=None, sa_type=JSON)
    #: A check slower than this (ms) leaves the monitor ``degraded`` instead of ``up``.
    degraded_latency_ms: float | None = None
    #: Days before certificate expiry that alert, once each (None: 21, 14, 7; []: never).
    cert_alert_days: list[int] | None = Field(default=None, sa_type=JSON)
    # --- tcp
    host: str | None = Field(default=None, max_length=255)
    port: int | None = None
    # --- dns, postgres, redis, websocket, ping: the kind's own fields (app.monitoring.kinds);
    #: a postgres/redis connection string is kept here and shown masked.
    options: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    # --- schedule and retries
    interval: int = 60
    timeout: float = 10.0
    fail_threshold: int = 1
    recover_threshold: int = 1
    # --- push
    #: Seconds a push may be late before the monitor counts as failed.
    grace: int = 30
    push_token: str | None = Field(default=None, max_length=64, unique=True)
    # --- group
    members: list[int] = Field(default_factory=list, sa_type=JSON)
    min_up: int = 1
    #: A group whose members' alerts it covers: while the group is down, its members'
    #: incidents are attached to the group's incident instead of alerting on their own.
    covers_members: bool = False
    # --- alert routing
    #: Monitors this one depends on (same tenant): while one of them is down, this
    #: monitor's incidents are attached to the parent's incident and do not alert.
    depends_on: list[int] = Field(default_factory=list, sa_type=JSON)
    #: Escalation policy id; None = the tenant's default policy (if any).
    escalation_policy: int | None = None
    # --- where it is checked from (docs/probes.md)
    #: Location names: "local" (the server's own collector) and/or probe locations.
    locations: list[str] = Field(default_factory=lambda: ["local"], sa_type=JSON)
    #: How many locations must see it fail before the monitor is down.
    quorum: int = 1
    # --- descriptive
    tags: list[str] = Field(default_factory=list, sa_type=JSON)
    channels: list[int] = Field(default_factory=list, sa_type=JSON)
    description: str = Field(default="", max_length=2000)
    #: False while paused (PAUSE/RESUME); the collector skips disabled monitors.
    enabled: bool = True
    #: Optimistic lock for definition edits (UPDATE); the collector never bumps it.
    version: int = 1
    # --- live state (written by the collector, pushes and PAUSE/RESUME)
    state: str = Field(default="pending", max_length=16)
    state_changed_at: datetime = Field(default_factory=utcnow)
    #: Bumped by every state write; the compare-and-set key that keeps two
    #: instances from both recording one transition.
    state_seq: int = 0
    fail_streak: int = 0
    ok_streak: int = 0
    last_checked_at: datetime | None = None
    last_latency_ms: float | None = None
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=300)
    cert_expires_at: datetime | None = None
    #: Issuer (RFC 4514) of the certificate the last HTTPS check saw.
    cert_issuer: str | None = Field(default=None, max_length=300)
    #: The smallest cert_alert_days threshold already alerted for ``cert_expires_at``.
    cert_alerted: int | None = None
    #: 24h uptime as of ``uptime_24h_at``, refreshed by the housekeeping pass so that
    #: STATUS_SUMMARY reads one row per monitor and nothing else (STATS_UPTIME is exact).
    uptime_24h: float | None = None
    uptime_24h_at: datetime | None = None
    # --- collector bookkeeping
    next_check_at: datetime = Field(default_factory=utcnow)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = None
    #: Hours before this instant are read from hourly rollups, later ones from raw rows.
    rolled_until: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

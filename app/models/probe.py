"""Probes and locations (docs/probes.md): where checks run besides the server's own
collector, each location's latest result per monitor, and its check history.

``local`` is the server's own collector: never a :class:`Location` row, always valid
in a monitor's ``locations``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import utcnow
from app.models.check import BigId

#: The location name of the server's own collector.
LOCAL = "local"
#: What a location name may be (JSON Schema ``pattern``): lower-case letters, digits,
#: ``.``, ``_`` and ``-``, starting with a letter or digit, at most 64 characters.
LOCATION_PATTERN = "^[a-z0-9][a-z0-9._-]{0,63}$"


class Location(SQLModel, table=True):
    """A named place probes check from, per tenant; created with its first probe token."""

    __tablename__ = "locations"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_location_tenant_name"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class Probe(SQLModel, table=True):
    """One probe: the live bookkeeping of the program holding a ``probe`` API token
    (one row per token; the latest connection of that token writes it)."""

    __tablename__ = "probes"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", index=True, ondelete="CASCADE")
    location_id: int = Field(foreign_key="locations.id", index=True, ondelete="CASCADE")
    token_id: int = Field(foreign_key="api_tokens.id", unique=True, ondelete="CASCADE")
    #: The probe program's own version string (PROBE_HELLO).
    version: str = Field(default="", max_length=64)
    #: Server instance holding its socket (None: not connected).
    instance: str | None = Field(default=None, max_length=64)
    connected: bool = False
    connected_since: datetime | None = None
    disconnected_at: datetime | None = None
    last_seen_at: datetime | None = None
    last_report_at: datetime | None = None
    #: What the probe said in its last heartbeat: results waiting to be sent and how late
    #: its checks start (ms behind their due time).
    buffered: int = 0
    lag_ms: float | None = None
    results_total: int = 0


class LocationResult(SQLModel, table=True):
    """The latest result of one monitor at one location (``local`` included when the
    monitor has more than the default location)."""

    __tablename__ = "location_results"

    monitor_id: int = Field(
        sa_column=Column(Integer, ForeignKey("monitors.id", ondelete="CASCADE"), primary_key=True)
    )
    location: str = Field(primary_key=True, max_length=64)
    tenant_id: int = Field(index=True)
    #: "up" or "down" as the location last saw it.
    state: str = Field(max_length=16)
    checked_at: datetime
    latency_ms: float | None = None
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=300)
    received_at: datetime = Field(default_factory=utcnow)


class LocationCheck(SQLModel, table=True):
    """Check history per location (kept for RETENTION_DAYS like check_results).

    ``key`` is the probe's idempotency key: a result sent twice (a resend after a
    reconnect, a replay after a restart) is stored once.
    """

    __tablename__ = "location_checks"
    __table_args__ = (
        Index("ix_location_checks_monitor_ts", "monitor_id", "location", "ts"),
        Index("ix_location_checks_ts", "ts"),
        UniqueConstraint("tenant_id", "location", "key", name="uq_location_check_key"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    monitor_id: int = Field(
        sa_column=Column(Integer, ForeignKey("monitors.id", ondelete="CASCADE"), nullable=False)
    )
    tenant_id: int
    location: str = Field(max_length=64)
    ts: datetime
    ok: bool
    latency_ms: float | None = None
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=300)
    #: The probe's idempotency key (None for the local collector's rows).
    key: str | None = Field(default=None, max_length=64)

"""Check results (raw, kept for RETENTION_DAYS) and their hourly and daily rollups."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer
from sqlmodel import Field, SQLModel

from app.models.base import utcnow

#: 64-bit ids on PostgreSQL; SQLite only auto-increments an INTEGER primary key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class CheckResult(SQLModel, table=True):
    __tablename__ = "check_results"
    __table_args__ = (
        # CHECK_HISTORY keyset (ts, id) and every per-monitor window query.
        Index("ix_check_results_monitor_ts", "monitor_id", "ts", "id"),
        # Retention deletes and the rollup scan by time.
        Index("ix_check_results_ts", "ts"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True))
    monitor_id: int = Field(
        sa_column=Column(Integer, ForeignKey("monitors.id", ondelete="CASCADE"), nullable=False)
    )
    tenant_id: int
    ts: datetime = Field(default_factory=utcnow)
    ok: bool
    latency_ms: float | None = None
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=300)
    #: Taken inside a maintenance window: excluded from uptime.
    maintenance: bool = False


class _RollupColumns(SQLModel):
    """Aggregates of one monitor over one period. Uptime = up / (total - maintenance)."""

    monitor_id: int = Field(primary_key=True, foreign_key="monitors.id", ondelete="CASCADE")
    period: datetime = Field(primary_key=True)
    tenant_id: int
    total: int = 0
    up: int = 0
    maintenance: int = 0
    latency_count: int = 0
    latency_sum: float = 0.0
    latency_min: float | None = None
    latency_max: float | None = None
    #: Exact within the period; across periods the stats layer takes a count-weighted mean.
    latency_p50: float | None = None
    latency_p95: float | None = None


class HourlyRollup(_RollupColumns, table=True):
    __tablename__ = "check_rollups_hourly"


class DailyRollup(_RollupColumns, table=True):
    __tablename__ = "check_rollups_daily"

"""Shared column helpers. Times are timezone-aware UTC (SQLModel's UTCDateTime
stores them as such on SQLite and PostgreSQL) and sent as ISO 8601 with 'Z'."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # stored naive, in UTC (the common case: no conversion)
        return value.isoformat(timespec="milliseconds") + "Z"
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"

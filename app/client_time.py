"""Times sent by clients: one parser, one range, used by every package that takes a time.

``datetime.fromisoformat`` accepts years 1-9999 with any offset, but the
conversion to UTC overflows at both ends (``0001-01-01T00:00:00+01:00``,
``9999-12-31T23:59:59-01:00``), and the databases and cursors have their own
limits. Accepting only 1970-9999 in UTC keeps every accepted time storable,
comparable and encodable as a cursor, and leaves no real use out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.errors import InvalidData

MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
#: Microseconds from MIN_TIME to MAX_TIME: the largest time part of a cursor.
MAX_MICROS = (MAX_TIME - MIN_TIME) // timedelta(microseconds=1)


def in_range(value: datetime) -> bool:
    return MIN_TIME <= value <= MAX_TIME


def parse_time(value: str, field: str) -> datetime:
    """An aware UTC datetime from ISO 8601 text (no offset means UTC), or InvalidData naming ``field``."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidData(
            f"{field} must be an ISO 8601 time such as 2026-11-22T10:00:00Z",
            errors=[{"path": field, "msg": "not an ISO 8601 time"}],
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:  # the offset pushes it past year 1 or 9999
        parsed = MIN_TIME - timedelta(days=1)
    if not in_range(parsed):
        raise InvalidData(
            f"{field} must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z (in UTC)",
            errors=[{"path": field, "msg": "out of range"}],
        )
    return parsed

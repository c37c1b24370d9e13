"""Certificate expiry alerts: which threshold, if any, a check's certificate crosses now.

Every HTTPS check records the earliest expiry of the chain the server sent
(``cert_expires_at``) and its issuer. A monitor alerts ``cert_alert_days``
(default 21, 14, 7) days before that expiry, once per threshold: the recorder
keeps the smallest threshold already alerted in ``cert_alerted`` and
:func:`due_threshold` only answers a tighter one. A certificate first seen
with 10 days left alerts the 14-day threshold (not 21 as well), then the 7-day
one when it gets there. A renewed certificate (a later expiry) starts over.

These alerts are their own kind ("certificate"), not a state: the monitor
stays up. Pure functions, no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from app.monitoring.request import DEFAULT_CERT_ALERT_DAYS

#: A later expiry by more than this is a renewed certificate (thresholds start over).
RENEWED_AFTER = dt.timedelta(hours=1)


def thresholds(configured: Sequence[int] | None) -> tuple[int, ...]:
    """The monitor's thresholds, largest first (None: the defaults; []: no alerts)."""
    days = DEFAULT_CERT_ALERT_DAYS if configured is None else configured
    return tuple(sorted({int(d) for d in days}, reverse=True))


def due_threshold(days_left: int, configured: Sequence[int] | None, alerted: int | None) -> int | None:
    """The threshold to alert now, or None: the tightest one ``days_left`` has reached,
    unless that one (or a tighter one) was already alerted for this certificate."""
    crossed = [t for t in thresholds(configured) if days_left <= t]
    if not crossed:
        return None
    tightest = min(crossed)
    if alerted is not None and alerted <= tightest:
        return None
    return tightest


def renewed(stored: dt.datetime | None, seen: dt.datetime) -> bool:
    """True when ``seen`` is a different (later) certificate than the stored expiry."""
    if stored is None:
        return True
    return _utc(seen) - _utc(stored) > RENEWED_AFTER


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def describe(days_left: int, expires_at: dt.datetime, threshold: int, issuer: str | None) -> str:
    """The alert's reason line."""
    when = _utc(expires_at).strftime("%Y-%m-%d %H:%M UTC")
    if days_left < 0:
        head = f"TLS certificate expired {-days_left} day{'s' if days_left != -1 else ''} ago ({when})"
    else:
        head = f"TLS certificate expires in {days_left} day{'s' if days_left != 1 else ''} ({when})"
    tail = f"; issuer {issuer}" if issuer else ""
    return f"{head}, {threshold}-day threshold{tail}"

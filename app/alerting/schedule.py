"""Quiet hours: when a channel holds its alerts.

A channel's ``quiet_hours``::

    {"timezone": "Europe/Berlin",
     "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00", "end": "07:00"},
                 {"days": ["sat", "sun"], "start": "00:00", "end": "24:00"}]}

A window starts on each of its ``days`` (all days when left out) at ``start``
local time and ends at ``end``; an ``end`` at or before ``start`` ends on the
next day. Times are the channel's ``timezone`` (default: the tenant's, else
UTC), daylight saving time included.

An alert that falls inside a window is *held*: its delivery stays ``pending``
with ``next_attempt_at`` at the end of the window and ``last_error`` saying so,
visible in DELIVERY_LIST, and is sent when the window ends (with the message of
the moment it happened). Alerts about critical monitors (tagged ``critical``)
are never held. Nothing is dropped.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from typing import Any

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = "^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"

FIELDS: dict[str, Any] = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["windows"],
    "properties": {
        "timezone": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
        "windows": {
            "type": "array",
            "minItems": 1,
            "maxItems": 14,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["start", "end"],
                "properties": {
                    "days": {
                        "type": "array",
                        "items": {"enum": list(DAYS)},
                        "uniqueItems": True,
                        "minItems": 1,
                        "maxItems": 7,
                    },
                    "start": {"type": "string", "maxLength": 5, "pattern": _TIME},
                    "end": {"type": "string", "maxLength": 5, "pattern": _TIME},
                },
            },
        },
    },
}


def valid_timezone(name: str) -> bool:
    if not re.fullmatch(r"[A-Za-z0-9_+\-/]{1,64}", name):
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _minutes(value: str) -> int:
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def quiet_until(
    quiet_hours: Mapping[str, Any] | None, now: dt.datetime, tenant_timezone: str | None = None
) -> dt.datetime | None:
    """The end (UTC) of the quiet window ``now`` falls in, or None when alerts may go out.

    Overlapping or back-to-back windows are followed to the end of the last one."""
    if not quiet_hours or not quiet_hours.get("windows"):
        return None
    name = quiet_hours.get("timezone") or tenant_timezone or "UTC"
    try:
        tz: dt.tzinfo = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = dt.UTC
    until: dt.datetime | None = None
    probe = now
    for _ in range(16):  # at most one step per window (14) plus slack
        end = _window_end(quiet_hours["windows"], probe, tz)
        if end is None or (until is not None and end <= until):
            break
        until = end
        probe = end
    return until


def _window_end(windows: Any, at: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
    local = at.astimezone(tz)
    best: dt.datetime | None = None
    for window in windows:
        days = window.get("days") or list(DAYS)
        start, end = _minutes(window["start"]), _minutes(window["end"])
        length = end - start if end > start else end + 24 * 60 - start
        # A window that started today or yesterday (it may cross midnight).
        for back in (0, 1):
            day = local.date() - dt.timedelta(days=back)
            if DAYS[day.weekday()] not in days:
                continue
            opens = dt.datetime.combine(day, dt.time(), tzinfo=tz) + dt.timedelta(minutes=start)
            # Wall-clock arithmetic, then back to a real instant (DST-safe enough
            # for quiet hours: a window keeps its local start and end times).
            closes = opens + dt.timedelta(minutes=length)
            opens_utc = opens.astimezone(dt.UTC)
            closes_utc = closes.replace(tzinfo=None).replace(tzinfo=tz).astimezone(dt.UTC)
            if opens_utc <= at < closes_utc and (best is None or closes_utc > best):
                best = closes_utc
    return best

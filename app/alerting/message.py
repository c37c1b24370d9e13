"""What an alert says, independent of where it goes.

An :class:`Alert` is built by the delivery worker from a delivery row (or by
CHANNEL_TEST) and handed to a sender; the sender picks one of the renderings
below. Everything here is pure: no I/O, no clock reads.

Alerts are plain text and link-free on purpose: chat clients unfurl links and
mail filters distrust them, and a monitor name is user input that must not be
able to smuggle markup, mentions or extra mail headers into a message.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Literal

AlertKind = Literal["state", "reminder", "test", "certificate", "ack"]

# Control characters (including CR/LF) would let a monitor name break a mail
# header or fake extra lines in a chat message.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

# Discord rejects `content` longer than this.
DISCORD_MAX_CONTENT = 2000


@dataclass(frozen=True, slots=True)
class Alert:
    """One message about one monitor; ``kind`` says whether it is a change, a reminder or a test."""

    monitor_name: str
    state: str
    at: dt.datetime
    kind: AlertKind = "state"
    monitor_id: int | None = None
    previous_state: str | None = None
    reason: str | None = None
    # Stable per delivery (retries reuse it), so receivers can drop duplicates.
    delivery_id: int | None = None
    # --- context for templates and PagerDuty (None when unknown)
    incident_id: int | None = None
    incident_opened_at: dt.datetime | None = None
    tenant_id: int | None = None
    tenant_name: str | None = None
    #: IANA name of the tenant's timezone (templates show times in it).
    timezone: str | None = None
    critical: bool = False
    dashboard_url: str | None = None
    # --- the channel's rendered template, when it has one (else the defaults below)
    custom_subject: str | None = None
    custom_text: str | None = None


def clean(value: str, limit: int = 200) -> str:
    """One line of user text with control characters folded to spaces, cut to ``limit`` characters."""
    text = _CONTROL.sub(" ", value).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_time(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def subject(alert: Alert) -> str:
    """A one-line headline: mail subject and first line of every chat message."""
    if alert.custom_subject is not None:
        return clean(alert.custom_subject)
    return default_subject(alert)


def text(alert: Alert) -> str:
    """The plain-text body shared by every channel kind (the channel's template, if any)."""
    if alert.custom_text is not None:
        return alert.custom_text
    if alert.custom_subject is not None:
        # A custom subject heads the default body.
        return "\n".join([subject(alert), *default_text(alert).split("\n")[1:]])
    return default_text(alert)


def default_subject(alert: Alert) -> str:
    """The built-in headline."""
    name = clean(alert.monitor_name, 120)
    state = alert.state.upper()
    if alert.kind == "test":
        return f"[Watchpost] Test message for {name}"
    if alert.kind == "reminder":
        return f"[Watchpost] {name} is still {state}"
    if alert.kind == "certificate":
        return f"[Watchpost] {name}: TLS certificate expires soon"
    if alert.kind == "ack":
        return f"[Watchpost] {name}: incident acknowledged"
    return f"[Watchpost] {name} is {state}"


def default_text(alert: Alert) -> str:
    """The built-in plain-text body: the headline, then one line per fact."""
    lines = [default_subject(alert)]
    if alert.kind == "test":
        lines.append("This is a test message: the channel works.")
    lines.append(f"Monitor: {clean(alert.monitor_name)}")
    if alert.kind == "certificate":
        lines.append(f"Certificate: {clean(alert.reason or '', 500)}")
        lines.append(f"Time: {format_time(alert.at)}")
        return "\n".join(lines)
    lines.append(f"State: {alert.state}")
    if alert.previous_state:
        lines.append(f"Previous state: {alert.previous_state}")
    if alert.reason:
        lines.append(f"Reason: {clean(alert.reason, 500)}")
    lines.append(f"Time: {format_time(alert.at)}")
    return "\n".join(lines)


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """The JSON document a generic webhook receives (documented in docs/alerting.md)."""
    event = {
        "state": "monitor.state_changed",
        "reminder": "monitor.reminder",
        "test": "channel.test",
        "certificate": "monitor.certificate_expiring",
        "ack": "incident.acknowledged",
    }
    return {
        "event": event[alert.kind],
        "delivery_id": alert.delivery_id,
        "monitor": {"id": alert.monitor_id, "name": alert.monitor_name},
        "state": alert.state,
        "previous_state": alert.previous_state,
        "reason": alert.reason,
        "at": alert.at.astimezone(dt.UTC).isoformat(),
        "text": text(alert),
    }


def slack_payload(alert: Alert) -> dict[str, Any]:
    # Slack reads <...> as links and mentions and & as an entity; escaping
    # keeps a monitor name from pinging a channel.
    body = text(alert).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {"text": body}


def discord_payload(alert: Alert) -> dict[str, Any]:
    body = text(alert)
    if len(body) > DISCORD_MAX_CONTENT:
        body = body[: DISCORD_MAX_CONTENT - 1] + "…"
    # No @everyone / role / user pings, whatever the monitor is called.
    return {"content": body, "allowed_mentions": {"parse": []}}

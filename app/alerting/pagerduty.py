"""PagerDuty Events API v2: what a ``pagerduty`` channel sends for each alert.

The incident life cycle stays in step on both sides, keyed by the Watchpost
incident (``dedup_key`` = ``watchpost-incident-<id>``):

- the monitor goes down (incident opened) → ``trigger``;
- the incident is acknowledged in Watchpost (INCIDENT_ACK) → ``acknowledge``;
- the monitor comes back (incident resolved) → ``resolve``; so does resolving
  the incident by hand (INCIDENT_RESOLVE: a delivery with state ``resolved``).

Reminders and a group slipping from up to degraded (no incident) send nothing:
PagerDuty re-notifies by its own escalation rules. CHANNEL_TEST triggers a test
event and resolves it at once (its own dedup key), so the service shows that
the integration works without leaving an incident open.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from app.alerting import message
from app.alerting.message import Alert

#: PagerDuty's limit for ``payload.summary``.
SUMMARY_MAX = 1024


def dedup_key(alert: Alert) -> str:
    if alert.incident_id is not None:
        return f"watchpost-incident-{alert.incident_id}"
    # Without a known incident (a delivery queued before incidents were recorded
    # on deliveries), the downtime itself: monitor and the time it went down.
    return f"watchpost-monitor-{alert.monitor_id}-{int(alert.at.timestamp())}"


def action(alert: Alert) -> str | None:
    """``trigger``, ``acknowledge``, ``resolve``, or None when this alert sends nothing."""
    if alert.kind == "ack":
        return "acknowledge"
    if alert.kind != "state":
        return None
    if alert.state == "down":
        return "trigger"
    if alert.previous_state == "down" or alert.incident_id is not None:
        return "resolve"
    return None


def event(routing_key: str, event_action: str, key: str, alert: Alert, severity: str) -> dict[str, Any]:
    """The Events v2 body (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/)."""
    body: dict[str, Any] = {"routing_key": routing_key, "event_action": event_action, "dedup_key": key}
    if event_action != "trigger":
        return body
    details = {
        "monitor": message.clean(alert.monitor_name),
        "monitor_id": alert.monitor_id,
        "state": alert.state,
        "previous_state": alert.previous_state,
        "reason": message.clean(alert.reason, 500) if alert.reason else None,
        "incident_id": alert.incident_id,
    }
    body["payload"] = {
        "summary": message.clean(message.subject(alert), SUMMARY_MAX),
        "source": message.clean(alert.monitor_name),
        "severity": severity,
        "timestamp": alert.at.astimezone(dt.UTC).isoformat(),
        "component": message.clean(alert.monitor_name),
        "group": alert.tenant_name,
        "class": "monitor down",
        "custom_details": {**details, "text": message.text(alert)},
    }
    body["client"] = "Watchpost"
    if alert.dashboard_url:
        body["client_url"] = alert.dashboard_url
    return body

"""From a claimed delivery to the message a sender sends, and whether to send it now.

:func:`prepare` reads what the delivery row does not carry (the tenant's name
and timezone, whether the monitor is critical — tagged ``critical`` — and the
incident's opening time) in one short session, renders the channel's template
(``app.alerting.templates``) and applies its quiet hours (``app.alerting.schedule``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass

from app.alerting import schedule, templates
from app.alerting.message import Alert
from app.alerting.outbox import Claimed
from app.models.incident import Incident
from app.models.monitor import Monitor
from app.models.tenant import Tenant
from app.storage.db import Database

log = logging.getLogger("watchpost.alerting")

#: Monitors tagged with this are critical: they alert through quiet hours.
CRITICAL_TAG = "critical"


@dataclass(frozen=True, slots=True)
class Prepared:
    alert: Alert
    #: Set when the channel's quiet hours hold this delivery: send it at this time (UTC).
    held_until: dt.datetime | None = None


def dashboard_url(public_url: str) -> str | None:
    return public_url.rstrip("/") + "/" if public_url else None


def with_template(alert: Alert, template: dict | None) -> Alert:  # type: ignore[type-arg]
    """``alert`` carrying the channel's rendered subject and body; the defaults if the
    template fails at run time (logged; the channel still alerts)."""
    if not template:
        return alert
    try:
        subject, body = templates.render(template, alert)
    except templates.PartProblem as exc:
        log.warning("alert template of a channel failed (%s); sent the default message", exc)
        return alert
    return dataclasses.replace(alert, custom_subject=subject, custom_text=body)


async def prepare(db: Database, claimed: Claimed, *, public_url: str, now: dt.datetime) -> Prepared:
    d, channel = claimed.delivery, claimed.channel
    async with db.session() as s:
        tenant = await s.get(Tenant, d.tenant_id)
        monitor = await s.get(Monitor, d.monitor_id) if d.monitor_id is not None else None
        incident = await s.get(Incident, d.incident_id) if d.incident_id is not None else None
    alert = dataclasses.replace(
        claimed.alert(),
        incident_id=d.incident_id,
        incident_opened_at=incident.opened_at if incident else None,
        tenant_id=d.tenant_id,
        tenant_name=tenant.name if tenant else None,
        timezone=tenant.timezone if tenant else None,
        critical=bool(monitor and CRITICAL_TAG in (monitor.tags or [])),
        dashboard_url=dashboard_url(public_url),
    )
    alert = with_template(alert, channel.template)
    held = None
    if not alert.critical and d.kind != "test":
        held = schedule.quiet_until(channel.quiet_hours, now, alert.timezone)
    return Prepared(alert, held)

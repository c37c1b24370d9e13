"""PagerDuty V3 webhooks: acknowledgements made in PagerDuty come back to Watchpost.

``POST /hooks/pagerduty/<channel id>`` (app.http) hands the raw body and the
``X-PagerDuty-Signature`` header to :func:`receive`. The channel must be a
``pagerduty`` channel with a ``webhook_secret``; the body must carry a valid
``v1=<hex HMAC-SHA256 of the body>`` signature made with it (PagerDuty may send
several, comma-separated, while a secret is being rotated: one valid is enough).
Anything else is :data:`REFUSED`, the same answer whatever was wrong.

Events used (PagerDuty's incident key is the ``dedup_key`` Watchpost sent,
``watchpost-incident-<id>``; an incident of another tenant, or a key that is
not one of ours, is ignored):

- ``incident.acknowledged`` → :func:`app.alerting.escalation.acknowledge` with
  actor ``pagerduty:<agent name or id>``: the first acknowledgement wins and
  stops the escalation once; later ones (a replay, a second instance, a click
  in the dashboard) change nothing. No ``acknowledge`` goes back to the
  PagerDuty channel it came from (no echo); other PagerDuty channels of the
  monitor with another routing key are told as for INCIDENT_ACK.
- ``incident.resolved`` → the same acknowledgement if the incident is not yet
  acknowledged (someone in PagerDuty took it on). It is not resolved: the
  monitor decides when the incident ends, and its recovery resolves it here.
- everything else (``pagey.ping``, ``incident.triggered``, …) is accepted and
  ignored, so PagerDuty does not retry it.

An acknowledgement writes an audit row (action INCIDENT_ACK, the PagerDuty
actor, the channel and event id in ``details``) in the same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.alerting import escalation
from app.alerting.outbox import enqueue_incident_ack
from app.models.audit import AuditEntry
from app.models.channel import Channel
from app.models.incident import Incident
from app.models.monitor import Monitor
from app.protocol import PkgID
from app.storage.db import Database

#: A PagerDuty V3 webhook body is a few KiB (the incident and its references).
MAX_BODY_BYTES = 64 * 1024
#: Signatures looked at per request (PagerDuty sends one, two while a secret is rotated).
_MAX_SIGNATURES = 8
_SIGNATURE_HEADER_MAX = 2048
_INCIDENT_KEY = re.compile(r"watchpost-incident-([1-9][0-9]{0,17})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ACTOR_NAME_MAX = 150
#: Events that acknowledge the Watchpost incident.
ACK_EVENTS = ("incident.acknowledged", "incident.resolved")


@dataclass
class Outcome:
    """What the route answers: ``status`` and ``body``; ``incident`` (with its monitor's name)
    when this request acknowledged it, for the EVENT_INCIDENT broadcast."""

    status: int
    body: dict[str, Any]
    tenant_id: int | None = None
    incident: Incident | None = None
    monitor: str | None = None


#: Unknown channel, not a PagerDuty channel, no webhook secret, missing or bad signature:
#: one answer, so a caller learns nothing about which.
REFUSED = Outcome(401, {"error": "unknown webhook or invalid signature"})


def sign(secret: str, body: bytes) -> str:
    """The ``X-PagerDuty-Signature`` value PagerDuty sends for ``body``."""
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """True when one of the header's ``v1=`` signatures is ``body``'s (constant-time compare)."""
    if not header or len(header) > _SIGNATURE_HEADER_MAX:
        return False
    expected = sign(secret, body).encode()
    found = False
    for candidate in header.split(",")[:_MAX_SIGNATURES]:
        # Every candidate is compared, so the time taken does not say which one matched.
        found |= hmac.compare_digest(expected, candidate.strip().encode())
    return found


def incident_id(key: Any) -> int | None:
    """The Watchpost incident id in a PagerDuty incident key, or None if it is not one of ours."""
    if not isinstance(key, str):
        return None
    match = _INCIDENT_KEY.fullmatch(key)
    return int(match.group(1)) if match else None


def actor(agent: Any) -> str:
    """``pagerduty:<name>`` from the event's agent (its summary, else its id)."""
    name = ""
    if isinstance(agent, dict):
        for field in ("summary", "id"):
            value = agent.get(field)
            if isinstance(value, str) and value.strip():
                name = value
                break
    name = _CONTROL.sub("", name).strip()[:_ACTOR_NAME_MAX]
    return f"pagerduty:{name or 'unknown'}"


def _event(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None
    event = parsed.get("event") if isinstance(parsed, dict) else None
    return event if isinstance(event, dict) else None


async def receive(
    db: Database, channel_id: int, body: bytes, signature: str | None, client_addr: str | None
) -> Outcome:
    """Verify and apply one webhook delivery (see the module doc)."""
    async with db.session() as s:
        channel = await s.get(Channel, channel_id)
        secret = (channel.config or {}).get("webhook_secret") if channel is not None else None
        if channel is None or channel.kind != "pagerduty" or not isinstance(secret, str) or not secret:
            signature_ok("0" * 32, body, signature)  # the same work as for a real channel
            return REFUSED
        if not signature_ok(secret, body, signature):
            return REFUSED
        event = _event(body)
        if event is None:
            return Outcome(400, {"error": 'the body is not a PagerDuty V3 webhook: {"event": {...}}'})
        event_type = event.get("event_type")
        data = event.get("data")
        if event_type not in ACK_EVENTS:
            return Outcome(200, {"ignored": "event type not used by Watchpost"})
        wanted = incident_id(data.get("incident_key")) if isinstance(data, dict) else None
        incident = await s.get(Incident, wanted) if wanted is not None else None
        if incident is None or incident.tenant_id != channel.tenant_id:
            return Outcome(200, {"ignored": "not a Watchpost incident of this channel's tenant"})
        who = actor(event.get("agent"))
        if not await escalation.acknowledge(s, incident, who):
            # Already acknowledged (a replay, another instance, the dashboard first) or resolved.
            await s.rollback()
            return Outcome(200, {"incident_id": wanted, "acknowledged": False})
        await enqueue_incident_ack(s, incident, exclude=await _same_service(s, channel))
        s.add(_audit(channel, incident, who, event, client_addr))
        await s.commit()
        await s.refresh(incident)
        monitor = await s.get(Monitor, incident.monitor_id)
        name = monitor.name if monitor is not None else None
        return Outcome(
            200, {"incident_id": incident.id, "acknowledged": True}, channel.tenant_id, incident, name
        )


async def _same_service(s: AsyncSession, channel: Channel) -> list[int]:
    """The channel the ack came from and its tenant's PagerDuty channels with the same routing
    key (the same PagerDuty service): they already know."""
    rows = await s.execute(
        select(Channel).where(col(Channel.tenant_id) == channel.tenant_id, col(Channel.kind) == "pagerduty")
    )
    key = channel.config.get("routing_key")
    return [
        int(c.id or 0)
        for c in rows.scalars().all()
        if c.id == channel.id or c.config.get("routing_key") == key
    ]


def _audit(
    channel: Channel, incident: Incident, who: str, event: dict[str, Any], client_addr: str | None
) -> AuditEntry:
    event_id = event.get("id")
    return AuditEntry(
        tenant_id=channel.tenant_id,
        actor=who,
        action=PkgID.INCIDENT_ACK.name,
        pkg_id=int(PkgID.INCIDENT_ACK),
        target_id=str(incident.id),
        req_id=(_CONTROL.sub("", event_id)[:64] or None) if isinstance(event_id, str) else None,
        status_code=0,
        client_addr=client_addr[:64] if client_addr else None,
        details={
            "id": incident.id,
            "via": "pagerduty webhook",
            "channel_id": channel.id,
            "event_type": event.get("event_type"),
        },
    )

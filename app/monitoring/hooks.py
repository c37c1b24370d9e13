"""What runs inside the transaction that records a state change.

:func:`on_state_change` calls alerting directly (a fixed import of
:func:`app.alerting.escalation.on_transition`, not a registration): it
inserts outbox rows (one pending delivery per linked channel), attaches
dependents' incidents to their parent's outage, holds a dependent's alert and
starts the incident's escalation schedule, all with the same
``session``, so the state change and its alerts commit together or not at all,
and a transition that lost the compare-and-set (another instance recorded it)
alerts nobody. This is the one place monitoring depends on alerting.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.alerting.escalation import Attached, on_transition
from app.alerting.outbox import enqueue_certificate
from app.models.incident import Incident
from app.models.monitor import Monitor
from app.monitoring import certs
from app.monitoring.checks import cert_days_left
from app.monitoring.state import State


async def on_state_change(
    session: AsyncSession,
    monitor: Monitor,
    transition: tuple[State, State],
    *,
    incident: Incident | None = None,
    incident_action: str | None = None,
) -> list[Attached]:
    """Called once per recorded transition, before commit; must only add rows to ``session``.

    ``monitor`` already carries the new state. ``incident_action`` is "opened"
    (the monitor went down: alert "down") or "resolved" (it came back: alert
    "up") with the ``incident``; None for transitions that must not alert
    (into/out of maintenance or pause, pending → up on a fresh monitor).
    Raising aborts the whole recording; the collector retries on the next tick.
    Returns the dependents' incidents attached to ``incident`` (an outage opened), with
    their monitors' names, for the recorder to announce.
    """
    previous, new = transition
    return await on_transition(
        session, monitor, previous.value, new.value, incident=incident, incident_action=incident_action
    )


async def on_certificate_expiring(
    session: AsyncSession, monitor: Monitor, threshold: int, *, now: datetime
) -> None:
    """Called once per crossed certificate threshold (``monitor.cert_alerted`` already set),
    before commit, in the transaction that records the check; only adds rows to ``session``."""
    expires = monitor.cert_expires_at
    days_left = cert_days_left(expires, now)
    if expires is None or days_left is None:
        return
    reason = certs.describe(days_left, expires, threshold, monitor.cert_issuer)
    await enqueue_certificate(session, monitor, threshold, reason, now=now)

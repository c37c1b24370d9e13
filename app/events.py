"""Tenant-scoped publishing on top of the broker.

Topics on the wire are tenant-relative (``monitors``); the broker sees
``t<tenant_id>:monitors``, so a client can never receive another tenant's events.
The ``_control`` topic (not tenant-scoped, never subscribable by clients)
carries revocations between instances.
"""

from __future__ import annotations

import logging
from typing import Any

from app import metrics
from app.broker.base import Broker, BrokerUnavailable

log = logging.getLogger("watchpost.events")

CONTROL_TOPIC = "_control"


def scoped(tenant_id: int, topic: str) -> str:
    return f"t{tenant_id}:{topic}"


class EventBus:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def publish(self, tenant_id: int, topic: str, pkg_id: int, data: Any) -> int | None:
        """Publish to a tenant's topic; returns the seq, or None if the broker is down
        (logged and counted: the change is committed, only the broadcast is lost)."""
        try:
            seq = await self.broker.publish(scoped(tenant_id, topic), topic, pkg_id, data)
        except BrokerUnavailable as exc:
            metrics.BROKER_ERRORS.inc()
            log.warning("event on %s not published: broker unavailable (%s)", topic, exc)
            return None
        metrics.EVENTS_PUBLISHED.inc()
        return seq

"""Control messages between instances: credential revocations and role changes.

They travel on the broker's control topic (``app.events.CONTROL_TOPIC``: not
tenant-scoped, never subscribable by clients) as ordinary event frames whose
``data`` is ``{"kind": <kind>, **fields}``. This module is the only place that
knows those kinds and fields: publishers build a message and call
:func:`publish`; listeners turn a frame back into a message with :func:`decode`.
What a message does to live connections is decided in one place, the hub
(``app.ws.hub``); ``app.auth`` only revokes credentials and publishes.

The encoding is the one instances already exchange, so instances of the previous
release and this one understand each other during a rolling upgrade.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import orjson

from app import metrics
from app.broker.base import Broker, BrokerUnavailable
from app.events import CONTROL_TOPIC

log = logging.getLogger("watchpost.control")


@dataclass(frozen=True, slots=True)
class RevokeToken:
    """An API token was revoked: its connections close (4001)."""

    kind: ClassVar[str] = "revoke_token"

    token_id: int


@dataclass(frozen=True, slots=True)
class RevokeSession:
    """A login session ended (logout, or found dead at Keycloak): its connections close (4001).

    ``session_id`` is a local session's id as text or a Keycloak ``sid``.
    """

    kind: ClassVar[str] = "revoke_session"

    session_id: str


@dataclass(frozen=True, slots=True)
class RevokeMembership:
    """A member was removed from a tenant: their connections to it close (4001)."""

    kind: ClassVar[str] = "revoke_membership"

    user_id: int
    tenant_id: int


@dataclass(frozen=True, slots=True)
class MemberRoleChanged:
    """A member's role in a tenant changed: their connections to it take the new role now."""

    kind: ClassVar[str] = "member_role"

    user_id: int
    tenant_id: int
    role: str


@dataclass(frozen=True, slots=True)
class ClosePage:
    """A status page was deleted or made members-only: its anonymous viewers close (4001)."""

    kind: ClassVar[str] = "close_page"

    page_id: int


ControlMessage = RevokeToken | RevokeSession | RevokeMembership | MemberRoleChanged | ClosePage


def encode(message: ControlMessage) -> dict[str, Any]:
    """The ``data`` of the control frame carrying ``message``."""
    return {"kind": message.kind, **{f.name: getattr(message, f.name) for f in fields(message)}}


def decode(frame: str) -> ControlMessage | None:
    """The message in a control-topic frame; None for anything else.

    Unknown kinds and malformed fields are ignored rather than raised: a newer
    instance may send kinds this one does not know, and a listener must not fail.
    """
    try:
        data = orjson.loads(frame)["data"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("kind")
    if kind == RevokeToken.kind:
        token_id = _int(data.get("token_id"))
        return None if token_id is None else RevokeToken(token_id)
    if kind == RevokeSession.kind:
        session_id = data.get("session_id")
        # Earlier releases sent a local session's id as a number.
        if _int(session_id) is not None:
            session_id = str(session_id)
        return RevokeSession(session_id) if isinstance(session_id, str) and session_id else None
    if kind == ClosePage.kind:
        page_id = _int(data.get("page_id"))
        return None if page_id is None else ClosePage(page_id)
    user_id, tenant_id = _int(data.get("user_id")), _int(data.get("tenant_id"))
    if user_id is None or tenant_id is None:
        return None
    if kind == RevokeMembership.kind:
        return RevokeMembership(user_id, tenant_id)
    role = data.get("role")
    if kind == MemberRoleChanged.kind and isinstance(role, str):
        return MemberRoleChanged(user_id, tenant_id, role)
    return None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def publish(broker: Broker, message: ControlMessage) -> bool:
    """Send ``message`` to every instance, this one included; False when the broker is down.

    The change behind the message is already committed, so a broker outage is
    logged and counted rather than raised: only the live effect on other
    connections is lost (their next connect or AUTH_REFRESH sees the change).
    """
    try:
        await broker.publish(CONTROL_TOPIC, CONTROL_TOPIC, 0, encode(message))
    except BrokerUnavailable as exc:
        metrics.BROKER_ERRORS.inc()
        log.warning("control message %s not published: broker unavailable (%s)", message, exc)
        return False
    return True

"""Bound how long a Keycloak session outlives its logout on this server.

Keycloak tokens are verified locally, so a session ended in Keycloak does not by
itself reach this server. Two mechanisms bound it:

- Logout through Watchpost's ``POST /logout`` (``end_session``): the session is
  marked revoked on every instance (control topic), its live sockets close with
  4001 at once, and its still-unexpired access tokens cannot open new connections.
- Logout elsewhere (Keycloak account console, admin "sign out", disabled user):
  every ``KEYCLOAK_INTROSPECT_INTERVAL`` seconds (default 60; 0 turns it off) each
  instance asks Keycloak once per live session whether it is still active (token
  introspection for confidential clients, userinfo for public ones) and ends the
  dead ones as above. A live connection therefore outlasts such a logout by at most
  one interval plus one HTTP timeout. Until the watch notices, a still-unexpired
  access token of that session can open a connection, which the same sweep closes.
  Without the watch the bound is the access token's remaining lifetime (Keycloak's
  default 5 minutes): the socket then needs AUTH_REFRESH, which a dead session
  cannot pass.

While Keycloak is unreachable, connections are kept: their tokens' expiry still
bounds them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from app.auth.errors import IdentityUnavailable
from app.protocol import CloseCode

if TYPE_CHECKING:
    from collections.abc import Iterable

    from app.auth.keycloak.identity import KeycloakIdentity
    from app.auth.keycloak.provider import KeycloakProvider
    from app.events import EventBus
    from app.ws.connection import Connection
    from app.ws.hub import Hub

log = logging.getLogger(__name__)


def close_session(connections: Iterable[Connection], session_id: str) -> int:
    """Close (4001) the given connections that belong to Keycloak session ``session_id``."""
    closed = 0
    for conn in list(connections):
        ident = conn.identity
        if ident.kind == "keycloak" and ident.session_id == session_id and not conn.closed:
            log.info("closing %s: Keycloak session %s ended", conn.conn_id, session_id)
            conn.close_soon(CloseCode.AUTH_FAILED, "session ended at the identity provider")
            closed += 1
    return closed


async def end_session(identity: KeycloakIdentity, hub: Hub, events: EventBus, session_id: str) -> int:
    """A Keycloak session is over: refuse its tokens, close its sockets here, and tell
    the other instances (control topic). Returns how many sockets closed here."""
    identity.revoke_session(session_id)
    closed = close_session(hub.connections, session_id)
    await events.control("revoke_session", session_id=session_id)
    return closed


class KeycloakSessionWatch:
    """Periodic check of this instance's live Keycloak sessions (``start``/``stop``), and
    the control-topic listener that applies revocations made on other instances."""

    def __init__(
        self,
        provider: KeycloakProvider,
        identity: KeycloakIdentity,
        hub: Hub,
        events: EventBus,
        interval: float,
    ) -> None:
        self.provider = provider
        self.identity = identity
        self.hub = hub
        self.events = events
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="keycloak-session-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def on_control(self, _topic: str, _seq: int, frame: str) -> None:
        """Broker listener: a session ended on another instance is refused and closed here too."""
        sid = self.identity.learn_revocation(frame)
        if sid is not None:
            close_session(self.hub.connections, sid)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:  # the watch must outlive any one bad round
                log.exception("Keycloak session check failed; retrying next interval")

    async def sweep(self) -> int:
        """Check every live Keycloak session once; returns how many connections were closed."""
        by_session: dict[str, list[Connection]] = defaultdict(list)
        for conn in list(self.hub.connections):
            ident = conn.identity
            if ident.kind == "keycloak" and ident.session_id and not conn.closed:
                by_session[ident.session_id].append(conn)
        self.identity.forget_sessions_except(by_session)
        closed = 0
        for sid in by_session:
            token = self.identity.session_tokens.get(sid)
            if token is None:
                continue
            try:
                active = await self.provider.introspect_active(token)
            except IdentityUnavailable as exc:
                log.warning("cannot check Keycloak sessions now (%s); keeping connections", exc)
                break
            if not active:
                closed += await end_session(self.identity, self.hub, self.events, sid)
        return closed

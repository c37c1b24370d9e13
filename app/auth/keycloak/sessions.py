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

This module only revokes and announces (a ``RevokeSession`` control message); the
hub closes the sockets, here and on every other instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

from app import control
from app.auth.errors import IdentityUnavailable
from app.control import ControlMessage, RevokeSession

if TYPE_CHECKING:
    from app.auth.keycloak.identity import KeycloakIdentity
    from app.auth.keycloak.provider import KeycloakProvider

log = logging.getLogger(__name__)

#: Applies a control message on this instance and publishes it to the others
#: (the hub's ``announce``); auth decides what is revoked, never touches sockets.
Announce = Callable[[ControlMessage], Awaitable[None]]


async def end_session(identity: KeycloakIdentity, announce: Announce, session_id: str) -> None:
    """A Keycloak session is over: refuse its tokens here, and have every instance
    (this one at once) refuse them and close the session's sockets."""
    identity.revoke_session(session_id)
    await announce(RevokeSession(session_id))


class KeycloakSessionWatch:
    """Periodic check of this instance's live Keycloak sessions (``start``/``stop``), and
    the control-topic listener that learns revocations made on other instances."""

    def __init__(
        self,
        provider: KeycloakProvider,
        identity: KeycloakIdentity,
        live_sessions: Callable[[], Collection[str]],
        announce: Announce,
        interval: float,
    ) -> None:
        self.provider = provider
        self.identity = identity
        #: Keycloak session ids of this instance's open connections.
        self.live_sessions = live_sessions
        self.announce = announce
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
        """Broker listener: a session ended on another instance is refused here too
        (the hub closes its sockets)."""
        message = control.decode(frame)
        if isinstance(message, RevokeSession):
            self.identity.learn_revocation(message.session_id)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:  # the watch must outlive any one bad round
                log.exception("Keycloak session check failed; retrying next interval")

    async def sweep(self) -> int:
        """Check every live Keycloak session once; returns how many were found ended."""
        live = set(self.live_sessions())
        self.identity.forget_sessions_except(live)
        ended = 0
        for sid in live:
            token = self.identity.session_tokens.get(sid)
            if token is None:
                continue
            try:
                active = await self.provider.introspect_active(token)
            except IdentityUnavailable as exc:
                log.warning("cannot check Keycloak sessions now (%s); keeping connections", exc)
                break
            if not active:
                log.info("Keycloak session %s ended at the identity provider", sid)
                await end_session(self.identity, self.announce, sid)
                ended += 1
        return ended

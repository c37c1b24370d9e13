"""All live connections of this instance: revocation, role changes, drain, counts.

The hub is the only place that closes or updates connections because of a
control message (``app.control``), whichever instance published it and whatever
the identity kind (local session, Keycloak session, API token).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from app import control, metrics
from app.auth.credential_cache import CredentialCache
from app.auth.identity import PAGE_VIEWER, Identity
from app.broker.base import Broker
from app.control import (
    ClosePage,
    ControlMessage,
    MemberRoleChanged,
    RevokeMembership,
    RevokeSession,
    RevokeToken,
)
from app.events import CONTROL_TOPIC
from app.protocol import CloseCode
from app.rbac import Policy
from app.ws.connection import Connection

log = logging.getLogger("watchpost.hub")


class Hub:
    def __init__(self, broker: Broker, policy: Policy, credentials: CredentialCache | None = None) -> None:
        self.broker = broker
        self.policy = policy
        #: The authenticator's cache of resolved credentials: emptied of what a control message
        #: changes before any connection is touched, so no later handshake can be let in on it.
        self.credentials = credentials
        self.connections: set[Connection] = set()
        #: Role changes being applied (kept so the tasks are not collected mid-way).
        self._tasks: set[asyncio.Task[list[str]]] = set()
        #: True once shutdown began: new handshakes are refused, readiness is 503.
        self.draining = False

    def start(self) -> None:
        self.broker.add_listener(CONTROL_TOPIC, self._on_control)

    def stop(self) -> None:
        self.broker.remove_listener(CONTROL_TOPIC, self._on_control)

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        metrics.WS_ACTIVE.set(len(self.connections))

    def remove(self, conn: Connection) -> None:
        self.connections.discard(conn)
        metrics.WS_ACTIVE.set(len(self.connections))

    def _on_control(self, _topic: str, _seq: int, frame: str) -> None:
        """Control messages published by any instance, this one included."""
        message = control.decode(frame)
        if message is not None:
            self.apply(message)

    async def announce(self, message: ControlMessage) -> None:
        """Apply ``message`` here at once, then tell every instance.

        For callers that must not depend on the broker to act locally (a session
        ended at Keycloak); the broker's echo back to this instance finds nothing
        left to do.
        """
        self.apply(message)
        await control.publish(self.broker, message)

    def apply(self, message: ControlMessage) -> None:
        """Close the connections a revocation covers, or give a member's connections a new role."""
        if self.credentials is not None:
            self.credentials.forget(message)
        if isinstance(message, MemberRoleChanged):
            self.change_member_role(message)
            return
        for conn in list(self.connections):
            reason = _revoked(message, conn.identity)
            if reason is not None and not conn.closed:
                log.info("closing %s: %s (%s)", conn.conn_id, reason, message)
                conn.close_soon(CloseCode.AUTH_FAILED, reason)

    def session_ids(self, kind: str) -> set[str]:
        """Session ids of this instance's open connections whose identity is of ``kind``."""
        return {
            conn.identity.session_id
            for conn in self.connections
            if conn.identity.kind == kind and conn.identity.session_id and not conn.closed
        }

    def change_member_role(self, message: MemberRoleChanged) -> None:
        """MEMBER_UPDATE on any instance: the member's sockets in that tenant take the new role now.

        An API token of that member gets the lower of the role it was issued with
        and the new one (as when it connects). Topics the new role may not read
        are dropped, and each socket is told with EVENT_ROLE_CHANGED
        (``Connection.apply_identity``, the path AUTH_REFRESH takes too).
        """
        if message.role not in self.policy.roles:
            return
        for conn in list(self.connections):
            ident = conn.identity
            if conn.closed or ident.user_id != message.user_id or ident.tenant_id != message.tenant_id:
                continue
            role = message.role
            if ident.kind == "api":
                if ident.token_role not in self.policy.roles:
                    continue  # its issued role is unknown: never raise it; the next connect decides
                role = self.policy.api_token_role(ident.token_role, message.role)
            if ident.role == role:
                continue
            log.info("%s (%s): role %s -> %s", conn.conn_id, ident.username, ident.role, role)
            # The swap happens now, so the next control message and the next request see the
            # new role; dropping topics and telling the client run in a task.
            settle = conn.apply_identity(dataclasses.replace(ident, role=role), announce=True)
            task = asyncio.get_running_loop().create_task(settle)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float, batch: int = 500) -> None:
        """Graceful shutdown: stop taking requests, let in-flight ones answer, close with 1001.

        Connections are closed in batches so thousands of clients do not all
        reconnect elsewhere in the same millisecond.
        """
        self.draining = True
        conns = list(self.connections)
        log.info("draining %d connections (deadline %.1fs)", len(conns), timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for conn in conns:
            conn.draining = True
        # A read loop that passed its draining check just before may still start a task:
        # keep waiting until no request is left (or the deadline passes).
        while True:
            pending = [t for c in conns for t in c.tasks]
            left = deadline - loop.time()
            if not pending or left <= 0:
                break
            await asyncio.wait(pending, timeout=left)
        for i in range(0, len(conns), batch):
            chunk = conns[i : i + batch]
            await asyncio.gather(
                *(c.wait_flushed(max(0.05, min(2.0, deadline - loop.time()))) for c in chunk)
            )
            # A peer that stopped reading cannot take the close frame (its socket buffers are
            # full), so a close may never finish: stop waiting at the deadline and leave it to
            # the server's shutdown.
            closes = [
                loop.create_task(c.close(CloseCode.GOING_AWAY, "server shutting down; reconnect"))
                for c in chunk
            ]
            _, stuck = await asyncio.wait(closes, timeout=max(0.05, deadline - loop.time()))
            if stuck:
                log.warning(
                    "%d connection(s) did not take the close frame before the drain deadline", len(stuck)
                )
            await asyncio.sleep(0)
        log.info("drain complete")


def _revoked(message: ControlMessage, ident: Identity) -> str | None:
    """The close reason when ``message`` revokes the credential behind ``ident``, else None."""
    match message:
        case RevokeToken(token_id):
            hit = ident.kind == "api" and ident.token_id == token_id
        case RevokeSession(session_id):
            if ident.kind == "keycloak" and ident.session_id == session_id:
                return "session ended at the identity provider"
            hit = ident.kind == "local" and ident.session_id == session_id
        case RevokeMembership(user_id, tenant_id):
            hit = ident.user_id == user_id and ident.tenant_id == tenant_id and not ident.is_platform_admin
        case ClosePage(page_id):
            if ident.kind == PAGE_VIEWER and ident.page_id == page_id:
                return "no such status page"
            hit = False
        case _:
            hit = False
    return "credential revoked" if hit else None

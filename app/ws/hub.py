"""All live connections of this instance: revocation, role changes, drain, counts."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import orjson

from app import metrics
from app.broker.base import Broker
from app.events import CONTROL_TOPIC
from app.protocol import CloseCode, PkgID, encode_response
from app.rbac import Policy
from app.ws import subscriptions
from app.ws.connection import Connection

log = logging.getLogger("watchpost.hub")


class Hub:
    def __init__(self, broker: Broker, policy: Policy) -> None:
        self.broker = broker
        self.policy = policy
        self.connections: set[Connection] = set()
        #: Role changes being applied (kept so the tasks are not collected mid-way).
        self._tasks: set[asyncio.Task[None]] = set()
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
        """Revocations published by any instance (TOKEN_REVOKE, /logout, member removal)."""
        try:
            data: dict[str, Any] = orjson.loads(frame)["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        kind = data.get("kind")
        if kind == "member_role":
            self._on_role_change(data)
            return
        for conn in list(self.connections):
            ident = conn.identity
            if (
                (kind == "revoke_token" and ident.kind == "api" and ident.token_id == data.get("token_id"))
                or (
                    kind == "revoke_session"
                    and ident.kind == "local"
                    and ident.session_id == str(data.get("session_id"))
                )
                or (
                    kind == "revoke_membership"
                    and ident.user_id == data.get("user_id")
                    and ident.tenant_id == data.get("tenant_id")
                    and not ident.is_platform_admin
                )
            ):
                log.info("closing %s: credential revoked (%s)", conn.conn_id, kind)
                conn.close_soon(CloseCode.AUTH_FAILED, "credential revoked")

    def _on_role_change(self, data: dict[str, Any]) -> None:
        """MEMBER_UPDATE on any instance: the member's sockets in that tenant take the new role now.

        An API token of that member gets the lower of the role it was issued with
        and the new one (as when it connects). Topics the new role may not read
        are dropped, and each socket is told with EVENT_ROLE_CHANGED.
        """
        member_role = data.get("role")
        if not isinstance(member_role, str) or member_role not in self.policy.roles:
            return
        for conn in list(self.connections):
            ident = conn.identity
            if (
                conn.closed
                or ident.user_id != data.get("user_id")
                or ident.tenant_id != data.get("tenant_id")
            ):
                continue
            role = member_role
            if ident.kind == "api":
                if ident.token_role not in self.policy.roles:
                    continue  # its issued role is unknown: never raise it; the next connect decides
                role = self.policy.api_token_role(ident.token_role, member_role)
            if ident.role == role:
                continue
            log.info("%s (%s): role %s -> %s", conn.conn_id, ident.username, ident.role, role)
            conn.identity = dataclasses.replace(ident, role=role)
            task = asyncio.get_running_loop().create_task(self._apply_role(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _apply_role(self, conn: Connection) -> None:
        dropped = await subscriptions.drop_unpermitted(conn, self.broker, self.policy)
        role = conn.identity.role
        conn.enqueue(
            encode_response(
                PkgID.EVENT_ROLE_CHANGED,
                None,
                0,
                {"roles": [role] if role else [], "dropped_topics": dropped},
            )
        )

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

"""All live connections of this instance: revocation, drain, counts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from app import metrics
from app.broker.base import Broker
from app.events import CONTROL_TOPIC
from app.protocol import CloseCode
from app.ws.connection import Connection

log = logging.getLogger("watchpost.hub")


class Hub:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.connections: set[Connection] = set()
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

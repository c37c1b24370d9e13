"""SIGTERM during traffic: in-flight requests are answered, then every socket closes with 1001."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from collections.abc import Awaitable, Callable

import asyncpg
import websockets
from websockets.asyncio.client import connect

from app.protocol import CloseCode, PkgID, RSPCode
from tests.realtime_support import publisher, ready, redis_server, servers, wait_until
from tests.server import call, expect_close, new_req_id, ok, wait_for_response, ws_connect

IN_FLIGHT = 6
IDLE = 6


async def _waiting_on_lock(pg: asyncpg.Connection, table: str) -> int:
    return int(
        await pg.fetchval(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass", table
        )
    )


async def test_sigterm_answers_in_flight_requests_then_closes_1001(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    srv = redis_server(pg_url, redis_url, redis_prefix, WS_DRAIN_TIMEOUT="30")
    with servers(srv):
        assert srv.proc is not None
        token = srv.login()
        pg = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://", 1))
        async with contextlib.AsyncExitStack() as stack:
            busy = [await stack.enter_async_context(ws_connect(srv, token)) for _ in range(IN_FLIGHT)]
            idle = [await stack.enter_async_context(ws_connect(srv, token)) for _ in range(IDLE)]
            for ws in busy + idle:
                await ok(ws, PkgID.PING)
            # Hold the tokens table so TOKEN_LIST requests stay in flight until we let go.
            lock = pg.transaction()
            await lock.start()
            await pg.execute("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")
            req_ids = []
            for ws in busy:
                req_ids.append(new_req_id())
                await ws.send(json.dumps({"pkg_id": PkgID.TOKEN_LIST, "req_id": req_ids[-1], "data": {}}))
            await _wait_async(lambda: _waiting_on_lock(pg, "api_tokens"), IN_FLIGHT)

            srv.proc.send_signal(signal.SIGTERM)
            # Draining: not ready, new handshakes refused with 1013, new requests answered UNAVAILABLE.
            await wait_until(lambda: ready(srv)[0] == 503, timeout=15)
            _, body = ready(srv)
            assert body["draining"] is True and body["connections"] == IN_FLIGHT + IDLE
            async with ws_connect(srv, token) as late:
                assert await expect_close(late) == CloseCode.TRY_AGAIN_LATER
            resp = await call(idle[0], PkgID.PING)
            assert resp["status_code"] == RSPCode.UNAVAILABLE and "reconnect" in resp["data"]["msg"]
            assert srv.proc.poll() is None  # still waiting for the in-flight requests

            await lock.rollback()
            for ws, rid in zip(busy, req_ids, strict=True):
                resp = await wait_for_response(ws, rid, timeout=15)
                assert resp["status_code"] == RSPCode.OK, resp
                assert await expect_close(ws, timeout=15) == CloseCode.GOING_AWAY
            for ws in idle:
                assert await expect_close(ws, timeout=15) == CloseCode.GOING_AWAY
        await pg.close()
        assert await asyncio.to_thread(srv.proc.wait, 20) == 0
        assert "drain complete" in srv.log_text()
        try:
            async with websockets.connect(srv.ws_url, open_timeout=2):
                raise AssertionError("the server still accepts connections after the drain")
        except (OSError, websockets.InvalidHandshake, TimeoutError):
            pass


async def _wait_async(probe: Callable[[], Awaitable[int]], expected: int, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if await probe() >= expected:
                return
            await asyncio.sleep(0.05)


async def test_drain_meets_its_deadline_when_a_client_stopped_reading(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """A socket whose buffers are full cannot take a close frame; shutdown must not wait on it."""
    srv = redis_server(
        pg_url,
        redis_url,
        redis_prefix,
        WS_DRAIN_TIMEOUT="3",
        WS_PING_INTERVAL="300",  # keepalive would eventually drop the client; the drain must not rely on it
        WS_SEND_QUEUE_BYTES=str(64 * 1024 * 1024),
        WS_SEND_QUEUE_MAX="100000",
    )
    with servers(srv):
        assert srv.proc is not None
        token = srv.login()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        stuck = await connect(
            srv.ws_url,
            sock=sock,
            additional_headers={"Authorization": f"Bearer {token}"},
            subprotocols=["watchpost.v1"],  # type: ignore[list-item]
            max_queue=1,
        )
        try:
            tenant_id = (await ok(stuck, PkgID.WHOAMI))["tenant_id"]
            await ok(stuck, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
            async with publisher(redis_url, redis_prefix) as pub:
                # ~8 MiB: more than loopback's kernel buffers hold, far less than the send queue.
                for _ in range(256):
                    await pub.publish(tenant_id, "monitors", {"blob": "x" * 32000})
            await asyncio.sleep(1.0)
            assert "send queue overflow" not in srv.log_text()
            started = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(srv.proc.wait, 30)
            assert code == 0
            assert time.monotonic() - started < 3 + 6, "shutdown overran WS_DRAIN_TIMEOUT"
        finally:
            stuck.transport.abort()

"""PostgreSQL going away mid-run: requests answer UNAVAILABLE, readiness is 503, nothing
crashes, and the server recovers by itself when the database returns."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit, urlunsplit

from app.protocol import PkgID, RSPCode
from tests.server import ServerProcess, call, ok, ws_connect
from tests.tcpproxy import TcpProxy


async def test_postgres_outage_and_recovery(pg_url: str) -> None:
    parts = urlsplit(pg_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).start()
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    srv = ServerProcess(via_proxy, env={"WS_HANDLER_TIMEOUT": "8"})
    srv.start()
    try:
        token = srv.login()
        async with ws_connect(srv, token) as ws:
            assert (await ok(ws, PkgID.TOKEN_LIST)) == []
            proxy.stop()
            resp = await call(ws, PkgID.TOKEN_LIST, timeout=20)
            assert resp["status_code"] == RSPCode.UNAVAILABLE, resp
            assert "database" in resp["data"]["msg"]
            await ok(ws, PkgID.PING)  # the socket and the server are fine
            status, body = await asyncio.to_thread(srv.get, "/health/ready")
            assert status == 503 and json.loads(body)["database"] == "down"
            status, body = await asyncio.to_thread(srv.get, "/health")
            assert status == 200 and json.loads(body)["database"] == "down"

            proxy.start()  # the database comes back on the same address
            for _ in range(100):
                resp = await call(ws, PkgID.TOKEN_LIST, timeout=20)
                if resp["status_code"] == RSPCode.OK:
                    break
                await asyncio.sleep(0.2)
            assert resp["status_code"] == RSPCode.OK, resp
            status, _ = await asyncio.to_thread(srv.get, "/health/ready")
            assert status == 200
        assert srv.proc is not None and srv.proc.poll() is None
    finally:
        srv.stop()
        proxy.stop()

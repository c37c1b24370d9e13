"""PostgreSQL going away mid-run: requests answer UNAVAILABLE, readiness is 503, nothing
crashes, and the server recovers by itself when the database returns."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit, urlunsplit

from app.protocol import PkgID, RSPCode
from tests.server import ServerProcess, call, call_many, ok, ws_connect
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
            monitor = await ok(ws, PkgID.MONITOR_CREATE, {"name": "db", "kind": "push"})
            assert (await ok(ws, PkgID.MONITOR_GET, {"id": monitor["id"]}))["name"] == "db"
            proxy.stop()
            resp = await call(ws, PkgID.TOKEN_LIST, timeout=20)
            assert resp["status_code"] == RSPCode.UNAVAILABLE, resp
            assert "database" in resp["data"]["msg"]
            # The batched read path (its own pool) answers the same way.
            resp = await call(ws, PkgID.MONITOR_GET, {"id": monitor["id"]}, timeout=20)
            assert resp["status_code"] == RSPCode.UNAVAILABLE, resp
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
            assert (await ok(ws, PkgID.MONITOR_GET, {"id": monitor["id"]}))["name"] == "db"
            status, _ = await asyncio.to_thread(srv.get, "/health/ready")
            assert status == 200
        assert srv.proc is not None and srv.proc.poll() is None
    finally:
        srv.stop()
        proxy.stop()


async def test_reads_survive_a_database_restart_without_an_error(pg_url: str) -> None:
    """Every pooled connection dies (a restart) while the database stays reachable:
    the batched read path has no pre-ping, so it must retry on a fresh connection
    rather than hand the first caller an error."""
    parts = urlsplit(pg_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)).start()
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    srv = ServerProcess(via_proxy)
    srv.start()
    try:
        token = srv.login()
        async with ws_connect(srv, token) as ws:
            created = [
                await ok(ws, PkgID.MONITOR_CREATE, {"name": f"r{i}", "kind": "push"}) for i in range(3)
            ]
            for _ in range(3):
                replies = await call_many(ws, [(PkgID.MONITOR_GET, {"id": m["id"]}) for m in created])
                assert [r["status_code"] for r in replies] == [RSPCode.OK] * 3, replies
                proxy.cut()  # every open database connection dies; new ones are accepted
            replies = await call_many(ws, [(PkgID.MONITOR_GET, {"id": m["id"]}) for m in created])
            assert [r["data"]["name"] for r in replies] == ["r0", "r1", "r2"], replies
    finally:
        srv.stop()
        proxy.stop()

"""Limits as a client meets them, over real sockets against real servers.

One server on SQLite: the handler deadline, the in-flight cap and the login rate limit.
Two servers sharing PostgreSQL and Redis: the message rate and connection limits are
counted across instances, and follow LIMITS_FAIL_OPEN when Redis dies. The limiter
backends themselves are held to one contract in tests/test_limits_contract.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from app.protocol import CloseCode, PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user
from tests.realtime_support import OwnRedis, next_event, publisher, ready, redis_server, servers, wait_until
from tests.server import ServerProcess, call, expect_close, new_req_id, ok, sqlite_url, ws_connect


async def _burst(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    """Send ``n`` PINGs back to back; return the ``n`` answers in request order."""
    ids = [new_req_id() for _ in range(n)]
    for rid in ids:
        await ws.send(json.dumps({"pkg_id": PkgID.PING, "req_id": rid}))
    answers = {}
    async with asyncio.timeout(20):
        while len(answers) < n:
            msg = json.loads(await ws.recv())
            if msg.get("req_id") in ids:
                answers[msg["req_id"]] = msg
    return [answers[rid] for rid in ids]


async def _admitted(ws: ClientConnection) -> bool:
    try:
        return (await call(ws, PkgID.PING, timeout=5))["status_code"] == RSPCode.OK
    except websockets.ConnectionClosed:
        return False


async def test_rate_and_connection_limits_are_shared_across_instances(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    env = {"WS_MESSAGE_RATE_LIMIT": "10", "WS_MAX_CONNECTIONS_PER_USER": "2"}
    a = redis_server(pg_url, redis_url, redis_prefix, **env)
    b = redis_server(pg_url, redis_url, redis_prefix, **env)
    with servers(a, b):
        # Messages: one user's budget of ten per minute, spent on two instances.
        chatty = await acreate_user(pg_url, {"default": "viewer"})
        token = a.login(chatty, PASSWORD)
        async with ws_connect(a, token) as on_a, ws_connect(b, token) as on_b:
            first = await _burst(on_a, 7)
            assert all(r["status_code"] == RSPCode.OK for r in first)
            # Seven spent on A: B has at most four left (one may refill meanwhile).
            second = await _burst(on_b, 7)
            limited = [r for r in second if r["status_code"] == RSPCode.RATE_LIMITED]
            assert len(limited) >= 2, second
            data = limited[0]["data"]
            assert int(data["retry_after_ms"]) > 0 and "retry" in str(data["msg"])
            # Still open on both: every request keeps getting exactly one answer.
            for ws in (on_a, on_b):
                assert (await _burst(ws, 1))[0]["status_code"] in (RSPCode.OK, RSPCode.RATE_LIMITED)

        # Connections: at most two per user, counted across both instances.
        token = a.login()
        async with ws_connect(a, token) as one, ws_connect(b, token) as two:
            assert await _admitted(one) and await _admitted(two)
            async with ws_connect(a, token) as third:
                assert await expect_close(third) == CloseCode.TOO_MANY_CONNECTIONS
                assert third.close_reason and "at most 2" in third.close_reason
            async with ws_connect(b, token) as fourth:
                assert await expect_close(fourth) == CloseCode.TOO_MANY_CONNECTIONS
            assert await _admitted(one)  # the refusals did not disturb the others
        # Both closed: their slots are released, so two new connections are admitted again.
        for _ in range(50):
            async with ws_connect(a, token) as again, ws_connect(b, token) as and_again:
                if await _admitted(again) and await _admitted(and_again):
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("connection slots were not released after the sockets closed")


@pytest.mark.parametrize("fail_open", [True, False])
async def test_redis_dies_mid_test_limits_follow_the_fail_open_setting(pg_url: str, fail_open: bool) -> None:
    redis = OwnRedis().start()
    srv = ServerProcess(
        pg_url,
        env={
            "REDIS_URL": redis.url,
            "REDIS_PREFIX": "wp:",
            "LIMITS_FAIL_OPEN": str(fail_open).lower(),
            "WS_MESSAGE_RATE_LIMIT": "100000",
            "WS_MAX_CONNECTIONS_PER_USER": "10",
        },
    )
    try:
        srv.start()
        token = srv.login()
        async with ws_connect(srv, token) as ws:
            await ok(ws, PkgID.PING)
            assert ready(srv)[0] == 200
            redis.kill()
            await wait_until(lambda: ready(srv)[0] == 503, timeout=15)
            _, body = ready(srv)
            assert body["broker"] == "down" and body["database"] == "ok" and not body["draining"]
            assert srv.get("/health")[0] == 200  # alive, just not ready
            # Beyond any batch reserved before the outage, requests meet the fail-open setting.
            answers = await _burst(ws, 120)
            codes = {r["status_code"] for r in answers}
            if fail_open:
                assert codes == {RSPCode.OK}
            else:
                assert RSPCode.RATE_LIMITED in codes
                denied = next(r for r in answers if r["status_code"] == RSPCode.RATE_LIMITED)
                assert denied["data"]["retry_after_ms"] == 1000
            async with ws_connect(srv, token) as other:
                if fail_open:
                    assert (await _burst(other, 1))[0]["status_code"] == RSPCode.OK
                else:
                    assert await expect_close(other) == CloseCode.TOO_MANY_CONNECTIONS
            if fail_open:
                # Events need the broker: SUBSCRIBE says so, and works again once Redis is back.
                resp = await call(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]}, timeout=15)
                assert resp["status_code"] == RSPCode.UNAVAILABLE and "retry" in resp["data"]["msg"]
                redis.start()
                await wait_until(lambda: ready(srv)[0] == 200, timeout=20)
                for _ in range(60):
                    resp = await call(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]}, timeout=15)
                    if resp["status_code"] == RSPCode.OK:
                        break
                    await asyncio.sleep(0.25)
                assert resp["status_code"] == RSPCode.OK, resp
                tenant_id = (await ok(ws, PkgID.WHOAMI))["tenant_id"]
                async with publisher(redis.url, "wp:") as pub:
                    seq = await pub.publish(tenant_id, "monitors", {"after": "outage"})
                assert (await next_event(ws, "monitors"))["seq"] == seq
        _status, metrics = srv.get("/metrics")
        assert 'redis_errors_total{component="limits_' in metrics.decode()
        assert "Redis is unreachable for" in srv.log_text()
    finally:
        srv.stop(timeout=15)
        redis.kill()


# ----- one server: handler deadline, in-flight cap, login rate limit


@pytest.fixture(scope="module")
def strict_server() -> Iterator[ServerProcess]:
    srv = ServerProcess(
        sqlite_url(),
        env={
            "WS_HANDLER_TIMEOUT": "0.0005",
            "WS_MAX_IN_FLIGHT": "1",
            "RATE_LIMIT_PER_MINUTE": "5",
            "RATE_LIMIT_BURST": "3",
        },
    )
    srv.start()
    yield srv
    srv.stop()


async def test_handler_deadline_answers_timeout(strict_server: ServerProcess) -> None:
    token = strict_server.login()
    async with ws_connect(strict_server, token) as ws:
        resp = await call(ws, PkgID.TOKEN_LIST)  # needs the database: cannot finish in 0.5 ms
        assert resp["status_code"] == RSPCode.TIMEOUT
        assert "longer than" in resp["data"]["msg"]
        await ok(ws, PkgID.PING)  # a handler without I/O still answers; the socket stays open


async def test_in_flight_cap_serialises_requests(strict_server: ServerProcess) -> None:
    token = strict_server.login()
    async with ws_connect(strict_server, token) as ws:
        ids = [new_req_id() for _ in range(30)]
        for i, rid in enumerate(ids):
            pkg = PkgID.TOKEN_LIST if i % 3 == 0 else PkgID.PING
            await ws.send(json.dumps({"pkg_id": pkg, "req_id": rid}))
        order = [json.loads(await ws.recv())["req_id"] for _ in ids]
        assert order == ids  # with one request in flight, answers come back in request order


def test_login_is_rate_limited_per_username(strict_server: ServerProcess) -> None:
    codes = [strict_server.post("/login", {"username": "admin", "password": "wrong"})[0] for _ in range(6)]
    assert codes[0] == 401  # earlier logins of this module used part of the burst of 3
    assert codes[-2:] == [429, 429]
    status, body = strict_server.post("/login", {"username": "admin", "password": "wrong"})
    assert status == 429 and body["retry_after_ms"] > 0

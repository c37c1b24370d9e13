"""Message rate and connection limits in Redis over real sockets, and what happens when Redis dies."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from app.protocol import CloseCode, PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user
from tests.realtime_support import OwnRedis, next_event, publisher, ready, redis_server, servers, wait_until
from tests.server import ServerProcess, call, expect_close, new_req_id, ok, ws_connect


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

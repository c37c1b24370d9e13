"""Limits at the frame edge, on real servers: every frame counts against the message rate
limit (malformed ones too), a client that floods while limited is closed with 1008, and a
slow consumer's 4009 close frame gets WS_CLOSE_GRACE to drain."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Iterator

import pytest
import websockets
from websockets.asyncio.client import connect

from app.protocol import CloseCode, PkgID, RSPCode
from app.ws.endpoint import LIMITED_FRAMES_BEFORE_CLOSE
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.realtime_support import publisher, redis_server, servers
from tests.server import ServerProcess, ok, ws_connect

RATE = 40


@pytest.fixture(scope="module")
def limited_server() -> Iterator[ServerProcess]:
    srv = ServerProcess(
        services.create_pg_database(),
        env={"WS_MESSAGE_RATE_LIMIT": str(RATE), "RATE_LIMIT_PER_MINUTE": "1000", "RATE_LIMIT_BURST": "1000"},
    )
    srv.start()
    yield srv
    srv.stop()


async def _fresh_token(srv: ServerProcess) -> str:
    name = await acreate_user(srv.database_url, {unique("rl"): "viewer"})
    return srv.login(name, PASSWORD)


async def test_malformed_frames_count_against_the_message_rate_limit(limited_server: ServerProcess) -> None:
    async with ws_connect(limited_server, await _fresh_token(limited_server)) as ws:
        for _ in range(RATE):
            await ws.send("not json")
        first = [json.loads(await ws.recv()) for _ in range(RATE)]
        assert {m["status_code"] for m in first} == {RSPCode.INVALID_DATA}
        # The bucket is empty now: garbage and requests alike are answered 7.
        await ws.send("not json")
        garbage = json.loads(await ws.recv())
        assert garbage["status_code"] == RSPCode.RATE_LIMITED and garbage["data"]["retry_after_ms"] > 0
        rid = str(uuid.uuid4())
        await ws.send(json.dumps({"pkg_id": PkgID.PING, "req_id": rid}))
        ping = json.loads(await ws.recv())
        assert ping["status_code"] == RSPCode.RATE_LIMITED
        assert (ping["req_id"], ping["pkg_id"]) == (rid, PkgID.PING)  # salvaged for the client
        # A frame that does not decode still gets what could be salvaged.
        await ws.send(json.dumps({"pkg_id": PkgID.WHOAMI, "req_id": "nope"}))
        salvaged = json.loads(await ws.recv())
        assert salvaged["status_code"] == RSPCode.RATE_LIMITED and salvaged["pkg_id"] == PkgID.WHOAMI


async def test_flooding_while_limited_closes_1008(limited_server: ServerProcess) -> None:
    codes: list[int] = []
    async with ws_connect(limited_server, await _fresh_token(limited_server)) as ws:

        async def read() -> None:
            while True:
                codes.append(json.loads(await ws.recv())["status_code"])

        reader = asyncio.create_task(read())
        # Keep sending well past the first 7's retry_after_ms (1.5 s at 40 a minute).
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(15):
                while True:
                    await ws.send("not json")
                    await asyncio.sleep(0.005)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await reader
    assert info.value.rcvd is not None and info.value.rcvd.code == CloseCode.POLICY_VIOLATION
    assert "rate limited" in info.value.rcvd.reason
    assert codes.count(RSPCode.RATE_LIMITED) > LIMITED_FRAMES_BEFORE_CLOSE
    assert codes.count(RSPCode.INVALID_DATA) <= RATE + 10  # tokens refill meanwhile
    assert "frames in a row while rate limited" in limited_server.log_text()


async def test_a_burst_sent_before_the_first_answer_is_not_a_flood(limited_server: ServerProcess) -> None:
    async with ws_connect(limited_server, await _fresh_token(limited_server)) as ws:
        burst = RATE + LIMITED_FRAMES_BEFORE_CLOSE + 50  # pipelined at once, well within retry_after_ms
        for _ in range(burst):
            await ws.send("not json")
        codes = [json.loads(await ws.recv())["status_code"] for _ in range(burst)]
        assert codes.count(RSPCode.RATE_LIMITED) > LIMITED_FRAMES_BEFORE_CLOSE
        await asyncio.sleep(60 / RATE * 1.5)  # the client backs off; one token refills
        assert (await ok(ws, PkgID.PING))["pong"] is True


# ----- 4009 grace

PAYLOAD = "x" * 32000


async def test_slow_consumer_that_resumes_within_the_grace_sees_4009(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    srv = redis_server(pg_url, redis_url, redis_prefix, WS_CLOSE_GRACE="6")
    with servers(srv):
        token = srv.login()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # back-pressure reaches the server fast
        sock.connect(("127.0.0.1", srv.port))
        slow = await connect(
            srv.ws_url,
            sock=sock,
            additional_headers={"Authorization": f"Bearer {token}"},
            subprotocols=["watchpost.v1"],  # type: ignore[list-item]
            max_queue=1,
            max_size=2**24,
            open_timeout=10,
        )
        try:
            tenant_id = (await ok(slow, PkgID.WHOAMI))["tenant_id"]
            await ok(slow, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
            # From here on the client stops reading.
            async with publisher(redis_url, redis_prefix) as pub:
                for _ in range(400):
                    await pub.publish(tenant_id, "monitors", {"blob": PAYLOAD})
                    if "send queue overflow" in srv.log_text():
                        break
                    await asyncio.sleep(0.005)
            assert "send queue overflow" in srv.log_text()
            # Still sending (not reading): the server notices the closed connection and starts
            # its close; the close frame waits behind megabytes the client has not read.
            await slow.send(json.dumps({"pkg_id": PkgID.PING, "req_id": str(uuid.uuid4())}))
            await asyncio.sleep(2.5)  # longer than the old hard 1 s, within the 6 s grace
            code = None
            try:
                async with asyncio.timeout(20):
                    while True:
                        await slow.recv()
            except websockets.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
            assert code == CloseCode.SLOW_CONSUMER
        finally:
            await slow.close()

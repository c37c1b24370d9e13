"""The send queue tells a large answer apart from a slow consumer: an answer to the
client's own request that is larger than ``WS_SEND_QUEUE_BYTES`` is delivered (no 4009),
while a client that stops reading is still closed with 4009, whether events or its own
answers pile up. The queue is shrunk to 64 KiB so that one 2,000-row STATUS_SUMMARY
page (~0.5 MiB) is eight times the bound."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect

from app.protocol import CloseCode, PkgID
from tests.bulk_monitors import add_monitors
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.realtime_support import publisher, redis_server, servers
from tests.server import ServerProcess, call, expect_close, new_req_id, ok, ws_connect

QUEUE_BYTES = 64 * 1024
PAYLOAD = "x" * 16000


@pytest.fixture
def srv(pg_url: str, redis_url: str, redis_prefix: str) -> Iterator[ServerProcess]:
    server = redis_server(pg_url, redis_url, redis_prefix, WS_SEND_QUEUE_BYTES=str(QUEUE_BYTES))
    with servers(server):
        yield server


@pytest_asyncio.fixture
async def fleet(srv: ServerProcess) -> AsyncIterator[tuple[str, str]]:
    """A tenant with 2,000 monitors and a viewer in it: (slug, access token)."""
    slug = unique("fleet")
    viewer = await acreate_user(srv.database_url, {slug: "viewer"})
    await add_monitors(srv.database_url, slug, 2000)
    yield slug, await asyncio.to_thread(srv.login, viewer, PASSWORD)


async def _slow_client(srv: ServerProcess, token: str, slug: str) -> ClientConnection:
    """A client whose tiny receive buffer makes the server's writer block at once."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", srv.port))
    return await connect(
        f"{srv.ws_url}?tenant={slug}",
        sock=sock,
        additional_headers={"Authorization": f"Bearer {token}"},
        subprotocols=["watchpost.v1"],
        max_queue=1,
        max_size=2**24,
        open_timeout=10,
    )  # type: ignore[list-item]


async def test_an_answer_larger_than_the_queue_is_delivered_amid_events(
    srv: ServerProcess, fleet: tuple[str, str], redis_url: str, redis_prefix: str
) -> None:
    slug, token = fleet
    async with ws_connect(srv, token, tenant=slug) as ws, publisher(redis_url, redis_prefix) as pub:
        tenant_id = (await ok(ws, PkgID.WHOAMI))["tenant_id"]
        await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
        for _ in range(5):
            # Events keep arriving while the big page is built, queued and written.
            req_id = new_req_id()
            await ws.send(json.dumps({"pkg_id": PkgID.STATUS_SUMMARY, "req_id": req_id, "data": {}}))
            for _ in range(3):
                await pub.publish(tenant_id, "monitors", {"blob": PAYLOAD})
            answer: dict[str, Any] | None = None
            async with asyncio.timeout(20):
                while answer is None:
                    raw = await ws.recv()
                    msg = json.loads(raw)
                    if msg.get("req_id") == req_id:
                        answer = msg
                        assert len(raw) > 4 * QUEUE_BYTES
            assert answer["status_code"] == 0, answer
            assert len(answer["data"]["monitors"]) == 2000
        assert (await ok(ws, PkgID.PING))["pong"] is True
    assert "send queue overflow" not in srv.log_text()


async def test_a_client_that_stops_reading_events_is_closed_4009(
    srv: ServerProcess, fleet: tuple[str, str], redis_url: str, redis_prefix: str
) -> None:
    slug, token = fleet
    slow = await _slow_client(srv, token, slug)
    try:
        tenant_id = (await ok(slow, PkgID.WHOAMI))["tenant_id"]
        await ok(slow, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
        async with publisher(redis_url, redis_prefix) as pub:
            for _ in range(200):  # 3.2 MB: more than the socket buffers and the 64 KiB queue hold
                await pub.publish(tenant_id, "monitors", {"blob": PAYLOAD})
                if "send queue overflow" in srv.log_text():
                    break
                await asyncio.sleep(0.005)
        assert await expect_close(slow, timeout=30) == CloseCode.SLOW_CONSUMER
    finally:
        await slow.close()


async def test_a_client_that_stops_reading_its_answers_is_closed_4009(
    srv: ServerProcess, fleet: tuple[str, str]
) -> None:
    slug, token = fleet
    slow = await _slow_client(srv, token, slug)
    try:
        await ok(slow, PkgID.PING)
        # Ask for 100 big pages (~50 MB) and read none: the answers may not pile up without bound.
        for _ in range(100):
            req = {"pkg_id": PkgID.STATUS_SUMMARY, "req_id": new_req_id(), "data": {}}
            try:
                await slow.send(json.dumps(req))
            except Exception:  # noqa: BLE001 - the server closed us, which is the point
                break
        assert await expect_close(slow, timeout=30) == CloseCode.SLOW_CONSUMER
    finally:
        await slow.close()
    # Another client of the same user is unaffected.
    async with ws_connect(srv, token, tenant=slug) as ws:
        assert (await call(ws, PkgID.PING))["status_code"] == 0

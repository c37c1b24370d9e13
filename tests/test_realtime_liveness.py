"""Keepalive: a peer that stops answering pings is dropped; an idle one that answers stays."""

from __future__ import annotations

import asyncio

from app.protocol import PkgID
from tests.realtime_support import ready, redis_server, servers, wait_until
from tests.server import ok, ws_connect


async def test_unanswered_pings_drop_the_client_idle_clients_stay(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    srv = redis_server(pg_url, redis_url, redis_prefix, WS_PING_INTERVAL="1", WS_PING_TIMEOUT="1")
    with servers(srv):
        token = srv.login()
        async with ws_connect(srv, token) as idle, ws_connect(srv, token) as gone:
            # The client offers permessage-deflate; the server declines it by default.
            assert idle.protocol.extensions == [] and gone.protocol.extensions == []
            await ok(gone, PkgID.PING)
            assert ready(srv)[1]["connections"] == 2
            gone.transport.pause_reading()  # the peer vanishes: pings go unanswered
            await wait_until(lambda: ready(srv)[1]["connections"] == 1, timeout=20)
            # The idle client answered every ping (its library does it) and is still served.
            await asyncio.sleep(1.5)
            assert (await ok(idle, PkgID.PING))["pong"] is True
            assert ready(srv)[1]["connections"] == 1

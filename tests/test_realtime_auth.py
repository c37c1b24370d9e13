"""Token expiry on a live socket: 904 before expiry, in-band AUTH_REFRESH, 4010 without it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from app.protocol import CloseCode, PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user
from tests.realtime_support import redis_server, servers
from tests.server import ServerProcess, call, expect_close, ok, ws_connect

TTL = 10
NOTICE = 4


async def _expiring_notice(ws: ClientConnection, timeout: float = TTL + 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("pkg_id") == PkgID.EVENT_AUTH_EXPIRING:
                assert msg["req_id"] is None and msg["status_code"] == 0
                return dict(msg["data"])


async def _refreshing_client(srv: ServerProcess, access: str, refresh: str) -> None:
    async with ws_connect(srv, access) as ws:
        old_expiry = (await ok(ws, PkgID.WHOAMI))["expires_at"]
        notice = await _expiring_notice(ws)
        assert time.time() < old_expiry  # the notice comes before the token expires
        assert 0 < notice["expires_in"] <= NOTICE + 0.5 and notice["expires_at"] == old_expiry
        status, tokens = await asyncio.to_thread(srv.post, "/refresh", {"refresh_token": refresh})
        assert status == 200, tokens
        renewed = await ok(ws, PkgID.AUTH_REFRESH, {"token": tokens["access_token"]})
        assert renewed["expires_at"] > old_expiry
        # Past the old expiry the socket is still open and acts as the same user.
        await asyncio.sleep(max(0.0, old_expiry - time.time()) + 1.0)
        me = await ok(ws, PkgID.WHOAMI)
        assert me["user"] == "admin" and me["expires_at"] == renewed["expires_at"]


async def _lapsing_client(srv: ServerProcess, access: str, stranger: str) -> None:
    async with ws_connect(srv, access) as ws:
        # A token for somebody else is refused and changes nothing.
        resp = await call(ws, PkgID.AUTH_REFRESH, {"token": stranger})
        assert resp["status_code"] == RSPCode.UNAUTHENTICATED and "another user" in resp["data"]["msg"]
        resp = await call(ws, PkgID.AUTH_REFRESH, {"token": "not-a-token"})
        assert resp["status_code"] == RSPCode.UNAUTHENTICATED
        assert (await ok(ws, PkgID.WHOAMI))["user"] == "admin"
        await _expiring_notice(ws)
        assert await expect_close(ws, timeout=NOTICE + 5) == CloseCode.TOKEN_EXPIRED


async def test_expiring_notice_refresh_in_band_and_close_4010(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    srv = redis_server(
        pg_url, redis_url, redis_prefix, ACCESS_TOKEN_TTL=str(TTL), AUTH_EXPIRING_NOTICE=str(NOTICE)
    )
    with servers(srv):
        other = await acreate_user(pg_url, {"default": "viewer"})
        stranger = srv.login(other, PASSWORD)
        first = srv.post("/login", {"username": "admin", "password": "admin-test-password"})[1]
        second = srv.post("/login", {"username": "admin", "password": "admin-test-password"})[1]
        await asyncio.gather(
            _refreshing_client(srv, first["access_token"], first["refresh_token"]),
            _lapsing_client(srv, second["access_token"], stranger),
        )


async def test_a_refresh_with_the_same_expiry_does_not_repeat_the_notice(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """AUTH_REFRESH with a token that ends when the current one does keeps the timers: the 904
    already sent is not sent again (a client answering each 904 with a refresh would loop)."""
    srv = redis_server(
        pg_url, redis_url, redis_prefix, ACCESS_TOKEN_TTL=str(TTL), AUTH_EXPIRING_NOTICE=str(NOTICE)
    )
    with servers(srv):
        access = srv.post("/login", {"username": "admin", "password": "admin-test-password"})[1][
            "access_token"
        ]
        async with ws_connect(srv, access) as ws:
            expiry = (await _expiring_notice(ws))["expires_at"]
            same = await ok(ws, PkgID.AUTH_REFRESH, {"token": access})
            assert same["expires_at"] == expiry
            seen = []
            try:
                async with asyncio.timeout(NOTICE + 5):
                    while True:
                        seen.append(json.loads(await ws.recv()).get("pkg_id"))
            except websockets.ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == CloseCode.TOKEN_EXPIRED
            assert PkgID.EVENT_AUTH_EXPIRING not in seen

"""Keycloak logout across instances: two servers sharing PostgreSQL and Redis.

The session watch is off here (``KEYCLOAK_INTROSPECT_INTERVAL=0``), so what closes
the other instance's socket and refuses the token there is the revocation sent
over the control topic by ``POST /logout``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
import websockets

from app.protocol import CloseCode, PkgID
from tests import services
from tests.oidc_server import OIDCServer
from tests.server import ServerProcess, expect_close, ok, ws_connect

PASSWORD = "kc-test-password"


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[OIDCServer, ServerProcess, ServerProcess]]:
    with OIDCServer() as idp:
        env = {
            "KEYCLOAK_BASE_URL": idp.base_url,
            "KEYCLOAK_REALM": idp.realm,
            "KEYCLOAK_CLIENT_ID": idp.client_id,
            "KEYCLOAK_INTROSPECT_INTERVAL": "0",
            "REDIS_URL": services.redis_test_url(),
            "REDIS_PREFIX": f"wptest:{uuid.uuid4().hex[:10]}:",
        }
        db = services.create_pg_database()
        first = ServerProcess(db, env=env).start()
        second = ServerProcess(db, env=env)
        second._migrated = True  # same database, already migrated by the first
        try:
            second.start()
            yield idp, first, second
        finally:
            second.stop()
            first.stop()


async def test_logout_on_one_instance_ends_the_session_on_the_other(
    cluster: tuple[OIDCServer, ServerProcess, ServerProcess],
) -> None:
    idp, first, second = cluster
    user = f"kc-{uuid.uuid4().hex[:8]}"
    idp.add_user(user, PASSWORD, groups=["/tenants/default/viewer"])
    status, tokens = first.post("/login", {"username": user, "password": PASSWORD})
    assert status == 200, tokens
    async with ws_connect(second, tokens["access_token"]) as ws:
        assert (await ok(ws, PkgID.WHOAMI))["user"] == user
        assert first.post("/logout", {"refresh_token": tokens["refresh_token"]})[0] == 200
        assert await expect_close(ws, timeout=10) == CloseCode.AUTH_FAILED
    # The access token has not expired, but the other instance now refuses it at the handshake.
    async with ws_connect(second, tokens["access_token"]) as ws:
        try:
            await ws.send(json.dumps({"pkg_id": PkgID.PING, "req_id": str(uuid.uuid4()), "data": {}}))
            async with asyncio.timeout(10):
                while json.loads(await ws.recv()).get("pkg_id") != PkgID.PING:
                    pass
            pytest.fail("the logged-out session opened a connection on the other instance")
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == CloseCode.AUTH_FAILED

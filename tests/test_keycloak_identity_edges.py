"""Keycloak identity edges end to end (real server on PostgreSQL, test OIDC server):
a realm administrator without tenant groups, and a key rotation inside the JWKS
refresh bound.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import pytest

from app.protocol import CloseCode, PkgID, RSPCode
from tests import services
from tests.oidc_server import OIDCServer
from tests.server import ServerProcess, call, ok, ws_connect

PASSWORD = "kc-test-password"
REFRESH_BOUND = 3.0  # KEYCLOAK_JWKS_MIN_REFRESH_INTERVAL for these tests


@pytest.fixture(scope="module")
def idp() -> Iterator[OIDCServer]:
    with OIDCServer() as server:
        yield server


@pytest.fixture(scope="module")
def kc_server(idp: OIDCServer) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        services.create_pg_database(),
        env={
            "KEYCLOAK_BASE_URL": idp.base_url,
            "KEYCLOAK_REALM": idp.realm,
            "KEYCLOAK_CLIENT_ID": idp.client_id,
            "KEYCLOAK_TIMEOUT": "2",
            "KEYCLOAK_JWKS_MIN_REFRESH_INTERVAL": str(REFRESH_BOUND),
            "KEYCLOAK_INTROSPECT_INTERVAL": "0",
            "RATE_LIMIT_PER_MINUTE": "100000",
            "RATE_LIMIT_BURST": "10000",
        },
    )
    srv.start()
    yield srv
    srv.stop()


def new_user(idp: OIDCServer, **kwargs: list[str]) -> str:
    name = f"kc-{uuid.uuid4().hex[:8]}"
    idp.add_user(name, PASSWORD, **kwargs)  # type: ignore[arg-type]
    return name


def access_token(srv: ServerProcess, username: str) -> str:
    status, body = srv.post("/login", {"username": username, "password": PASSWORD})
    assert status == 200, (status, body)
    return str(body["access_token"])


async def accepted(srv: ServerProcess, token: str) -> int | None:
    """None when the handshake is accepted (PING answered), else the close code."""
    import websockets

    try:
        async with ws_connect(srv, token) as ws:
            await ok(ws, PkgID.PING)
            return None
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def test_realm_admin_without_groups_creates_the_first_tenant(
    idp: OIDCServer, kc_server: ServerProcess
) -> None:
    admin = new_user(idp, realm_roles=["admin"])
    token = access_token(kc_server, admin)
    async with ws_connect(kc_server, token) as ws:
        assert (await ok(ws, PkgID.PING))["pong"] is True
        me = await ok(ws, PkgID.WHOAMI)
        assert me["platform_admin"] is True and me["roles"] == [] and me["auth"] == "keycloak"
        assert (await ok(ws, PkgID.AUTH_REFRESH, {"token": access_token(kc_server, admin)}))["roles"] == []
        slug = f"kc-{uuid.uuid4().hex[:8]}"
        assert (await ok(ws, PkgID.TENANT_CREATE, {"slug": slug, "name": "First"}))["role"] == "owner"
        assert slug in {t["slug"] for t in await ok(ws, PkgID.TENANT_LIST, {"per_page": 100})}
        denied = await call(ws, PkgID.MONITOR_LIST, {})
        assert denied["status_code"] == RSPCode.PERMISSION_DENIED
    async with ws_connect(kc_server, token, tenant=slug) as ws:
        assert (await ok(ws, PkgID.WHOAMI))["roles"] == ["owner"]


async def test_key_rotation_inside_the_refresh_bound_waits_for_the_next_fetch(
    idp: OIDCServer, kc_server: ServerProcess
) -> None:
    user = new_user(idp, groups=["/tenants/default/viewer"])
    # A made-up key id makes the server fetch the key set now, and is refused after it.
    assert await accepted(kc_server, idp.issue_token(user, kid="made-up")) == CloseCode.AUTH_FAILED
    fetched_at, hits = time.monotonic(), idp.jwks_hits
    # Keycloak rotates; the first tokens with the new key arrive inside the bound.
    new_kid = idp.rotate_key(keep_old=True)
    tokens = [access_token(kc_server, user) for _ in range(5)]
    assert all(json.loads(_b64(t.split(".")[0]))["kid"] == new_kid for t in tokens)
    assert time.monotonic() - fetched_at < REFRESH_BOUND
    results = await asyncio.gather(*(accepted(kc_server, t) for t in tokens))
    assert results == [None] * 5  # accepted, not 4001
    assert idp.jwks_hits == hits + 1  # the waiting handshakes shared one fetch
    assert time.monotonic() - fetched_at < REFRESH_BOUND + 5  # waited at most about one bound
    # A key still unknown after the fetch it waited for is refused.
    assert await accepted(kc_server, idp.issue_token(user, kid="still-made-up")) == CloseCode.AUTH_FAILED


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

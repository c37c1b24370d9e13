"""Keycloak mode end to end: a real server subprocess against the test OIDC server.

The server is started with ``KEYCLOAK_BASE_URL`` pointing at ``tests.oidc_server``;
everything goes through HTTP and real WebSockets, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from app.protocol import CloseCode, PkgID, RSPCode
from tests import services
from tests.oidc_server import OIDCServer, new_rsa_key
from tests.server import ServerProcess, call, expect_close, ok, sqlite_url, ws_connect

PASSWORD = "kc-test-password"
# Timing-driven tests exercise the protocol, not storage: one backend is enough.
one_backend = pytest.mark.parametrize("kc_server", ["sqlite"], indirect=True)
EXPIRING_NOTICE = 2  # seconds before expiry that 904 is sent
INTROSPECT_INTERVAL = 1


@pytest.fixture(scope="module")
def idp() -> Iterator[OIDCServer]:
    with OIDCServer() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def kc_server(request: pytest.FixtureRequest, idp: OIDCServer) -> Iterator[ServerProcess]:
    url = sqlite_url() if request.param == "sqlite" else services.create_pg_database()
    srv = ServerProcess(
        url,
        env={
            "KEYCLOAK_BASE_URL": idp.base_url,
            "KEYCLOAK_REALM": idp.realm,
            "KEYCLOAK_CLIENT_ID": idp.client_id,
            "KEYCLOAK_TIMEOUT": "1.5",
            "KEYCLOAK_JWKS_MIN_REFRESH_INTERVAL": "0.5",
            "KEYCLOAK_INTROSPECT_INTERVAL": str(INTROSPECT_INTERVAL),
            "AUTH_EXPIRING_NOTICE": str(EXPIRING_NOTICE),
            "RATE_LIMIT_PER_MINUTE": "100000",
            "RATE_LIMIT_BURST": "10000",
            "WS_MESSAGE_RATE_LIMIT": "100000",
        },
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def new_user(
    idp: OIDCServer, *, groups: list[str] | None = None, realm_roles: list[str] | None = None
) -> str:
    name = f"kc-{uuid.uuid4().hex[:8]}"
    idp.add_user(name, PASSWORD, realm_roles=realm_roles, groups=groups)
    return name


def login(srv: ServerProcess, username: str) -> dict[str, Any]:
    status, body = srv.post("/login", {"username": username, "password": PASSWORD})
    assert status == 200, (status, body)
    return body


async def next_event(ws: ClientConnection, pkg_id: int, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("pkg_id") == pkg_id and msg.get("req_id") is None:
                return dict(msg)


async def handshake_close_code(srv: ServerProcess, token: str, *, tenant: str | None = None) -> int | None:
    """The close code of a connection refused at the handshake; None if it was accepted.

    A PING goes out at once: an accepted connection answers it (even if something
    closes it later), a refused one closes without answering.
    """
    async with ws_connect(srv, token, tenant=tenant) as ws:
        try:
            await ws.send(json.dumps({"pkg_id": PkgID.PING, "req_id": str(uuid.uuid4()), "data": {}}))
            async with asyncio.timeout(10):
                while True:
                    if json.loads(await ws.recv()).get("pkg_id") == PkgID.PING:
                        return None
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None


# ---------------------------------------------------------------- login and handshake


async def test_login_connect_whoami(idp: OIDCServer, kc_server: ServerProcess) -> None:
    user = new_user(idp, groups=["/tenants/default/editor"])
    tokens = login(kc_server, user)
    assert set(tokens) == {"access_token", "refresh_token", "expires_in", "refresh_expires_in", "token_type"}
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == idp.access_token_lifespan
    certs_before = idp.jwks_hits
    async with ws_connect(kc_server, tokens["access_token"]) as ws:
        me = await ok(ws, PkgID.WHOAMI)
    assert me["user"] == user
    assert me["tenant"] == "default" and me["roles"] == ["editor"]
    assert me["auth"] == "keycloak" and me["platform_admin"] is False
    assert idp.jwks_hits == certs_before  # verified locally, no call to the IdP


async def test_realm_admin_role_makes_platform_admin(idp: OIDCServer, kc_server: ServerProcess) -> None:
    user = new_user(idp, realm_roles=["admin"])
    async with ws_connect(kc_server, login(kc_server, user)["access_token"], tenant="default") as ws:
        me = await ok(ws, PkgID.WHOAMI)
    assert me["platform_admin"] is True and me["roles"] == ["owner"]


async def test_wrong_password_is_401(idp: OIDCServer, kc_server: ServerProcess) -> None:
    user = new_user(idp)
    status, body = kc_server.post("/login", {"username": user, "password": "wrong"})
    assert status == 401 and isinstance(body.get("error"), str)


@one_backend
@pytest.mark.parametrize("mode", ["refuse", "hang"])
async def test_idp_down_at_login_is_503_not_a_hang(
    idp: OIDCServer, kc_server: ServerProcess, mode: str
) -> None:
    user = new_user(idp)
    idp.set_down(True, mode=mode)  # type: ignore[arg-type]
    try:
        started = time.monotonic()
        status, body = await asyncio.to_thread(
            kc_server.post, "/login", {"username": user, "password": PASSWORD}
        )
        elapsed = time.monotonic() - started
    finally:
        idp.set_down(False)
    assert status == 503, body
    assert "unavailable" in body["error"]
    assert elapsed < 5.0  # bounded by KEYCLOAK_TIMEOUT (1.5 s), never the client's 10 s
    assert login(kc_server, user)["access_token"]


async def test_connect_needs_no_idp_once_keys_are_cached(idp: OIDCServer, kc_server: ServerProcess) -> None:
    user = new_user(idp, groups=["/tenants/default/viewer"])
    token = login(kc_server, user)["access_token"]
    idp.set_down(True)
    try:
        async with ws_connect(kc_server, token) as ws:
            assert (await ok(ws, PkgID.WHOAMI))["user"] == user
    finally:
        idp.set_down(False)


# ---------------------------------------------------------------- refused tokens


async def test_expired_token_refused_at_handshake(idp: OIDCServer, kc_server: ServerProcess) -> None:
    user = new_user(idp, groups=["/tenants/default/viewer"])
    now = int(time.time())
    token = idp.issue_token(user, iat=now - 400, exp=now - 60)
    assert await handshake_close_code(kc_server, token) == CloseCode.AUTH_FAILED


@pytest.mark.parametrize(
    "attack", ["foreign-key", "wrong-issuer", "alg-none", "hs256-public-key", "id-token"]
)
async def test_forged_tokens_refused_at_handshake(
    idp: OIDCServer, kc_server: ServerProcess, attack: str
) -> None:
    user = new_user(idp, groups=["/tenants/default/owner"])
    token = {
        "foreign-key": lambda: idp.issue_token(user, key=new_rsa_key()),
        "wrong-issuer": lambda: idp.issue_token(user, iss="http://127.0.0.1:9/realms/watchpost"),
        "alg-none": lambda: idp.issue_token(user, alg="none"),
        "hs256-public-key": lambda: idp.issue_token(user, alg="HS256"),
        "id-token": lambda: idp.issue_token(user, typ="ID"),
    }[attack]()
    assert await handshake_close_code(kc_server, token) == CloseCode.AUTH_FAILED
    async with ws_connect(kc_server, idp.issue_token(user)) as ws:  # the genuine article still works
        assert (await ok(ws, PkgID.WHOAMI))["user"] == user


async def test_key_rotation_accepted_without_restart(idp: OIDCServer, kc_server: ServerProcess) -> None:
    user = new_user(idp, groups=["/tenants/default/viewer"])
    before = login(kc_server, user)["access_token"]
    idp.rotate_key(keep_old=True)
    await asyncio.sleep(0.6)  # past KEYCLOAK_JWKS_MIN_REFRESH_INTERVAL
    after = login(kc_server, user)["access_token"]
    assert json.loads(_b64(after.split(".")[0]))["kid"] == idp.active_kid
    for token in (after, before):
        async with ws_connect(kc_server, token) as ws:
            assert (await ok(ws, PkgID.WHOAMI))["user"] == user


def _b64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# ---------------------------------------------------------------- users and memberships


async def test_groups_seed_memberships_then_table_is_source_of_truth(
    idp: OIDCServer, kc_server: ServerProcess
) -> None:
    user = new_user(idp, groups=["/tenants/default/viewer", "/tenants/no-such-tenant/editor"])
    async with ws_connect(kc_server, login(kc_server, user)["access_token"]) as ws:
        me = await ok(ws, PkgID.WHOAMI)
    assert me["tenant"] == "default" and me["roles"] == ["viewer"]
    admin = new_user(idp, realm_roles=["admin"])
    async with ws_connect(kc_server, login(kc_server, admin)["access_token"], tenant="default") as ws:
        await ok(ws, PkgID.MEMBER_UPDATE, {"user_id": me["user_id"], "role": "editor"})
    # The group still says viewer; the memberships table (editor) wins.
    async with ws_connect(kc_server, login(kc_server, user)["access_token"]) as ws:
        again = await ok(ws, PkgID.WHOAMI)
    assert again["user_id"] == me["user_id"] and again["roles"] == ["editor"]


async def test_keycloak_user_named_like_local_admin_gets_no_local_rights(
    idp: OIDCServer, kc_server: ServerProcess
) -> None:
    idp.add_user("admin", PASSWORD)  # same name as the bootstrapped local administrator
    token = login(kc_server, "admin")["access_token"]
    assert await handshake_close_code(kc_server, token, tenant="default") == CloseCode.NOT_A_MEMBER


# ---------------------------------------------------------------- refresh on a live socket


@one_backend
async def test_expiring_notice_then_auth_refresh_extends(idp: OIDCServer, kc_server: ServerProcess) -> None:
    user = new_user(idp, groups=["/tenants/default/viewer"])
    expires = int(time.time()) + EXPIRING_NOTICE + 2
    async with ws_connect(kc_server, idp.issue_token(user, exp=expires)) as ws:
        event = await next_event(ws, PkgID.EVENT_AUTH_EXPIRING, timeout=10)
        assert time.time() < expires
        assert event["data"]["expires_at"] == pytest.approx(expires)
        fresh = login(kc_server, user)["access_token"]
        result = await ok(ws, PkgID.AUTH_REFRESH, {"token": fresh})
        assert result["expires_in"] > 200
        await asyncio.sleep(max(0.0, expires + 1 - time.time()))  # past the old expiry
        assert (await ok(ws, PkgID.PING))["pong"] is True
        assert (await ok(ws, PkgID.WHOAMI))["user"] == user


@one_backend
async def test_no_refresh_closes_4010(idp: OIDCServer, kc_server: ServerProcess) -> None:
    user = new_user(idp, groups=["/tenants/default/viewer"])
    async with ws_connect(kc_server, idp.issue_token(user, exp=int(time.time()) + EXPIRING_NOTICE + 1)) as ws:
        await next_event(ws, PkgID.EVENT_AUTH_EXPIRING, timeout=10)
        assert await expect_close(ws, timeout=10) == CloseCode.TOKEN_EXPIRED


async def test_refresh_with_another_subject_is_refused(idp: OIDCServer, kc_server: ServerProcess) -> None:
    alice = new_user(idp, groups=["/tenants/default/viewer"])
    mallory = new_user(idp, groups=["/tenants/default/owner"])
    async with ws_connect(kc_server, login(kc_server, alice)["access_token"]) as ws:
        resp = await call(ws, PkgID.AUTH_REFRESH, {"token": login(kc_server, mallory)["access_token"]})
        assert resp["status_code"] == RSPCode.UNAUTHENTICATED
        me = await ok(ws, PkgID.WHOAMI)
    assert me["user"] == alice and me["roles"] == ["viewer"]


async def test_role_change_in_refreshed_token_applies_to_next_request(
    idp: OIDCServer, kc_server: ServerProcess
) -> None:
    user = new_user(idp, groups=["/tenants/default/viewer"])
    async with ws_connect(kc_server, login(kc_server, user)["access_token"]) as ws:
        assert (await ok(ws, PkgID.WHOAMI))["platform_admin"] is False
        idp.user(user).realm_roles.append("admin")
        await ok(ws, PkgID.AUTH_REFRESH, {"token": login(kc_server, user)["access_token"]})
        assert (await ok(ws, PkgID.WHOAMI))["platform_admin"] is True


async def test_http_refresh_passes_through(idp: OIDCServer, kc_server: ServerProcess) -> None:
    user = new_user(idp, groups=["/tenants/default/viewer"])
    tokens = login(kc_server, user)
    status, fresh = kc_server.post("/refresh", {"refresh_token": tokens["refresh_token"]})
    assert status == 200 and fresh["access_token"] != tokens["access_token"]
    assert kc_server.post("/refresh", {"refresh_token": "garbage"})[0] == 401


# ---------------------------------------------------------------- revocation


async def test_logout_closes_live_socket_and_refuses_the_session(
    idp: OIDCServer, kc_server: ServerProcess
) -> None:
    user = new_user(idp, groups=["/tenants/default/viewer"])
    tokens = login(kc_server, user)
    async with ws_connect(kc_server, tokens["access_token"]) as ws:
        await ok(ws, PkgID.PING)
        assert kc_server.post("/logout", {"refresh_token": tokens["refresh_token"]})[0] == 200
        assert await expect_close(ws, timeout=5) == CloseCode.AUTH_FAILED
    # The token has not expired, but its session has.
    assert await handshake_close_code(kc_server, tokens["access_token"]) == CloseCode.AUTH_FAILED
    assert kc_server.post("/refresh", {"refresh_token": tokens["refresh_token"]})[0] == 401


@one_backend
async def test_keycloak_side_logout_closes_socket_within_introspection_interval(
    idp: OIDCServer, kc_server: ServerProcess
) -> None:
    user = new_user(idp, groups=["/tenants/default/viewer"])
    token = login(kc_server, user)["access_token"]
    async with ws_connect(kc_server, token) as ws:
        await ok(ws, PkgID.PING)
        idp.revoke_session(username=user)
        started = time.monotonic()
        assert await expect_close(ws, timeout=10) == CloseCode.AUTH_FAILED
        assert time.monotonic() - started < INTROSPECT_INTERVAL + 5
    assert await handshake_close_code(kc_server, token) == CloseCode.AUTH_FAILED

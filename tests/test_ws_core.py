"""The /web endpoint end to end: real uvicorn, real sockets, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
import websockets

from app.protocol import CloseCode, PkgID, RSPCode
from tests.server import ServerProcess, call, expect_close, new_req_id, ok, wait_for_response, ws_connect


async def test_ping_whoami_server_info(server: ServerProcess, admin_token: str) -> None:
    async with ws_connect(server, admin_token) as ws:
        assert ws.subprotocol == "watchpost.v1"
        pong = await ok(ws, PkgID.PING)
        assert pong["pong"] is True and abs(pong["server_time"] - time.time()) < 60
        me = await ok(ws, PkgID.WHOAMI)
        assert me["user"] == "admin" and me["tenant"] == "default" and me["roles"] == ["owner"]
        info = await ok(ws, PkgID.SERVER_INFO)
        assert info["protocol"] == 1
        ids = {p["pkg_id"]: p["name"] for p in info["packages"]}
        assert ids[1] == "PING" and ids[700] == "TOKEN_CREATE"


@pytest.mark.parametrize(
    ("frame", "req_id", "needle"),
    [
        ("{not json", None, "not valid JSON"),
        ("[]", None, "JSON object"),
        (json.dumps({"pkg_id": 1, "req_id": "nope"}), None, "req_id"),
        (
            json.dumps({"pkg_id": "one", "req_id": "11111111-1111-1111-1111-111111111111"}),
            "11111111-1111-1111-1111-111111111111",
            "pkg_id",
        ),
    ],
)
async def test_malformed_frames_get_one_answer_and_keep_the_socket(
    server: ServerProcess, admin_token: str, frame: str, req_id: str | None, needle: str
) -> None:
    async with ws_connect(server, admin_token) as ws:
        await ws.send(frame)
        resp = json.loads(await ws.recv())
        assert resp["status_code"] == RSPCode.INVALID_DATA
        assert resp["req_id"] == req_id
        assert needle in resp["data"]["msg"]
        await ok(ws, PkgID.PING)  # still open


async def test_binary_frame_is_handled_like_text(server: ServerProcess, admin_token: str) -> None:
    async with ws_connect(server, admin_token) as ws:
        rid = new_req_id()
        await ws.send(json.dumps({"pkg_id": 1, "req_id": rid}).encode())
        resp = await wait_for_response(ws, rid)
        assert resp["status_code"] == 0


async def test_unknown_pkg_id(server: ServerProcess, admin_token: str) -> None:
    async with ws_connect(server, admin_token) as ws:
        resp = await call(ws, 555)
        assert resp["status_code"] == RSPCode.UNKNOWN_PKG_ID and "555" in resp["data"]["msg"]
        resp = await call(ws, 904)  # event ids are server -> client only
        assert resp["status_code"] == RSPCode.UNKNOWN_PKG_ID


async def test_schema_violation_lists_paths(server: ServerProcess, admin_token: str) -> None:
    async with ws_connect(server, admin_token) as ws:
        resp = await call(ws, PkgID.TOKEN_CREATE, {"name": 5, "bogus": 1})
        assert resp["status_code"] == RSPCode.INVALID_DATA
        errors = resp["data"]["errors"]
        paths = {e["path"] for e in errors}
        assert "name" in paths
        assert any("role" in e["msg"] for e in errors)  # required
        assert any("bogus" in e["msg"] for e in errors)  # additional property


async def test_oversized_frame_closes_1009(server: ServerProcess, admin_token: str) -> None:
    async with ws_connect(server, admin_token) as ws:
        big = json.dumps({"pkg_id": 1, "req_id": new_req_id(), "data": {"x": "a" * 70_000}})
        await ws.send(big)
        assert await expect_close(ws) == CloseCode.MESSAGE_TOO_BIG
    async with ws_connect(server, admin_token) as ws:  # the server is fine
        await ok(ws, PkgID.PING)


async def test_concurrent_requests_match_by_req_id(server: ServerProcess, admin_token: str) -> None:
    async with ws_connect(server, admin_token) as ws:
        ids = [new_req_id() for _ in range(40)]
        for i, rid in enumerate(ids):
            pkg = PkgID.PING if i % 2 else PkgID.WHOAMI
            await ws.send(json.dumps({"pkg_id": pkg, "req_id": rid, "data": {}}))
        seen = {}
        async with asyncio.timeout(10):
            while len(seen) < len(ids):
                msg = json.loads(await ws.recv())
                seen[msg["req_id"]] = msg
        assert set(seen) == set(ids)
        assert all(m["status_code"] == 0 for m in seen.values())
        assert all(("pong" in seen[r]["data"]) == bool(i % 2) for i, r in enumerate(ids))


@pytest.mark.parametrize("how", ["header", "subprotocol", "query"])
async def test_three_ways_to_present_a_token(server: ServerProcess, admin_token: str, how: str) -> None:
    url = server.ws_url
    kwargs: dict[str, object] = {"subprotocols": ["watchpost.v1"]}
    if how == "header":
        kwargs["additional_headers"] = {"Authorization": f"Bearer {admin_token}"}
    elif how == "subprotocol":
        kwargs["subprotocols"] = ["watchpost.v1", f"bearer.{admin_token}"]
    else:
        url += f"?token={admin_token}"
    async with websockets.connect(url, **kwargs) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "watchpost.v1"
        assert (await ok(ws, PkgID.WHOAMI))["user"] == "admin"
    assert admin_token not in server.log_text()


@pytest.mark.parametrize(
    "token", [None, "garbage", "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "wpt_doesnotexist"]
)
async def test_bad_credentials_close_4001(server: ServerProcess, token: str | None) -> None:
    async with ws_connect(server, token) as ws:
        assert await expect_close(ws) == CloseCode.AUTH_FAILED


async def test_expired_token_closes_4001(server: ServerProcess) -> None:
    import jwt

    from tests.server import JWT_SECRET

    now = int(time.time())
    token = jwt.encode(
        {"iss": "watchpost", "sub": "1", "sid": "1", "typ": "access", "iat": now - 100, "exp": now - 60},
        JWT_SECRET,
        algorithm="HS256",
    )
    async with ws_connect(server, token) as ws:
        assert await expect_close(ws) == CloseCode.AUTH_FAILED


async def test_forged_signature_closes_4001(server: ServerProcess) -> None:
    import jwt

    now = int(time.time())
    token = jwt.encode(
        {"iss": "watchpost", "sub": "1", "sid": "1", "typ": "access", "iat": now, "exp": now + 600},
        "another-secret-" + "y" * 40,
        algorithm="HS256",
    )
    async with ws_connect(server, token) as ws:
        assert await expect_close(ws) == CloseCode.AUTH_FAILED


async def test_unknown_tenant_closes_4003(server: ServerProcess) -> None:
    from tests.fixtures import acreate_user, unique

    user = await acreate_user(server.database_url, {unique("t"): "viewer"})
    token = server.login(user, "user-test-password")
    async with ws_connect(server, token, tenant="default") as ws:
        assert await expect_close(ws) == CloseCode.NOT_A_MEMBER


async def test_logout_refuses_new_connections(server: ServerProcess) -> None:
    status, body = server.post("/login", {"username": "admin", "password": "admin-test-password"})
    assert status == 200
    access, refresh = body["access_token"], body["refresh_token"]
    async with ws_connect(server, access) as ws:
        await ok(ws, PkgID.PING)
        assert server.post("/logout", {"refresh_token": refresh})[0] == 200
        assert await expect_close(ws) == CloseCode.AUTH_FAILED  # live socket closed at once
    async with ws_connect(server, access) as ws:
        assert await expect_close(ws) == CloseCode.AUTH_FAILED
    assert server.post("/refresh", {"refresh_token": refresh})[0] == 401


async def test_refresh_rotates(server: ServerProcess) -> None:
    status, body = server.post("/login", {"username": "admin", "password": "admin-test-password"})
    status, new = server.post("/refresh", {"refresh_token": body["refresh_token"]})
    assert status == 200 and new["refresh_token"] != body["refresh_token"]
    assert server.post("/refresh", {"refresh_token": body["refresh_token"]})[0] == 401
    async with ws_connect(server, new["access_token"]) as ws:
        await ok(ws, PkgID.PING)


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", {"username": "admin"}, {"username": 1, "password": "x"}]
)
def test_login_bad_input_is_400(server: ServerProcess, body: object) -> None:
    status, resp = server.post("/login", body)
    assert status == 400 and "username" in resp["error"]


def test_login_wrong_password_is_401_json(server: ServerProcess) -> None:
    status, resp = server.post("/login", {"username": "admin", "password": "wrong"})
    assert status == 401 and resp == {"error": "wrong username or password"}
    status, resp = server.post("/login", {"username": f"ghost-{uuid.uuid4().hex}", "password": "x"})
    assert status == 401


def test_health_and_metrics(server: ServerProcess) -> None:
    status, body = server.get("/health")
    assert status == 200 and json.loads(body)["database"] == "ok"
    status, body = server.get("/health/ready")
    assert status == 200 and json.loads(body)["status"] == "ready"
    status, body = server.get("/metrics")
    text = body.decode()
    assert status == 200
    for family in (
        "ws_connections_active",
        "ws_messages_received_total",
        "ws_messages_sent_total",
        "ws_message_processing_duration_seconds",
        "http_requests_total",
    ):
        assert family in text

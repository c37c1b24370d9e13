"""Limits at their edge: handler deadline, in-flight cap, login rate limit."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from app.protocol import PkgID, RSPCode
from tests.server import ServerProcess, call, new_req_id, ok, sqlite_url, ws_connect


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

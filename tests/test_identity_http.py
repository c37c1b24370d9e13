"""Identity edges over real HTTP and WebSockets on PostgreSQL: forwarded addresses, login
limits, body and password caps, control characters in credentials and handshakes.

Distinct peers are real: every address in 127.0.0.0/8 is loopback on Linux, so the
client binds its socket to 127.0.0.N and the server sees that peer.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select as sql_select
from sqlmodel import col
from websockets.asyncio.client import connect

from app.models.audit import AuditEntry
from app.protocol import SUBPROTOCOL, CloseCode, PkgID
from app.storage.db import Database
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ADMIN_PASSWORD, ServerProcess, expect_close, ok

BURST = 3  # RATE_LIMIT_BURST: failed logins per (username, address) before 429
ADDRESS_BURST = BURST * 5  # the per-address bucket (app.http.LOGIN_ADDRESS_SCALE)
PROXY = "127.0.0.2"
LIMITS = {
    "RATE_LIMIT_BURST": str(BURST),
    "RATE_LIMIT_PER_MINUTE": "1",  # no refill worth mentioning during a test
    "WS_MESSAGE_RATE_LIMIT": "100000",
}


@pytest.fixture(scope="module")
def plain() -> Iterator[ServerProcess]:
    """Default FORWARDED_ALLOW_IPS (nobody is a trusted proxy)."""
    srv = ServerProcess(services.create_pg_database(), env=LIMITS)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def proxied() -> Iterator[ServerProcess]:
    """127.0.0.2 is a trusted proxy."""
    srv = ServerProcess(services.create_pg_database(), env={**LIMITS, "FORWARDED_ALLOW_IPS": PROXY})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin_token(plain: ServerProcess) -> str:
    status, tokens = post(
        plain, "/login", {"username": "admin", "password": ADMIN_PASSWORD}, source="127.0.0.55"
    )
    assert status == 200, tokens
    return str(tokens["access_token"])


def post(
    srv: ServerProcess, path: str, body: Any, *, source: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("POST", path, raw, {"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def login(srv: ServerProcess, username: str, password: str, *, source: str, via: str | None = None) -> int:
    headers = {"x-forwarded-for": via} if via else None
    status, _ = post(
        srv, "/login", {"username": username, "password": password}, source=source, headers=headers
    )
    return status


async def audit_addrs(srv: ServerProcess, actor: str, action: str) -> list[str | None]:
    db = Database(srv.database_url)
    try:
        async with db.session() as s:
            rows = await s.execute(
                sql_select(col(AuditEntry.client_addr))
                .where(col(AuditEntry.actor) == actor, col(AuditEntry.action) == action)
                .order_by(col(AuditEntry.id))
            )
            return list(rows.scalars())
    finally:
        await db.close()


async def create_tenant_from(srv: ServerProcess, token: str, *, source: str, via: str) -> None:
    """An audited package sent over a socket from ``source`` claiming to be ``via``."""
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": via}
    async with connect(
        srv.ws_url, additional_headers=headers, subprotocols=[SUBPROTOCOL], local_addr=(source, 0)
    ) as ws:  # type: ignore[list-item]
        await ok(ws, PkgID.TENANT_CREATE, {"slug": unique("fw"), "name": "Forwarded"})


# ---------------------------------------------------------------- forwarded addresses


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(plain: ServerProcess) -> None:
    # 127.0.0.1 is the peer uvicorn itself would trust by default; nobody is trusted here.
    user = await acreate_user(plain.database_url, {}, platform_admin=True)
    assert login(plain, user, "wrong", source="127.0.0.1", via="198.51.100.9") == 401
    assert await audit_addrs(plain, f"user:{user}", "LOGIN") == ["127.0.0.1"]
    token = plain.login(user, PASSWORD)
    await create_tenant_from(plain, token, source="127.0.0.1", via="198.51.100.10")
    assert await audit_addrs(plain, f"user:{user}", "TENANT_CREATE") == ["127.0.0.1"]
    # A fresh spoofed address per attempt does not escape the per-address limit.
    statuses = [
        login(plain, unique("nobody"), "wrong", source="127.0.0.1", via=f"198.51.100.{i}")
        for i in range(ADDRESS_BURST)
    ]
    assert 429 in statuses, statuses


async def test_forwarded_for_from_a_trusted_proxy_is_used(proxied: ServerProcess) -> None:
    user = await acreate_user(proxied.database_url, {}, platform_admin=True)
    # The client is the right-most address that is not a trusted proxy.
    assert login(proxied, user, "wrong", source=PROXY, via="192.0.2.1, 203.0.113.7") == 401
    assert login(proxied, user, "wrong", source="127.0.0.3", via="203.0.113.8") == 401
    assert await audit_addrs(proxied, f"user:{user}", "LOGIN") == ["203.0.113.7", "127.0.0.3"]
    token = proxied.login(user, PASSWORD)
    await create_tenant_from(proxied, token, source=PROXY, via="203.0.113.9")
    await create_tenant_from(proxied, token, source="127.0.0.3", via="203.0.113.10")
    assert await audit_addrs(proxied, f"user:{user}", "TENANT_CREATE") == ["203.0.113.9", "127.0.0.3"]
    # Limits follow the forwarded client: one client's failures do not block another's.
    victim = await acreate_user(proxied.database_url, {unique("t"): "viewer"})
    for _ in range(BURST):
        assert login(proxied, victim, "wrong", source=PROXY, via="203.0.113.20") == 401
    assert login(proxied, victim, PASSWORD, source=PROXY, via="203.0.113.20") == 429
    assert login(proxied, victim, PASSWORD, source=PROXY, via="203.0.113.21") == 200


# ---------------------------------------------------------------- login limits


async def test_failed_logins_from_one_address_do_not_lock_the_user_out_elsewhere(
    plain: ServerProcess,
) -> None:
    victim = await acreate_user(plain.database_url, {unique("t"): "viewer"})
    for _ in range(BURST):
        assert login(plain, victim, "wrong", source="127.0.0.41") == 401
    assert login(plain, victim, PASSWORD, source="127.0.0.41") == 429
    assert login(plain, victim, PASSWORD, source="127.0.0.42") == 200


async def test_one_address_is_limited_across_usernames(plain: ServerProcess) -> None:
    statuses = [login(plain, unique("spray"), "wrong", source="127.0.0.43") for _ in range(ADDRESS_BURST + 1)]
    assert statuses == [401] * ADDRESS_BURST + [429]
    status, body = post(plain, "/login", {"username": "x", "password": "y"}, source="127.0.0.43")
    assert status == 429 and body["retry_after_ms"] > 0 and "retry in" in body["error"]


# ---------------------------------------------------------------- body and password caps


def peak_rss_kib(srv: ServerProcess) -> int:
    """The server's peak resident memory so far (VmHWM): a body read whole and freed
    again leaves its mark here even when the current RSS is back down."""
    assert srv.proc is not None
    for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def send_oversized_login(srv: ServerProcess, *, chunked: bool, total: int, source: str) -> int:
    """POST /login with a ``total``-byte body, stopping once the server answers; its status."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=20, source_address=(source, 0))
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = f"POST /login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    piece = b'{"username": "a", "password": "' + b"x" * (64 * 1024 - 32)
    answer = b""
    try:
        sock.sendall(head.encode())
        sent = 0
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # answered early: stop sending
            data = piece[: total - sent]
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            sent += len(data)
        if chunked and sent >= total:
            sock.sendall(b"0\r\n\r\n")
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_login_body_is_refused_unread(plain: ServerProcess, chunked: bool) -> None:
    before = peak_rss_kib(plain)
    total = 96 * 1024 * 1024
    assert send_oversized_login(plain, chunked=chunked, total=total, source="127.0.0.51") == 413
    await asyncio.sleep(0.2)
    grown = peak_rss_kib(plain) - before
    assert grown < 16 * 1024, f"server peak memory grew by {grown} KiB for a refused body"
    status, body = post(
        plain, "/login", b'{"username": "a", "password": "' + b"x" * 20000 + b'"}', source="127.0.0.51"
    )
    assert status == 413 and "larger than 16384 bytes" in body["error"]


async def test_password_longer_than_the_cap_is_refused_before_hashing(plain: ServerProcess) -> None:
    user = await acreate_user(plain.database_url, {unique("t"): "viewer"})
    status, body = post(plain, "/login", {"username": user, "password": "p" * 1025}, source="127.0.0.52")
    assert status == 400 and body["error"] == "password is longer than 1024 characters"
    assert login(plain, user, "p" * 1024, source="127.0.0.52") == 401


async def test_deeply_nested_login_body_is_a_400(plain: ServerProcess) -> None:
    status, body = post(plain, "/login", b"[" * 8000 + b"]" * 8000, source="127.0.0.53")
    assert status == 400 and body["error"].startswith("the body is not a JSON object; send JSON")


# ---------------------------------------------------------------- control characters


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/login", {"username": "ad\x00min", "password": "x"}, "username"),
        ("/login", {"username": "admin", "password": "pass\x00word"}, "password"),
        ("/login", {"username": "admin\x1b[2J", "password": "x"}, "username"),
        ("/refresh", {"refresh_token": "wpr_\x00"}, "refresh_token"),
        ("/logout", {"refresh_token": "wpr_\x7f"}, "refresh_token"),
    ],
)
async def test_control_characters_in_credentials_are_a_400(
    plain: ServerProcess, path: str, body: dict[str, str], field: str
) -> None:
    status, answer = post(plain, path, body, source="127.0.0.54")
    assert status == 400, answer
    assert answer["error"].startswith(f"{field} must not contain control characters")


async def handshake_close(srv: ServerProcess, url_tail: str, **kwargs: Any) -> int | None:
    async with connect(srv.ws_url + url_tail, open_timeout=10, **kwargs) as ws:
        return await expect_close(ws)


@pytest.mark.parametrize(
    ("tail", "code"),
    [
        ("?tenant=%00", CloseCode.NOT_A_MEMBER),
        ("?tenant=" + "%C3%A9" * 64, CloseCode.NOT_A_MEMBER),
        ("?tenant=" + "a" * 65, CloseCode.NOT_A_MEMBER),
        ("?tenant=%C3%A9%C3%A9", CloseCode.NOT_A_MEMBER),
    ],
)
async def test_unusable_tenant_in_the_handshake_closes_4003(
    plain: ServerProcess, admin_token: str, tail: str, code: int
) -> None:
    token = admin_token
    assert await handshake_close(plain, tail, additional_headers={"Authorization": f"Bearer {token}"}) == code


@pytest.mark.parametrize(
    "token", ["%00", "abc%00def", "wpt_%00", "eyJ%0A.x.y", "%C3%A9", "wpt_" + "%7F" * 3], ids=str
)
async def test_control_characters_in_a_query_token_close_4001(plain: ServerProcess, token: str) -> None:
    assert await handshake_close(plain, f"?token={token}") == CloseCode.AUTH_FAILED


def raw_handshake(srv: ServerProcess, headers: bytes) -> tuple[int, int | None]:
    """A WebSocket handshake written by hand (websockets' client will not send such headers):
    (HTTP status, close code of the first frame when the upgrade was accepted)."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        sock.sendall(
            b"GET /web HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + headers
            + b"\r\n"
        )
        data = b""
        while True:
            head, _, frames = data.partition(b"\r\n\r\n")
            if (head and not head.startswith(b"HTTP/1.1 101")) or len(frames) >= 4:
                break
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    status = int(head.split(b" ", 2)[1])
    if status != 101:
        return status, None
    assert frames[:1] == b"\x88", frames  # the first frame is a close
    return status, int.from_bytes(frames[2:4], "big")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # The HTTP parser or the WebSocket handshake refuse these before any of our code.
        (b"Sec-WebSocket-Protocol: watchpost.v1, bearer.wpt_\x01\x02\r\n", (400, None)),
        (b"Sec-WebSocket-Protocol: watchpost.v1, bearer.wpt_\xe9\xff\r\n", (400, None)),
        # A header value may carry bytes no token has; the authenticator refuses them.
        (b"Authorization: Bearer wpt_\xe9\xff\r\n", (101, CloseCode.AUTH_FAILED)),
        (b"Authorization: Bearer eyJ\xc3\xa9.e30.x\r\n", (101, CloseCode.AUTH_FAILED)),
    ],
    ids=["subprotocol-controls", "subprotocol-non-ascii", "header-api-token", "header-jwt"],
)
async def test_unusable_handshake_credentials_are_refused_with_a_4xx(
    plain: ServerProcess, headers: bytes, expected: tuple[int, int | None]
) -> None:
    assert raw_handshake(plain, headers) == expected

"""Egress policy (issue 14): CHECK_DENY_NETWORKS and ALERT_DENY_NETWORKS apply to the address
actually connected to, after DNS, on every connection (redirects too).

127.0.0.2 stands in for a private address: on Linux every 127.x address is loopback, so a
receiver bound there is reachable unless the policy refuses it (the policy's own verdicts:
tests/unit/test_egress_policy.py). The first tests drive
app.egress and the check runners directly against real local servers; the rest go through a
real server: CHECK_NOW, the collector, CHANNEL_TEST and outbox deliveries.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from app.alerting.message import Alert
from app.alerting.senders import Transport, make_http_client, send
from app.egress import EgressDenied, EgressPolicy, denied_cause, http_client, open_connection
from app.models.base import utcnow
from app.monitoring.checks import HttpClients, HttpSpec, run_http_check, run_tcp_check
from app.protocol import PkgID
from app.settings import parse_networks
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.kind_targets import DnsTarget
from tests.receivers import HttpReceiver, Reply
from tests.server import ServerProcess, call, ok, sqlite_url, ws_connect
from tests.targets import make_self_signed_cert

PRIVATE = "127.0.0.2"
DENY_PRIVATE = EgressPolicy(parse_networks(f"{PRIVATE}/32"), "CHECK_DENY_NETWORKS")
DENY_LOOPBACK = EgressPolicy(parse_networks("127.0.0.0/8, ::1/128"), "CHECK_DENY_NETWORKS")


@pytest.fixture
def public() -> Iterator[HttpReceiver]:
    with HttpReceiver() as rx:
        yield rx


@pytest.fixture
def private() -> Iterator[HttpReceiver]:
    with HttpReceiver(host=PRIVATE) as rx:
        yield rx


async def test_http_client_refuses_a_denied_address_and_keeps_the_host_name(
    public: HttpReceiver, private: HttpReceiver
) -> None:
    async with http_client(EgressPolicy()) as open_client:
        assert (await open_client.get(private.url + "/")).status_code == 200  # reachable without a policy
    async with http_client(DENY_PRIVATE) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(private.url + "/")
        denied = denied_cause(caught.value)
        assert denied is not None
        assert str(denied) == f"destination {PRIVATE} is blocked by CHECK_DENY_NETWORKS"
        # An allowed name: the socket goes to a checked address, the request still names the host.
        assert (await client.get(f"http://localhost:{public.port}/by-name")).status_code == 200
    assert len(private.requests) == 1
    assert public.requests[-1].headers["host"] == f"localhost:{public.port}"


async def test_tls_still_verifies_and_announces_the_name(tmp_path: Path) -> None:
    cert, key, _ = make_self_signed_cert(tmp_path)  # valid for "localhost" and 127.0.0.1
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    seen_sni: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: seen_sni.append(name)  # type: ignore[assignment,func-returns-value]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        async with http_client(DENY_PRIVATE, verify=trust) as client:
            response = await client.get(f"https://localhost:{port}/")
    finally:
        server.close()
        await server.wait_closed()
    assert response.status_code == 200
    assert seen_sni == ["localhost"]


async def test_a_name_resolving_to_denied_addresses_is_refused(public: HttpReceiver) -> None:
    async with http_client(DENY_LOOPBACK) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get(f"http://localhost:{public.port}/")
    assert "(localhost) is blocked by CHECK_DENY_NETWORKS" in str(denied_cause(caught.value))
    tcp = await run_tcp_check("localhost", public.port, 2.0, DENY_LOOPBACK)
    assert tcp.ok is False and tcp.error is not None
    assert tcp.error.endswith("(localhost) is blocked by CHECK_DENY_NETWORKS"), tcp.error
    with pytest.raises(EgressDenied):
        await open_connection("127.0.0.1", public.port, DENY_LOOPBACK)
    assert public.requests == []
    # The same TCP check without a policy connects.
    assert (await run_tcp_check("localhost", public.port, 2.0, EgressPolicy())).ok is True


async def test_a_redirect_to_a_denied_address_is_refused(public: HttpReceiver, private: HttpReceiver) -> None:
    public.default = Reply(status=301, headers={"location": f"{private.url}/internal"})
    clients = HttpClients(DENY_PRIVATE)
    try:
        outcome = await run_http_check(HttpSpec(url=f"{public.url}/start", timeout=5.0), clients)
    finally:
        await clients.aclose()
    assert outcome.ok is False
    assert (
        outcome.error is not None
        and f"destination {PRIVATE} is blocked by CHECK_DENY_NETWORKS" in outcome.error
    )
    assert [r.path for r in public.requests] == ["/start"] and private.requests == []


async def test_alert_senders_fail_permanently_on_a_denied_destination(private: HttpReceiver) -> None:
    policy = EgressPolicy(parse_networks(f"{PRIVATE}/32"), "ALERT_DENY_NETWORKS")
    transport = Transport(make_http_client(policy), 5.0, egress=policy)
    alert = Alert(monitor_name="api", state="down", at=utcnow(), kind="test")
    try:
        hook = await send("webhook", {"url": f"{private.url}/hook", "headers": {}}, alert, transport)
        mail = await send(
            "email",
            {
                "host": PRIVATE,
                "port": 25,
                "security": "none",
                "from": "wp@example.com",
                "to": ["a@example.com"],
            },
            alert,
            transport,
        )
    finally:
        await transport.http.aclose()
    for result in (hook, mail):
        assert (result.ok, result.permanent) == (False, True), result
        assert result.error == f"destination {PRIVATE} is blocked by ALERT_DENY_NETWORKS; update the channel"
    assert private.requests == []


# ----------------------------------------------------------------------- through the server

FAST = {
    "CHECK_DENY_NETWORKS": f"{PRIVATE}/32",
    "ALERT_DENY_NETWORKS": f"{PRIVATE}/32",
    "COLLECTOR_ENABLED": "true",
    "MONITOR_MIN_INTERVAL": "1",
    "COLLECTOR_TICK": "0.2",
    "COLLECTOR_JITTER": "0.2",
    "DELIVERY_POLL_INTERVAL": "0.1",
    "DELIVERY_BACKOFF_BASE": "0.1",
    "DELIVERY_BACKOFF_CAP": "0.3",
    "DELIVERY_MAX_ATTEMPTS": "4",
    "WS_MESSAGE_RATE_LIMIT": "100000",
}


@pytest.fixture(scope="module")
def guarded() -> Iterator[ServerProcess]:
    srv = ServerProcess(sqlite_url(), env=FAST).start()
    yield srv
    srv.stop()


async def _check_now(ws: ClientConnection, monitor: dict[str, Any]) -> dict[str, Any]:
    return dict((await ok(ws, PkgID.MONITOR_CHECK_NOW, {"monitor": monitor}))["result"])


async def test_check_now_obeys_check_deny_networks(
    guarded: ServerProcess, public: HttpReceiver, private: HttpReceiver
) -> None:
    editor = await acreate_user(guarded.database_url, {unique("t"): "editor"})
    blocked = f"destination {PRIVATE} is blocked by CHECK_DENY_NETWORKS"
    async with ws_connect(guarded, guarded.login(editor, PASSWORD)) as ws:
        direct = await _check_now(ws, {"kind": "http", "url": f"{private.url}/"})
        assert direct["ok"] is False and blocked in direct["error"], direct
        tcp = await _check_now(ws, {"kind": "tcp", "host": PRIVATE, "port": private.port})
        assert tcp["ok"] is False and tcp["error"] == blocked, tcp
        public.script(Reply(status=302, headers={"location": f"{private.url}/hop"}))
        hop = await _check_now(ws, {"kind": "http", "url": f"{public.url}/moved"})
        assert hop["ok"] is False and blocked in hop["error"], hop
        allowed = await _check_now(ws, {"kind": "http", "url": f"{public.url}/fine"})
        assert allowed["ok"] is True, allowed
    assert private.requests == []
    assert [r.path for r in public.requests] == ["/moved", "/fine"]


async def test_the_collector_obeys_check_deny_networks(guarded: ServerProcess, private: HttpReceiver) -> None:
    editor = await acreate_user(guarded.database_url, {unique("t"): "editor"})
    async with ws_connect(guarded, guarded.login(editor, PASSWORD)) as ws:
        monitor = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            {"name": "internal", "kind": "http", "url": f"{private.url}/", "interval": 2, "timeout": 1},
        )
        rows: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while not rows:
                rows = list(await ok(ws, PkgID.CHECK_HISTORY, {"monitor_id": monitor["id"]}))
                await asyncio.sleep(0.2)
        await ok(ws, PkgID.MONITOR_DELETE, {"id": monitor["id"]})
    assert rows[0]["ok"] is False
    assert f"destination {PRIVATE} is blocked by CHECK_DENY_NETWORKS" in rows[0]["error"], rows[0]
    assert private.requests == []


async def test_channel_test_and_deliveries_obey_alert_deny_networks(
    guarded: ServerProcess, public: HttpReceiver, private: HttpReceiver
) -> None:
    editor = await acreate_user(guarded.database_url, {unique("t"): "editor"})
    blocked = f"destination {PRIVATE} is blocked by ALERT_DENY_NETWORKS; update the channel"
    async with ws_connect(guarded, guarded.login(editor, PASSWORD)) as ws:
        tried = await ok(
            ws, PkgID.CHANNEL_TEST, {"kind": "webhook", "config": {"url": f"{private.url}/hook"}}
        )
        assert (tried["ok"], tried["permanent"], tried["error"]) == (False, True, blocked), tried
        mail = await ok(
            ws,
            PkgID.CHANNEL_TEST,
            {
                "kind": "email",
                "config": {
                    "host": PRIVATE,
                    "port": 2525,
                    "security": "none",
                    "from": "w@example.com",
                    "to": ["a@example.com"],
                },
            },
        )
        assert (mail["ok"], mail["permanent"], mail["error"]) == (False, True, blocked), mail
        fine = await ok(ws, PkgID.CHANNEL_TEST, {"kind": "webhook", "config": {"url": f"{public.url}/hook"}})
        assert fine["ok"] is True, fine

        channel = await ok(
            ws,
            PkgID.CHANNEL_CREATE,
            {"name": unique("hook"), "kind": "webhook", "config": {"url": f"{private.url}/hook"}},
        )
        public.default = Reply(status=500)
        monitor = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            {
                "name": "api",
                "kind": "http",
                "url": f"{public.url}/api",
                "interval": 60,
                "timeout": 2,
                "channels": [channel["id"]],
            },
        )
        assert (await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": monitor["id"]}))["state"] == "down"
        rows: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while not rows or rows[0]["status"] in ("pending", "sending"):
                rows = list(await ok(ws, PkgID.DELIVERY_LIST, {"channel_id": channel["id"]}))
                await asyncio.sleep(0.1)
        await ok(ws, PkgID.MONITOR_DELETE, {"id": monitor["id"]})
    [row] = rows
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 1, blocked), row
    assert private.requests == []


async def test_without_deny_lists_the_same_destinations_are_reached(
    server: ServerProcess, private: HttpReceiver
) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        check = await _check_now(ws, {"kind": "http", "url": f"{private.url}/check"})
        tcp = await _check_now(ws, {"kind": "tcp", "host": PRIVATE, "port": private.port})
        test = await call(
            ws, PkgID.CHANNEL_TEST, {"kind": "webhook", "config": {"url": f"{private.url}/hook"}}
        )
    assert check["ok"] is True and tcp["ok"] is True, (check, tcp)
    assert test["data"]["ok"] is True, test
    assert sorted(r.path for r in private.requests) == ["/check", "/hook"]


async def test_check_now_of_the_other_kinds_obeys_check_deny_networks(guarded: ServerProcess) -> None:
    """dns (the resolver's address), postgres, redis, websocket and ping: the same rule."""
    editor = await acreate_user(guarded.database_url, {unique("t"): "editor"})
    blocked = f"destination {PRIVATE} is blocked by CHECK_DENY_NETWORKS"

    def dns_def(resolver: str, port: int) -> dict[str, Any]:
        return {
            "kind": "dns",
            "host": "api.watchpost.test",
            "options": {"resolver": resolver, "resolver_port": port},
        }

    with DnsTarget() as dns:
        async with ws_connect(guarded, guarded.login(editor, PASSWORD)) as ws:
            for definition in (
                dns_def(PRIVATE, dns.port),
                {
                    "kind": "postgres",
                    "options": {"connection_string": f"postgresql://postgres@{PRIVATE}:5432/x"},
                },
                {"kind": "redis", "options": {"connection_string": f"redis://{PRIVATE}:6379/0"}},
                {"kind": "websocket", "url": f"ws://{PRIVATE}:9/socket"},
                {"kind": "ping", "host": PRIVATE, "options": {"count": 1}},
            ):
                result = await _check_now(ws, definition)
                assert result["ok"] is False and result["error"] == blocked, (definition["kind"], result)
            assert dns.queries == 0
            allowed = await _check_now(ws, dns_def("127.0.0.1", dns.port))
            assert allowed["ok"] is True, allowed
            assert dns.queries == 1

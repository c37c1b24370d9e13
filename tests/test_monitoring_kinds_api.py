"""The dns, postgres, redis, websocket and ping kinds through the WebSocket API, over real
sockets with real targets: definitions validated with the path of each problem, the
connection string masked in every answer and audit row and kept when sent back as
"***", CHECK_NOW on an unsaved definition of every kind, recorded states from CHECK_NOW
and from the collector, and ping refused where the server may send no ICMP (CHECK_PING)."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from app.protocol import PkgID, RSPCode
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.kind_targets import DnsTarget, WsTarget
from tests.server import ServerProcess, call, ok, sqlite_url, ws_connect
from tests.targets import HttpTarget, TcpTarget

SECRET = "kind-s3cret-pw"

# The module shares the session's PostgreSQL-backed server; the CHECK_PING=off server below
# runs on the embedded default (SQLite) with its collector on.
on_postgres = pytest.mark.parametrize("server", ["postgres"], indirect=True)


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsTarget]:
    with DnsTarget() as target:
        yield target


@pytest.fixture(scope="module")
def ws_server() -> Iterator[WsTarget]:
    with WsTarget() as target:
        yield target


@pytest.fixture(scope="module")
def no_ping_server() -> Iterator[ServerProcess]:
    srv = ServerProcess(
        sqlite_url(),
        env={
            "CHECK_PING": "off",
            "COLLECTOR_ENABLED": "true",
            "MONITOR_MIN_INTERVAL": "1",
            "COLLECTOR_TICK": "0.2",
            "COLLECTOR_JITTER": "0",
        },
    ).start()
    yield srv
    srv.stop()


def pg_dsn(database: str = "postgres", password: str | None = SECRET) -> str:
    parts = urllib.parse.urlsplit(services.PG_ADMIN_URL)
    user = parts.username or "postgres"
    auth = f"{user}:{password}" if password else user
    return f"postgresql://{auth}@{parts.hostname}:{parts.port or 5432}/{database}"


def redis_dsn(port: int | None = None) -> str:
    parts = urllib.parse.urlsplit(services.REDIS_URL)
    return f"redis://{parts.hostname}:{port or parts.port or 6379}/0"


def dns_def(dns_server: DnsTarget, **options: Any) -> dict[str, Any]:
    return {
        "name": unique("dns"),
        "kind": "dns",
        "host": "api.watchpost.test",
        "interval": 30,
        "timeout": 3,
        "options": {"resolver": "127.0.0.1", "resolver_port": dns_server.port, **options},
    }


def errors_of(resp: dict[str, Any]) -> dict[str, str]:
    assert resp["status_code"] == RSPCode.INVALID_DATA, resp
    return {e["path"]: e["msg"] for e in resp["data"]["errors"]}


@on_postgres
async def test_unsaved_definitions_of_every_kind_can_be_tested(
    server: ServerProcess, dns_server: DnsTarget, ws_server: WsTarget
) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    with HttpTarget() as http, TcpTarget() as tcp:
        http.respond("/health", 200, "fine")
        async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
            member = await ok(
                ws,
                PkgID.MONITOR_CREATE,
                {"name": unique("m"), "kind": "tcp", "host": "127.0.0.1", "port": tcp.port},
            )
            definitions: dict[str, dict[str, Any]] = {
                "http": {"kind": "http", "url": http.url("/health"), "keyword": "fine"},
                "tcp": {"kind": "tcp", "host": "127.0.0.1", "port": tcp.port},
                "dns": dns_def(dns_server, expected=["192.0.2.10"]),
                "postgres": {"kind": "postgres", "options": {"connection_string": pg_dsn(password=None)}},
                "redis": {"kind": "redis", "options": {"connection_string": redis_dsn()}},
                "websocket": {
                    "kind": "websocket",
                    "url": ws_server.url("/echo"),
                    "options": {"send": "ping", "expect": "ping"},
                },
                "ping": {"kind": "ping", "host": "127.0.0.1", "options": {"count": 2}},
            }
            for kind, definition in definitions.items():
                answer = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"monitor": definition})
                assert answer["recorded"] is False
                assert answer["result"]["ok"] is True, (kind, answer)
                assert answer["result"]["latency_ms"] is not None, kind
            # A group is judged from its members' states right now (a new member is pending).
            group = await ok(
                ws, PkgID.MONITOR_CHECK_NOW, {"monitor": {"kind": "group", "members": [member["id"]]}}
            )
            assert group["result"] == {
                "ok": False,
                "latency_ms": None,
                "status_code": None,
                "error": "0 of 1 members up, 1 needed",
                "cert_expires_at": None,
                "cert_days_left": None,
                "cert_issuer": None,
                "degraded": False,
                "warning": None,
            }
            unknown = await call(
                ws, PkgID.MONITOR_CHECK_NOW, {"monitor": {"kind": "group", "members": [10**9]}}
            )
            assert "members" in errors_of(unknown)
            # Nothing can have pushed to an unsaved push monitor: what it would say if never pushed to.
            push = await ok(
                ws, PkgID.MONITOR_CHECK_NOW, {"monitor": {"kind": "push", "interval": 60, "grace": 5}}
            )
            assert push["result"]["ok"] is False and push["result"]["error"] == "no push received within 65 s"
            failing = dict(definitions["redis"], options={"connection_string": redis_dsn(port=1)})
            down = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"monitor": failing})
            assert down["result"]["ok"] is False and down["result"]["error"] == "connection refused"


@on_postgres
async def test_connection_strings_are_masked_everywhere_and_kept(server: ServerProcess) -> None:
    admin = await acreate_user(server.database_url, {unique("t"): "admin"})
    async with ws_connect(server, server.login(admin, PASSWORD)) as ws:
        created = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            {"name": unique("pg"), "kind": "postgres", "options": {"connection_string": pg_dsn("no_db_k")}},
        )
        assert created["options"] == {"connection_string": "***"}
        mid = created["id"]
        assert (await ok(ws, PkgID.MONITOR_GET, {"id": mid}))["options"] == {"connection_string": "***"}
        listed = await ok(ws, PkgID.MONITOR_LIST, {"kind": "postgres"})
        assert [m["options"] for m in listed if m["id"] == mid] == [{"connection_string": "***"}]
        # Recorded like any other kind: down with the reason, an incident opened.
        checked = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": mid})
        assert checked["recorded"] is True and checked["state"] == "down"
        assert checked["result"]["error"] == 'database does not exist: database "no_db_k" does not exist'
        incidents = await ok(ws, PkgID.INCIDENT_LIST, {"monitor_id": mid})
        assert len(incidents) == 1 and incidents[0]["state"] == "open"
        # Sent back as shown, "***" keeps the stored string; a new one replaces it.
        renamed = await ok(
            ws,
            PkgID.MONITOR_UPDATE,
            {
                "id": mid,
                "version": created["version"],
                "name": unique("pg2"),
                "options": {"connection_string": "***"},
            },
        )
        again = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": mid})
        assert again["result"]["error"] == 'database does not exist: database "no_db_k" does not exist'
        fixed = await ok(
            ws,
            PkgID.MONITOR_UPDATE,
            {"id": mid, "version": renamed["version"], "options": {"connection_string": pg_dsn()}},
        )
        assert fixed["options"] == {"connection_string": "***"}
        up = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": mid})
        assert up["result"]["ok"] is True and up["state"] == "up"
        # A new monitor cannot be given "***".
        masked = await call(
            ws,
            PkgID.MONITOR_CREATE,
            {"name": unique("pg"), "kind": "postgres", "options": {"connection_string": "***"}},
        )
        assert errors_of(masked)["options.connection_string"].startswith(
            "options.connection_string: re-enter"
        )
        rows = await ok(ws, PkgID.AUDIT_LIST, {"target_id": str(mid)})
    assert rows, "the monitor's changes are audited"
    text = repr(rows)
    assert SECRET not in text and "no_db_k" not in text
    by_action = {r["action"]: r for r in rows}
    assert by_action["MONITOR_UPDATE"]["details"]["options"] == {"connection_string": "***"}


@on_postgres
async def test_bad_definitions_are_refused_with_the_path(
    server: ServerProcess, dns_server: DnsTarget
) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"kind": "dns"}, "host", "a dns monitor needs the name to resolve"),
        ({"kind": "dns", "host": "http://x.example/"}, "host", "host: must be a domain name"),
        ({"kind": "dns", "host": "192.0.2.1"}, "host", "host: must be a domain name"),
        (
            {"kind": "dns", "host": "a.example", "options": {"resolver": "dns.example"}},
            "options.resolver",
            "options.resolver: must be the IP address",
        ),
        (
            {"kind": "dns", "host": "a.example", "options": {"count": 3}},
            "options.count",
            "'count' is not an option of a dns monitor",
        ),
        (
            {"kind": "postgres"},
            "options.connection_string",
            "a postgres monitor needs options.connection_string",
        ),
        (
            {"kind": "postgres", "options": {"connection_string": "mysql://db/x"}},
            "options.connection_string",
            "options.connection_string: must start with postgresql:// or postgres://",
        ),
        (
            {"kind": "redis", "options": {"connection_string": "postgresql://db/x"}},
            "options.connection_string",
            "options.connection_string: must start with redis:// or rediss://",
        ),
        (
            {"kind": "redis", "options": {"connection_string": "redis://db:99999/0"}},
            "options.connection_string",
            "options.connection_string: not a valid connection string",
        ),
        ({"kind": "websocket", "url": "http://x.example/"}, "url", "url: must start with ws:// or wss://"),
        ({"kind": "websocket"}, "url", "a websocket monitor needs a url"),
        (
            {"kind": "websocket", "url": "ws://x.example/", "options": {"subprotocol": "a b"}},
            "options.subprotocol",
            "options.subprotocol: must be a token",
        ),
        (
            {"kind": "websocket", "url": "ws://x.example/", "options": {"headers": {"Upgrade": "h2"}}},
            "options.headers.Upgrade",
            "options.headers: 'Upgrade' is not a header name",
        ),
        (
            {"kind": "websocket", "url": "ws://u:p@x.example/"},
            "url",
            "url: put credentials in options.headers",
        ),
        ({"kind": "ping"}, "host", "a ping monitor needs a host"),
        ({"kind": "ping", "host": "a b"}, "host", "host: must be a host name or IP address"),
        (
            {"kind": "http", "url": "https://x.example/", "options": {"count": 1}},
            "options",
            "an http monitor takes no options",
        ),
    ]
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        for data, path, says in cases:
            body = {"name": unique("bad"), "interval": 30, **data}
            for pkg, payload in ((PkgID.MONITOR_CREATE, body), (PkgID.MONITOR_CHECK_NOW, {"monitor": body})):
                errors = errors_of(await call(ws, pkg, payload))
                assert errors.get(path, "").startswith(says), (data, errors)
        # Types and ranges stop at the schema, naming the field.
        for key, options in (
            ("count", {"count": 0}),
            ("max_loss", {"max_loss": 101}),
            ("record_type", {"record_type": "PTR"}),
            ("resolver_port", {"resolver_port": 70000}),
        ):
            resp = await call(
                ws,
                PkgID.MONITOR_CREATE,
                {"name": unique("bad"), "kind": "ping", "host": "127.0.0.1", "options": options},
            )
            paths = [e["path"] for e in resp["data"]["errors"]]
            assert resp["status_code"] == RSPCode.INVALID_DATA and paths == [f"options.{key}"], resp
        # An update is validated the same way.
        good = await ok(ws, PkgID.MONITOR_CREATE, dns_def(dns_server))
        resp = await call(
            ws,
            PkgID.MONITOR_UPDATE,
            {"id": good["id"], "version": good["version"], "options": {"resolver": "x"}},
        )
        assert "options.resolver" in errors_of(resp)


async def test_ping_refused_where_not_allowed_and_collector_records_new_kinds(
    no_ping_server: ServerProcess, dns_server: DnsTarget
) -> None:
    srv = no_ping_server
    async with ws_connect(srv, srv.login()) as ws:
        ping = {"name": unique("ping"), "kind": "ping", "host": "127.0.0.1", "interval": 30}
        for pkg, payload in ((PkgID.MONITOR_CREATE, ping), (PkgID.MONITOR_CHECK_NOW, {"monitor": ping})):
            errors = errors_of(await call(ws, pkg, payload))
            assert errors["kind"] == "ping monitors are turned off on this server (CHECK_PING=off)"
        # The collector probes the new kinds on schedule and records their states.
        up = await ok(ws, PkgID.MONITOR_CREATE, {**dns_def(dns_server), "interval": 2, "timeout": 1})
        down = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            {
                "name": unique("r"),
                "kind": "redis",
                "interval": 2,
                "timeout": 1,
                "options": {"connection_string": redis_dsn(port=1)},
            },
        )
        states: dict[int, dict[str, Any]] = {}
        async with asyncio.timeout(20):
            while True:
                for mid in (up["id"], down["id"]):
                    states[mid] = await ok(ws, PkgID.MONITOR_GET, {"id": mid})
                if states[up["id"]]["state"] == "up" and states[down["id"]]["state"] == "down":
                    break
                await asyncio.sleep(0.3)
        assert states[up["id"]]["last_latency_ms"] is not None
        assert states[down["id"]]["last_error"] == "connection refused"
        incidents = await ok(ws, PkgID.INCIDENT_LIST, {"monitor_id": down["id"]})
        assert [i["cause"] for i in incidents] == ["connection refused"]

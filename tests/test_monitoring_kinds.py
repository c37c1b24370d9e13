"""The dns, postgres, redis, websocket and ping runners against real local servers:
a UDP DNS server serving a zone, the test PostgreSQL and Redis, a WebSocket server and
ICMP to 127.0.0.1. Each kind: up, down with a clear reason, timeout, and the
CHECK_DENY_NETWORKS rule on its destination."""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from app.egress import EgressPolicy
from app.monitoring import kinds
from app.monitoring.checks import CheckOutcome
from app.monitoring.kinds import ping
from tests import services
from tests.kind_targets import DnsTarget, WsTarget

LOOPBACK_DENIED = EgressPolicy((ipaddress.ip_network("127.0.0.0/8"),))
BLOCKED = "destination 127.0.0.1 is blocked by CHECK_DENY_NETWORKS"


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsTarget]:
    with DnsTarget() as target:
        yield target


@pytest.fixture(scope="module")
def ws_server() -> Iterator[WsTarget]:
    with WsTarget() as target:
        yield target


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections complete (kernel backlog) but never hear a byte back."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_dsn(database: str = "postgres", password: str | None = None, port: int | None = None) -> str:
    parts = urllib.parse.urlsplit(services.PG_ADMIN_URL.replace("+asyncpg", ""))
    user = parts.username or "postgres"
    auth = f"{user}:{password}" if password else user
    return f"postgresql://{auth}@{parts.hostname}:{port or parts.port or 5432}/{database}"


def _redis_dsn(port: int | None = None) -> str:
    parts = urllib.parse.urlsplit(services.redis_test_url())
    return f"redis://{parts.hostname}:{port or parts.port or 6379}/0"


async def resolve(server: DnsTarget, host: str, timeout: float = 3, **options: Any) -> CheckOutcome:
    values = {"host": host, "options": {"resolver": "127.0.0.1", "resolver_port": server.port, **options}}
    return await kinds.run("dns", values, timeout)


# ----- dns


async def test_dns_up_for_each_record_type(dns_server: DnsTarget) -> None:
    for host, rtype, expected in (
        ("api.watchpost.test", "A", ["192.0.2.11"]),
        ("v6.watchpost.test", "AAAA", ["2001:db8::1"]),
        ("www.watchpost.test", "CNAME", ["API.watchpost.test."]),
        ("watchpost.test", "MX", ["10 mail.watchpost.test"]),
        ("watchpost.test", "TXT", ["v=spf1 -all"]),
        ("watchpost.test", "NS", ["ns1.watchpost.test"]),
        ("_sip._tcp.watchpost.test", "SRV", ["10 5 5060 sip.watchpost.test"]),
    ):
        out = await resolve(dns_server, host, record_type=rtype, expected=expected)
        assert out.ok, (rtype, out)
        assert out.latency_ms is not None and out.latency_ms > 0
        # Without expected values any non-empty answer is up.
        assert (await resolve(dns_server, host, record_type=rtype)).ok


async def test_dns_expected_values_any_and_all(dns_server: DnsTarget) -> None:
    both = ["192.0.2.10", "192.0.2.99"]
    assert (await resolve(dns_server, "api.watchpost.test", expected=both)).ok
    out = await resolve(dns_server, "api.watchpost.test", expected=both, match="all")
    assert not out.ok
    assert out.error == "A answer [192.0.2.10, 192.0.2.11] lacks [192.0.2.99]"
    out = await resolve(dns_server, "api.watchpost.test", expected=["192.0.2.98", "192.0.2.99"])
    assert out.error == "A answer [192.0.2.10, 192.0.2.11] has none of [192.0.2.98, 192.0.2.99]"
    assert (
        await resolve(dns_server, "api.watchpost.test", expected=["192.0.2.11", "192.0.2.10"], match="all")
    ).ok


async def test_dns_down_with_a_reason(dns_server: DnsTarget) -> None:
    out = await resolve(dns_server, "nope.watchpost.test")
    assert not out.ok and out.error == "nope.watchpost.test does not exist (NXDOMAIN)"
    out = await resolve(dns_server, "watchpost.test", record_type="AAAA")
    assert not out.ok and out.error == "no AAAA records for watchpost.test"
    out = await resolve(dns_server, "elsewhere.example", record_type="A")
    assert (
        not out.ok
        and out.error is not None
        and out.error.startswith("no name server answered for elsewhere.example")
    )


async def test_dns_timeout() -> None:
    with DnsTarget() as silent:
        silent.silent = True
        out = await resolve(silent, "api.watchpost.test", timeout=0.5)
        assert silent.queries >= 1
    assert not out.ok and out.error == "timed out after 0.5 s"
    assert out.latency_ms is not None and out.latency_ms >= 400


async def test_dns_resolver_obeys_deny_networks(dns_server: DnsTarget) -> None:
    before = dns_server.queries
    values = {
        "host": "api.watchpost.test",
        "options": {"resolver": "127.0.0.1", "resolver_port": dns_server.port},
    }
    out = await kinds.run("dns", values, 2, LOOPBACK_DENIED)
    assert not out.ok and out.error == "destination 127.0.0.1 is blocked by CHECK_DENY_NETWORKS"
    assert dns_server.queries == before


# ----- postgres and redis


async def test_postgres_up_down_and_masked() -> None:
    up = await kinds.run("postgres", {"options": {"connection_string": _pg_dsn()}}, 5)
    assert up.ok and up.latency_ms is not None and up.latency_ms > 0
    missing = await kinds.run(
        "postgres", {"options": {"connection_string": _pg_dsn("no_such_db_x", password="pw-s3cret")}}, 5
    )
    assert not missing.ok
    assert missing.error == 'database does not exist: database "no_such_db_x" does not exist'
    refused = await kinds.run(
        "postgres", {"options": {"connection_string": _pg_dsn(password="pw-s3cret", port=_closed_port())}}, 5
    )
    assert not refused.ok and refused.error == "connection refused"


async def test_postgres_timeout(silent_port: int) -> None:
    out = await kinds.run("postgres", {"options": {"connection_string": _pg_dsn(port=silent_port)}}, 0.5)
    assert not out.ok and out.error == "timed out after 0.5 s"


async def test_postgres_bad_password_is_named_without_the_password() -> None:
    # The test cluster trusts local users, so a wrong password cannot fail there; a role
    # that does not exist is refused instead. The user-info is masked like a URL's.
    dsn = _pg_dsn().replace("postgres@", "no_such_role_x:pw-s3cret@", 1)
    out = await kinds.run("postgres", {"options": {"connection_string": dsn}}, 5)
    assert not out.ok
    assert out.error == 'authentication failed: role "***" does not exist'


async def test_redis_up_down_timeout(silent_port: int) -> None:
    up = await kinds.run("redis", {"options": {"connection_string": _redis_dsn()}}, 5)
    assert up.ok and up.latency_ms is not None
    refused = await kinds.run("redis", {"options": {"connection_string": _redis_dsn(_closed_port())}}, 5)
    assert not refused.ok and refused.error == "connection refused"
    slow = await kinds.run("redis", {"options": {"connection_string": _redis_dsn(silent_port)}}, 0.5)
    assert not slow.ok and slow.error == "timed out after 0.5 s"


async def test_redis_wrong_password_fails_without_showing_it() -> None:
    dsn = _redis_dsn().replace("redis://", "redis://ghost-user:pw-s3cret@", 1)
    out = await kinds.run("redis", {"options": {"connection_string": dsn}}, 5)
    assert not out.ok and out.error is not None
    assert "pw-s3cret" not in out.error


async def test_databases_obey_deny_networks() -> None:
    for kind, dsn in (("postgres", _pg_dsn()), ("redis", _redis_dsn())):
        out = await kinds.run(kind, {"options": {"connection_string": dsn}}, 5, LOOPBACK_DENIED)
        assert not out.ok and out.error is not None and "is blocked by CHECK_DENY_NETWORKS" in out.error, out


# ----- websocket


async def ws_check(url: str, timeout: float = 3, **options: Any) -> CheckOutcome:
    return await kinds.run("websocket", {"url": url, "options": options}, timeout)


async def test_websocket_up_with_message_and_conditions(ws_server: WsTarget) -> None:
    assert (await ws_check(ws_server.url("/echo"))).ok
    out = await ws_check(ws_server.url("/echo"), send="hello there", expect="there")
    assert out.ok and out.status_code == 101
    ws_server.status = {"status": "UP", "queue": {"depth": 3}, "extra": [1]}
    assert (
        await ws_check(
            ws_server.url("/status"), send="?", expect_json={"status": "UP", "queue": {"depth": 3}}
        )
    ).ok
    out = await ws_check(
        ws_server.url("/echo"),
        subprotocol="health.v1",
        headers={"Authorization": "Bearer ws-token"},
    )
    assert out.ok
    assert ws_server.seen_subprotocol == "health.v1"
    assert ws_server.seen_headers is not None and ws_server.seen_headers["Authorization"] == "Bearer ws-token"


async def test_websocket_down_with_a_reason(ws_server: WsTarget) -> None:
    ws_server.status = {"status": "DEGRADED", "queue": {"depth": 3}}
    out = await ws_check(ws_server.url("/status"), send="?", expect_json={"status": "UP"})
    assert out.error == 'first answer: $.status: expected "UP", got "DEGRADED"'
    out = await ws_check(ws_server.url("/status"), send="?", expect_json={"queue": {"depth": 0}})
    assert out.error == "first answer: $.queue.depth: expected 0, got 3"
    out = await ws_check(ws_server.url("/echo"), send="hello", expect="bye")
    assert out.error == "first answer does not contain 'bye'"
    out = await ws_check(ws_server.url("/echo"), send="not json", expect_json={"a": 1})
    assert out.error == "first answer is not JSON"
    out = await ws_check(ws_server.url("/deny"))
    assert not out.ok and out.error == "handshake refused: HTTP 403" and out.status_code == 403
    out = await ws_check(ws_server.url("/close"), send="x", expect="x")
    assert out.error == "connection closed before an answer (code 1011: overloaded)"
    out = await ws_check(ws_server.url("/echo"), subprotocol="other.v2")
    assert out.error == "server did not accept subprotocol 'other.v2'"
    out = await ws_check(f"ws://127.0.0.1:{_closed_port()}/")
    assert out.error == "connection refused"


async def test_websocket_timeout(ws_server: WsTarget, silent_port: int) -> None:
    out = await ws_check(ws_server.url("/silent"), timeout=0.5, send="x", expect="x")
    assert not out.ok and out.error == "timed out after 0.5 s"
    out = await ws_check(f"ws://127.0.0.1:{silent_port}/", timeout=0.5)
    assert not out.ok and out.error == "timed out after 0.5 s"


async def test_websocket_obeys_deny_networks(ws_server: WsTarget) -> None:
    before = ws_server.connections
    out = await kinds.run("websocket", {"url": ws_server.url("/echo"), "options": {}}, 3, LOOPBACK_DENIED)
    assert not out.ok and out.error == BLOCKED
    assert ws_server.connections == before


# ----- ping


def _unprivileged_icmp_allowed() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
    except OSError:
        return False
    return True


async def test_ping_loopback_up() -> None:
    out = await kinds.run("ping", {"host": "127.0.0.1", "options": {"count": 3}}, 3)
    assert out.ok, out
    assert out.latency_ms is not None and out.latency_ms >= 0


async def test_ping_loss_threshold() -> None:
    # 198.51.100.0/24 is a documentation range: nothing answers there.
    out = await kinds.run("ping", {"host": "198.51.100.7", "options": {"count": 2}}, 1)
    assert not out.ok
    assert out.error == "2 of 2 packets lost (100 % loss, at most 0 % allowed)"
    assert out.latency_ms is None
    # A threshold of 100 % accepts even a silent host (a monitor only watching resolution).
    assert (await kinds.run("ping", {"host": "198.51.100.7", "options": {"count": 1, "max_loss": 100}}, 1)).ok


async def test_ping_unprivileged_where_allowed_refused_where_not() -> None:
    privileged, reason = ping.privileged_or_reason("unprivileged")
    if _unprivileged_icmp_allowed():
        assert privileged is False and reason == ""
        ping.install_mode("unprivileged")
        try:
            assert (await kinds.run("ping", {"host": "127.0.0.1", "options": {"count": 1}}, 3)).ok
        finally:
            ping.install_mode("auto")
    else:
        assert privileged is None and "ping_group_range" in reason
    off, why = ping.privileged_or_reason("off")
    assert off is None and why == "ping monitors are turned off on this server (CHECK_PING=off)"


async def test_ping_obeys_deny_networks() -> None:
    out = await kinds.run("ping", {"host": "127.0.0.1", "options": {"count": 1}}, 2, LOOPBACK_DENIED)
    assert not out.ok and out.error == BLOCKED

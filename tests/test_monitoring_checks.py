"""HTTP and TCP check runners against real loopback targets."""

from __future__ import annotations

import asyncio
import datetime as dt

from app.monitoring.checks import (
    HttpClients,
    HttpSpec,
    parse_expected_status,
    run_http_check,
    run_tcp_check,
)
from tests.targets import HttpTarget, TcpTarget


async def test_http_ok_records_status_and_latency(target: HttpTarget) -> None:
    target.respond("/health", 204, b"")
    out = await run_http_check(HttpSpec(target.url("/health"), timeout=5))
    assert out.ok and out.error is None
    assert out.status_code == 204
    assert out.latency_ms is not None and 0 < out.latency_ms < 5000
    assert out.cert_expires_at is None
    assert target.hits("/health") == 1


async def test_http_500_fails_with_reason(target: HttpTarget) -> None:
    target.respond("/health", 500, b"boom")
    out = await run_http_check(HttpSpec(target.url("/health"), timeout=5))
    assert not out.ok
    assert out.status_code == 500
    assert out.error == "status 500, expected 200-399"


async def test_expected_status_list_and_ranges(target: HttpTarget) -> None:
    target.respond("/teapot", 418)
    spec = HttpSpec(target.url("/teapot"), expected_status=parse_expected_status([200, "410-420"]), timeout=5)
    assert (await run_http_check(spec)).ok
    spec = HttpSpec(target.url("/teapot"), expected_status=parse_expected_status([200]), timeout=5)
    assert not (await run_http_check(spec)).ok


async def test_keyword_in_body(target: HttpTarget) -> None:
    target.respond("/page", 200, "all systems operational")
    ok = await run_http_check(HttpSpec(target.url("/page"), keyword="operational", timeout=5))
    assert ok.ok
    missing = await run_http_check(HttpSpec(target.url("/page"), keyword="degraded", timeout=5))
    assert not missing.ok and missing.error is not None and "keyword" in missing.error


async def test_hanging_target_times_out(target: HttpTarget) -> None:
    target.hang("/slow")
    out = await run_http_check(HttpSpec(target.url("/slow"), timeout=0.5))
    assert not out.ok
    assert out.error == "timed out after 0.5 s"
    assert out.latency_ms is not None and out.latency_ms >= 400


async def test_dropped_connection_fails(target: HttpTarget) -> None:
    target.drop("/reset")
    out = await run_http_check(HttpSpec(target.url("/reset"), timeout=5))
    assert not out.ok and out.error
    assert target.hits("/reset") == 1


async def test_refused_http() -> None:
    tcp = TcpTarget().start()
    port = tcp.port
    tcp.stop()
    out = await run_http_check(HttpSpec(f"http://127.0.0.1:{port}/", timeout=5))
    assert not out.ok and out.error == "connection refused"


async def test_redirects_followed_or_not(target: HttpTarget) -> None:
    target.respond("/old", 301, b"", headers={"Location": "/new"})
    target.respond("/new", 200, "moved here")
    followed = await run_http_check(HttpSpec(target.url("/old"), keyword="moved", timeout=5))
    assert followed.ok and followed.status_code == 200
    not_followed = await run_http_check(
        HttpSpec(target.url("/old"), follow_redirects=False, expected_status=((200, 299),), timeout=5)
    )
    assert not not_followed.ok and not_followed.status_code == 301


async def test_https_cert_expiry_and_verification() -> None:
    with HttpTarget(tls=True, cert_days=12) as tls:
        clients = HttpClients()
        try:
            rejected = await run_http_check(HttpSpec(tls.url("/"), timeout=5), clients)
            assert not rejected.ok and rejected.error is not None and "TLS" in rejected.error
            accepted = await run_http_check(HttpSpec(tls.url("/"), timeout=5, verify_tls=False), clients)
        finally:
            await clients.aclose()
    assert accepted.ok
    assert accepted.cert_expires_at == tls.cert_not_after
    assert accepted.cert_expires_at is not None
    assert accepted.cert_expires_at - dt.datetime.now(dt.UTC) > dt.timedelta(days=11)


async def _wait_connections(tcp: TcpTarget, n: int) -> None:
    # The kernel completes the handshake before the target's loop accepts it;
    # wait until the target has seen the connection.
    for _ in range(200):
        if tcp.connections >= n:
            return
        await asyncio.sleep(0.02)


async def test_tcp_accept_and_refuse() -> None:
    with TcpTarget() as tcp:
        ok = await run_tcp_check("127.0.0.1", tcp.port, 5)
        assert ok.ok and ok.latency_ms is not None
        await _wait_connections(tcp, 1)
        tcp.refuse()
        refused = await run_tcp_check("127.0.0.1", tcp.port, 5)
        assert not refused.ok and refused.error == "connection refused"
        tcp.accept()
        again = await run_tcp_check("127.0.0.1", tcp.port, 5)
        assert again.ok
        await _wait_connections(tcp, 2)
        assert tcp.connections == 2


async def test_tcp_unresolvable_host() -> None:
    out = await run_tcp_check("no-such-host.invalid", 80, 5)
    assert not out.ok and out.error is not None

"""HTTP checks with a full request (method, headers, body, auth, redirect limit),
conditions, degraded latency and certificate details, against real loopback servers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.monitoring.checks import HttpClients, run_http_check
from app.monitoring.definition import http_spec, normalise, validate_definition, with_defaults
from tests.receivers import HttpReceiver, Reply
from tests.targets import HttpTarget


def spec_for(url: str, **fields: Any) -> Any:
    """The check spec of a monitor definition, validated like MONITOR_CREATE does."""
    values = normalise(with_defaults({"name": "t", "kind": "http", "url": url, **fields}, timeout_max=30))
    validate_definition(values, min_interval=1, timeout_max=30)
    return http_spec(values, timeout_max=30)


@pytest.fixture(scope="module")
def target() -> Iterator[HttpTarget]:
    with HttpTarget() as t:
        yield t


async def test_method_headers_body_and_basic_auth_are_sent() -> None:
    with HttpReceiver() as rx:
        out = await run_http_check(
            spec_for(
                f"{rx.url}/hook",
                method="post",
                headers={"X-Env": "prod", "Content-Type": "application/json"},
                body='{"ping": 1}',
                auth={"type": "basic", "username": "ops", "password": "pa:ss-w0rd"},
                timeout=5,
            )
        )
        assert out.ok, out.error
        [req] = rx.requests
    assert (req.method, req.path, req.body) == ("POST", "/hook", b'{"ping": 1}')
    assert req.headers["x-env"] == "prod" and req.headers["content-type"] == "application/json"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"ops:pa:ss-w0rd").decode()


async def test_bearer_auth_is_sent_and_never_in_an_error() -> None:
    with HttpReceiver(Reply(status=401, body=b"denied")) as rx:
        out = await run_http_check(
            spec_for(rx.url + "/", auth={"type": "bearer", "token": "tok-very-secret"}, timeout=5)
        )
        [req] = rx.requests
    assert req.headers["authorization"] == "Bearer tok-very-secret"
    assert not out.ok and out.error == "status 401, expected 200-399"


async def test_redirects_follow_up_to_the_limit(target: HttpTarget) -> None:
    for hop in range(3):
        target.respond(f"/hop{hop}", 302, b"", headers={"Location": f"/hop{hop + 1}"})
    target.respond("/hop3", 200, "arrived")
    three = await run_http_check(spec_for(target.url("/hop0"), max_redirects=3, keyword="arrived", timeout=5))
    assert three.ok and three.status_code == 200
    two = await run_http_check(spec_for(target.url("/hop0"), max_redirects=2, timeout=5))
    assert not two.ok and two.error == "more than 2 redirects (max_redirects)"
    off = await run_http_check(
        spec_for(target.url("/hop0"), follow_redirects=False, expected_status=[302], timeout=5)
    )
    assert off.ok and off.status_code == 302


async def test_json_conditions_pass_and_fail_with_the_failing_text(target: HttpTarget) -> None:
    target.respond(
        "/health.json",
        200,
        json.dumps({"status": "UP", "queue": {"depth": 12}, "version": "1.4.2"}),
        headers={"Content-Type": "application/json"},
    )
    target.respond(
        "/sick.json",
        200,
        json.dumps({"status": "DEGRADED", "queue": {"depth": 250}}),
        headers={"Content-Type": "application/json"},
    )
    conditions = [
        '$.status == "UP"',
        "$.queue.depth < 100",
        'header.content-type contains "json"',
        "status == 200",
        "response_time < 4000",
    ]
    good = await run_http_check(spec_for(target.url("/health.json"), conditions=conditions, timeout=5))
    assert good.ok and good.error is None and not good.degraded
    bad = await run_http_check(spec_for(target.url("/sick.json"), conditions=conditions, timeout=5))
    assert not bad.ok
    assert bad.error == '$.status: expected "UP", got "DEGRADED"; $.queue.depth: expected < 100, got 250'


async def test_status_condition_replaces_expected_status(target: HttpTarget) -> None:
    target.respond("/maintenance", 503, "planned")
    out = await run_http_check(spec_for(target.url("/maintenance"), conditions=["status == 503"], timeout=5))
    assert out.ok and out.status_code == 503
    plain = await run_http_check(spec_for(target.url("/maintenance"), timeout=5))
    assert not plain.ok and plain.error == "status 503, expected 200-399"


async def test_latency_threshold_and_warn_conditions_degrade(target: HttpTarget) -> None:
    target.respond("/slowish", 200, '{"lag": 40}')
    out = await run_http_check(spec_for(target.url("/slowish"), degraded_latency_ms=0.001, timeout=5))
    assert out.ok and out.degraded and out.error is None
    assert out.warning is not None and out.warning.startswith("response_time: ")
    assert out.warning.endswith("above degraded_latency_ms 0.001")
    warned = await run_http_check(
        spec_for(target.url("/slowish"), conditions=["warn: $.lag < 30", "$.lag < 60"], timeout=5)
    )
    assert warned.ok and warned.degraded and warned.warning == "$.lag: expected < 30, got 40"
    fine = await run_http_check(spec_for(target.url("/slowish"), conditions=["warn: $.lag < 50"], timeout=5))
    assert fine.ok and not fine.degraded and fine.warning is None


async def test_https_records_expiry_issuer_and_cert_days_condition() -> None:
    with HttpTarget(tls=True, cert_days=10) as tls:
        clients = HttpClients()
        try:
            out = await run_http_check(
                spec_for(tls.url("/"), verify_tls=False, conditions=["cert_days >= 14"], timeout=5), clients
            )
            warn = await run_http_check(
                spec_for(tls.url("/"), verify_tls=False, conditions=["warn: cert_days > 30"], timeout=5),
                clients,
            )
        finally:
            await clients.aclose()
    assert out.cert_expires_at == tls.cert_not_after
    assert out.cert_issuer == "CN=localhost"
    assert not out.ok and out.error in (
        "cert_days: expected >= 14, got 9",
        "cert_days: expected >= 14, got 10",
    )
    assert warn.ok and warn.degraded
    assert tls.cert_not_after is not None and tls.cert_not_after - dt.datetime.now(dt.UTC) < dt.timedelta(
        days=11
    )


def _chain_files(directory: Path, ca_days: int, leaf_days: int) -> tuple[Path, Path, dt.datetime]:
    """A CA expiring in ``ca_days`` and a 127.0.0.1 leaf it signed expiring in ``leaf_days``;
    returns (chain PEM leaf first, leaf key PEM, the CA's expiry)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Watchpost Test CA")])
    ca_until = now + dt.timedelta(days=ca_days)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(ca_until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=leaf_days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain, key = directory / "chain.pem", directory / "key.pem"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return chain, key, ca_until


async def test_chain_earliest_expiry_and_leaf_issuer(tmp_path: Path) -> None:
    chain, key, ca_until = _chain_files(tmp_path, ca_days=5, leaf_days=60)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(chain, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        out = await run_http_check(spec_for(f"https://127.0.0.1:{port}/", verify_tls=False, timeout=5))
    finally:
        server.close()
    assert out.ok, out.error
    # The intermediate expires first: that is the chain's expiry, not the leaf's 60 days.
    assert out.cert_expires_at == ca_until
    assert out.cert_issuer == "CN=Watchpost Test CA"


async def test_cookies_never_travel_between_checks() -> None:
    # The collector shares its clients across monitors and tenants.
    with HttpReceiver(Reply(headers={"Set-Cookie": "sid=tenant-a-session; Path=/"})) as rx:
        clients = HttpClients()
        try:
            await run_http_check(spec_for(rx.url + "/a", timeout=5), clients)
            await run_http_check(spec_for(rx.url + "/b", timeout=5), clients)
        finally:
            await clients.aclose()
        assert [r.headers.get("cookie") for r in rx.requests] == [None, None]

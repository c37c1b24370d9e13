"""/metrics after a scripted session: every family operators rely on has its samples
(parsed with prometheus-client's own parser, as Prometheus would)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.protocol import CloseCode, PkgID, RSPCode
from tests.server import ServerProcess, call, expect_close, ok, sqlite_url, ws_connect
from tests.targets import HttpTarget


@pytest.fixture(scope="module")
def metrics_server() -> Iterator[ServerProcess]:
    srv = ServerProcess(
        sqlite_url(),
        env={
            "COLLECTOR_ENABLED": "true",
            "MONITOR_MIN_INTERVAL": "1",
            "WS_MAX_CONNECTIONS_PER_USER": "2",
            "WS_MESSAGE_RATE_LIMIT": "30",
            "ENVIRONMENT": "test",
        },
    )
    srv.start()
    yield srv
    srv.stop()


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def _value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lbl, v in samples.get(name, []) if all(lbl.get(k) == want for k, want in labels.items()))


async def test_every_family_has_samples_after_a_session(metrics_server: ServerProcess) -> None:
    srv = metrics_server
    token = srv.login()
    assert srv.post("/login", {"username": "admin", "password": "wrong"})[0] == 401
    with HttpTarget() as target:
        target.respond("/up", 200)
        async with ws_connect(srv, token) as ws:
            await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
            await ok(
                ws,
                PkgID.MONITOR_CREATE,
                {"name": "m", "kind": "http", "url": target.url("/up"), "interval": 1, "timeout": 0.5},
            )
            async with ws_connect(srv, token) as second:
                await ok(second, PkgID.PING)
                async with ws_connect(srv, token) as third:  # over the per-user limit of 2
                    assert await expect_close(third) == CloseCode.TOO_MANY_CONNECTIONS
            async with ws_connect(srv, "not-a-token") as bad:
                assert await expect_close(bad) == CloseCode.AUTH_FAILED
            limited = False
            for _ in range(40):
                if (await call(ws, PkgID.PING))["status_code"] == RSPCode.RATE_LIMITED:
                    limited = True
                    break
            assert limited
            for _ in range(100):  # the collector runs the check within a few ticks
                s = _samples(srv.get("/metrics")[1].decode())
                if _value(s, "checks_total", kind="http", result="up") >= 1:
                    break
                await asyncio.sleep(0.1)

    s = _samples(srv.get("/metrics")[1].decode())
    assert _value(s, "app_info", environment="test") == 1
    assert _value(s, "http_requests_total", method="POST", endpoint="/login", status_code="200") >= 1
    assert _value(s, "http_requests_total", method="POST", endpoint="/login", status_code="401") >= 1
    assert _value(s, "http_request_duration_seconds_count", method="POST", endpoint="/login") >= 2
    assert "http_requests_in_progress" in s
    assert _value(s, "ws_connections_total", status="accepted") >= 2
    assert _value(s, "ws_connections_total", status="rejected_auth") >= 1
    assert _value(s, "ws_connections_total", status="rejected_limit") >= 1
    assert _value(s, "ws_connections_active") == 0
    assert _value(s, "ws_messages_received_total") >= 5
    assert _value(s, "ws_messages_sent_total") >= 5
    assert _value(s, "ws_message_processing_duration_seconds_count", pkg_id="1") >= 1
    assert _value(s, "ws_message_processing_duration_seconds_count", pkg_id="100") == 1
    assert _value(s, "rate_limit_hits_total", limit_type="messages") >= 1
    assert _value(s, "rate_limit_hits_total", limit_type="connections") >= 1
    assert _value(s, "auth_attempts_total", status="success") >= 1
    assert _value(s, "auth_attempts_total", status="failure") >= 2
    assert _value(s, "events_published_total") >= 1
    assert _value(s, "events_delivered_total") >= 1
    assert _value(s, "checks_total", kind="http", result="up") >= 1
    assert _value(s, "check_duration_seconds_count", kind="http") >= 1
    text = srv.get("/metrics")[1].decode()
    for family in (
        "collector_lag",
        "outbox_depth",
        "ws_slow_consumer_closes_total",
        "broker_errors_total",
        "db_errors_total",
        "redis_errors_total",
        "alert_delivery_attempts_total",
    ):
        assert f"# TYPE {family} " in text, family  # declared (labelled ones have no sample until used)
    assert _value(s, "collector_lag") == 0 and _value(s, "outbox_depth") == 0
    # label values stay bounded: no raw paths, ids or user names
    for name, rows in s.items():
        for labels, _ in rows:
            assert "admin" not in labels.values(), (name, labels)


async def _seed_backlog(database_url: str) -> None:
    """Monitors in every claim state and deliveries in every status, straight in the database."""
    from datetime import timedelta

    from app.models.base import utcnow
    from app.models.channel import Channel
    from app.models.delivery import Delivery
    from app.models.monitor import Monitor
    from app.storage.db import Database

    now = utcnow()
    past, future = now - timedelta(minutes=5), now + timedelta(minutes=5)
    db = Database(database_url)
    try:
        async with db.session() as s:

            def monitor(name: str, **fields: object) -> Monitor:
                return Monitor(tenant_id=1, name=name, kind="http", url="http://127.0.0.1:9/", **fields)

            s.add_all(
                [
                    *(monitor(f"due-{i}", next_check_at=past) for i in range(3)),
                    monitor("lease-expired", next_check_at=past, lease_owner="gone", lease_expires_at=past),
                    monitor("leased", next_check_at=past, lease_owner="busy", lease_expires_at=future),
                    monitor("disabled", next_check_at=past, enabled=False),
                    monitor("not-yet", next_check_at=future),
                ]
            )
            channel = Channel(tenant_id=1, name="hook", kind="webhook", config={"url": "http://127.0.0.1:9/"})
            s.add(channel)
            await s.flush()
            for i, status in enumerate(("pending", "pending", "sending", "sent", "failed")):
                s.add(
                    Delivery(
                        tenant_id=1,
                        channel_id=channel.id or 0,
                        dedupe_key=f"seed-{i}",
                        monitor_name="m",
                        state="down",
                        status=status,
                    )
                )
            await s.commit()
    finally:
        await db.close()


async def test_backlog_gauges_count_what_collector_and_workers_would_take() -> None:
    """collector_lag counts the monitors the collector would claim (enabled, due, lease free
    or expired); outbox_depth counts pending deliveries, not those being sent or finished."""
    srv = ServerProcess(
        sqlite_url(), env={"COLLECTOR_ENABLED": "false", "DELIVERY_WORKERS_ENABLED": "false"}
    ).start()
    try:
        await _seed_backlog(srv.database_url)
        s = _samples(srv.get("/metrics")[1].decode())
    finally:
        srv.stop()
    assert _value(s, "collector_lag") == 4
    assert _value(s, "outbox_depth") == 2

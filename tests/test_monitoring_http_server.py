"""HTTP monitors through a real server (PostgreSQL): request secrets masked in every
answer, conditions refused with their position, degraded recorded and shown, and a
certificate expiry alert delivered once per threshold through a real webhook receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from app.protocol import PkgID
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.receivers import HttpReceiver
from tests.server import ServerProcess, call, ok, ws_connect
from tests.targets import HttpTarget

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(
        services.create_pg_database(),
        env={
            "DELIVERY_POLL_INTERVAL": "0.1",
            "WS_MESSAGE_RATE_LIMIT": "100000",
            "RATE_LIMIT_PER_MINUTE": "100000",
            "RATE_LIMIT_BURST": "10000",
        },
    ).start()
    yield srv
    srv.stop()


async def editor_ws(server: ServerProcess) -> Any:
    user = await acreate_user(server.database_url, {unique("t"): "editor"})
    return ws_connect(server, server.login(user, PASSWORD))


async def test_auth_and_secret_headers_are_masked_and_kept(server: ServerProcess) -> None:
    async with await editor_ws(server) as ws:
        with HttpReceiver() as rx:
            created = await ok(
                ws,
                PkgID.MONITOR_CREATE,
                {
                    "name": "private",
                    "kind": "http",
                    "url": f"{rx.url}/private",
                    "headers": {"X-Api-Key": "key-abcdef", "X-Env": "prod"},
                    "auth": {"type": "basic", "username": "ops", "password": "pw-secret-1"},
                },
            )
            assert created["auth"] == {"type": "basic", "username": "ops", "password": "***"}
            assert created["headers"] == {"X-Api-Key": "***", "X-Env": "prod"}
            listed = await ok(ws, PkgID.MONITOR_LIST, {"name": "private"})
            assert "pw-secret-1" not in json.dumps(listed) and "key-abcdef" not in json.dumps(listed)
            # Sent back as shown (masked), the stored secrets stay and are used.
            updated = await ok(
                ws,
                PkgID.MONITOR_UPDATE,
                {
                    "id": created["id"],
                    "version": created["version"],
                    "headers": created["headers"],
                    "auth": created["auth"],
                    "method": "POST",
                },
            )
            assert updated["auth"]["password"] == "***" and updated["method"] == "POST"
            result = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": created["id"]})
            assert result["result"]["ok"], result
            [req] = rx.requests
            assert req.method == "POST" and req.headers["x-api-key"] == "key-abcdef"
            assert req.headers["authorization"] == "Basic b3BzOnB3LXNlY3JldC0x"
            # A new definition cannot use the mask as a password.
            refused = await call(
                ws,
                PkgID.MONITOR_CREATE,
                {"name": "copy", "kind": "http", "url": rx.url, "auth": created["auth"]},
            )
            assert refused["status_code"] == 2
            assert refused["data"]["errors"][0]["path"] == "auth.password"


async def test_invalid_conditions_are_refused_with_the_position(server: ServerProcess) -> None:
    async with await editor_ws(server) as ws:
        resp = await call(
            ws,
            PkgID.MONITOR_CREATE,
            {
                "name": "bad",
                "kind": "http",
                "url": "http://127.0.0.1:9/",
                "conditions": ["status == 200", "$.queue.depth < high"],
            },
        )
        assert resp["status_code"] == 2
        [error] = resp["data"]["errors"]
        assert error["path"] == "conditions[1]"
        assert error["msg"].startswith("conditions[1] at column 17: 'high' is not a value")
        tested = await call(
            ws,
            PkgID.MONITOR_CHECK_NOW,
            {"monitor": {"kind": "http", "url": "http://127.0.0.1:9/", "conditions": ["$.a =="]}},
        )
        assert tested["status_code"] == 2 and tested["data"]["errors"][0]["path"] == "conditions[0]"


async def test_failing_condition_text_and_degraded_state(server: ServerProcess) -> None:
    with HttpTarget() as target, HttpReceiver() as rx:
        target.respond("/health", 200, json.dumps({"status": "UP", "lag": 40}))
        async with await editor_ws(server) as ws:
            unsaved = await ok(
                ws,
                PkgID.MONITOR_CHECK_NOW,
                {"monitor": {"kind": "http", "url": target.url("/health"), "conditions": ["$.lag < 10"]}},
            )
            assert unsaved["result"]["error"] == "$.lag: expected < 10, got 40"
            hook = await ok(
                ws,
                PkgID.CHANNEL_CREATE,
                {
                    "name": unique("slow"),
                    "kind": "webhook",
                    "config": {"url": f"{rx.url}/slow"},
                    "on": ["degraded"],
                },
            )
            target.respond("/health", 200, json.dumps({"status": "UP", "lag": 3}))
            m = await ok(
                ws,
                PkgID.MONITOR_CREATE,
                {
                    "name": "lagging",
                    "kind": "http",
                    "url": target.url("/health"),
                    "conditions": ['$.status == "UP"', "warn: $.lag < 30"],
                    "channels": [hook["id"]],
                },
            )
            assert (await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]}))["state"] == "up"
            target.respond("/health", 200, json.dumps({"status": "UP", "lag": 40}))
            slow = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]})
            assert slow["state"] == "degraded"
            assert slow["result"]["ok"] and slow["result"]["degraded"]
            assert slow["result"]["warning"] == "$.lag: expected < 30, got 40"
            got = await ok(ws, PkgID.MONITOR_GET, {"id": m["id"]})
            assert got["state"] == "degraded" and got["last_error"] == "$.lag: expected < 30, got 40"
            summary = await ok(ws, PkgID.STATUS_SUMMARY, {})
            assert summary["counts"]["degraded"] == 1
            await rx.wait_for(1)
            alert = rx.requests[0].json()
            assert (alert["state"], alert["previous_state"]) == ("degraded", "up")
            assert alert["reason"] == "$.lag: expected < 30, got 40"
            target.respond("/health", 200, json.dumps({"status": "UP", "lag": 3}))
            assert (await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]}))["state"] == "up"
            await rx.wait_for(2)
            assert (rx.requests[1].json()["state"], rx.requests[1].json()["previous_state"]) == (
                "up",
                "degraded",
            )
            target.respond("/health", 200, json.dumps({"status": "DOWN", "lag": 3}))
            down = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]})
            assert down["state"] == "down"
            assert down["result"]["error"] == '$.status: expected "UP", got "DOWN"'
            uptime = await ok(ws, PkgID.STATS_UPTIME, {"monitor_id": m["id"], "windows": ["24h"]})
            # Three of four checks passed (degraded counts as up).
            assert (uptime["windows"]["24h"]["up"], uptime["windows"]["24h"]["checks"]) == (3, 4), uptime
            # The channel listens to degraded only: going down does not reach it.
            await rx.stays_at(2, 0.5)


async def test_certificate_alert_once_per_threshold(server: ServerProcess) -> None:
    with HttpTarget(tls=True, cert_days=10) as tls, HttpReceiver() as rx:
        async with await editor_ws(server) as ws:
            hook = await ok(
                ws,
                PkgID.CHANNEL_CREATE,
                {
                    "name": unique("hook"),
                    "kind": "webhook",
                    "config": {"url": f"{rx.url}/hook"},
                    "on": ["down"],
                },
            )
            m = await ok(
                ws,
                PkgID.MONITOR_CREATE,
                {
                    "name": "tls-site",
                    "kind": "http",
                    "url": tls.url("/"),
                    "verify_tls": False,
                    "channels": [hook["id"]],
                },
            )
            for _ in range(3):
                checked = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]})
                assert checked["state"] == "up"
                assert checked["result"]["cert_days_left"] in (9, 10)
                assert checked["result"]["cert_issuer"] == "CN=localhost"
            await rx.wait_for(1)
            await rx.stays_at(1, 1.0)
            payload = rx.requests[0].json()
            assert payload["event"] == "monitor.certificate_expiring"
            assert payload["monitor"]["id"] == m["id"]
            assert "14-day threshold" in payload["reason"] and "issuer CN=localhost" in payload["reason"]
            rows = await ok(ws, PkgID.DELIVERY_LIST, {"monitor_id": m["id"], "kind": "certificate"})
            assert [r["status"] for r in rows] == ["delivered"]
            summary = await ok(ws, PkgID.STATUS_SUMMARY, {})
            mine = next(x for x in summary["monitors"] if x["id"] == m["id"])
            assert mine["cert_days_left"] in (9, 10)
            got = await ok(ws, PkgID.MONITOR_GET, {"id": m["id"]})
            assert got["cert_issuer"] == "CN=localhost" and got["cert_expires_at"] is not None
            # A tighter threshold still to come alerts when configured to be reached now.
            updated = await ok(
                ws,
                PkgID.MONITOR_UPDATE,
                {"id": m["id"], "version": got["version"], "cert_alert_days": [12, 11]},
            )
            assert updated["cert_alert_days"] == [12, 11]
            await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]})
            await rx.wait_for(2)
            await asyncio.sleep(0.3)
            assert "11-day threshold" in rx.requests[1].json()["reason"]
            assert len(rx.requests) == 2

"""PagerDuty V3 webhooks end to end: one real server on PostgreSQL, a real monitored target,
a local PagerDuty Events v2 API and a webhook receiver for a later escalation step; the
webhooks are signed and POSTed over real HTTP as PagerDuty would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from app.alerting.pagerduty_webhook import sign
from app.protocol import PkgID
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.realtime_support import next_event
from tests.receivers import HttpReceiver, PagerDutyReceiver
from tests.server import ServerProcess, call, ok, ws_connect
from tests.targets import HttpTarget

ENV = {
    "DELIVERY_POLL_INTERVAL": "0.1",
    "DELIVERY_TIMEOUT": "2",
    "ESCALATION_SCAN_INTERVAL": "0.2",
    "WS_MESSAGE_RATE_LIMIT": "100000",
    "RATE_LIMIT_PER_MINUTE": "100000",
    "RATE_LIMIT_BURST": "10000",
}
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
SECRET = "whsec-0123456789-pagerduty"
REPEAT_S = 1.2  # escalation repeat period (policy minutes are fractional)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(services.create_pg_database(), env=ENV)
    srv.start()
    yield srv
    srv.stop()


def webhook_body(event_type: str, incident_key: str, agent: str = "Ada Lovelace") -> bytes:
    """A PagerDuty V3 webhook as PagerDuty sends it (trimmed to the fields that matter)."""
    return json.dumps(
        {
            "event": {
                "id": unique("01DEN"),
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": "2026-12-05T04:40:00.000Z",
                "agent": {"id": "PLH1HKV", "summary": agent, "type": "user_reference"},
                "client": None,
                "data": {
                    "id": "Q2Q5DKV7PMQ4UL",
                    "type": "incident",
                    "number": 42,
                    "status": event_type.split(".")[1],
                    "incident_key": incident_key,
                    "title": "[Watchpost] api is DOWN",
                    "service": {"id": "PSERVIC", "summary": "watchpost", "type": "service_reference"},
                },
            }
        }
    ).encode()


async def post(
    server: ServerProcess, channel: int | str, body: bytes, signature: str | None
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-PagerDuty-Signature"] = signature
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(f"{server.http_url}/hooks/pagerduty/{channel}", content=body, headers=headers)
    return r.status_code, r.json()


async def pd_channel(ws: ClientConnection, events_url: str, **config: Any) -> dict[str, Any]:
    cfg = {"routing_key": ROUTING_KEY, "events_url": events_url, **config}
    created = await ok(ws, PkgID.CHANNEL_CREATE, {"name": unique("pd"), "kind": "pagerduty", "config": cfg})
    return dict(created)


async def down_monitor(ws: ClientConnection, target: HttpTarget, name: str, **fields: Any) -> dict[str, Any]:
    """A monitor that is down, and its open incident."""
    target.respond(f"/{name}", 503)
    created = await ok(
        ws,
        PkgID.MONITOR_CREATE,
        {"name": name, "kind": "http", "url": target.url(f"/{name}"), "interval": 60, "timeout": 2, **fields},
    )
    assert (await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": created["id"]}))["state"] == "down"
    [incident] = await ok(ws, PkgID.INCIDENT_LIST, {"monitor_id": created["id"], "state": "unresolved"})
    return dict(incident)


async def test_an_ack_in_pagerduty_acknowledges_once_stops_escalation_and_is_not_echoed(
    server: ServerProcess,
) -> None:
    admin = await acreate_user(server.database_url, {unique("t"): "admin"})
    with PagerDutyReceiver(ROUTING_KEY) as pd, HttpReceiver() as rx, HttpTarget() as target:
        async with (
            ws_connect(server, server.login(admin, PASSWORD)) as ws,
            ws_connect(server, server.login(admin, PASSWORD)) as watch,
        ):
            await ok(watch, PkgID.SUBSCRIBE, {"topics": ["incidents"]})
            channel = await pd_channel(ws, pd.events_url, webhook_secret=SECRET)
            assert channel["config"]["webhook_secret"] == "***"
            hook = await ok(
                ws, PkgID.CHANNEL_CREATE, {"name": unique("h"), "kind": "webhook", "config": {"url": rx.url}}
            )
            policy = await ok(
                ws,
                PkgID.ESCALATION_CREATE,
                {
                    "name": "on-call",
                    "steps": [
                        {"after": 0, "channels": [channel["id"]]},
                        {"after": REPEAT_S / 60, "channels": [hook["id"]]},
                    ],
                    "repeat_every": REPEAT_S / 60,
                },
            )
            incident = await down_monitor(
                ws, target, "api", channels=[channel["id"]], escalation_policy=policy["id"]
            )
            key = f"watchpost-incident-{incident['id']}"
            await rx.wait_for(1)  # the escalation reached its second step: nobody acknowledged
            assert pd.alerts[key] == ["trigger"]
            assert (await next_event(watch, "incidents"))["data"]["action"] == "opened"

            # PagerDuty retrying a delivery while the first is still in flight: one ack wins.
            body = webhook_body("incident.acknowledged", key)
            answers = await asyncio.gather(
                *(post(server, channel["id"], body, sign(SECRET, body)) for _ in range(3))
            )
            assert {status for status, _ in answers} == {200}
            assert sorted(a["acknowledged"] for _, a in answers) == [False, False, True]
            assert {a["incident_id"] for _, a in answers} == {incident["id"]}
            event = (await next_event(watch, "incidents"))["data"]
            assert event["action"] == "acknowledged"
            assert event["incident"]["acked_by"] == "pagerduty:Ada Lovelace"
            assert event["incident"]["monitor"] == "api"

            detail = await ok(ws, PkgID.INCIDENT_GET, {"id": incident["id"]})
            assert (detail["state"], detail["acked_by"]) == ("acknowledged", "pagerduty:Ada Lovelace")
            assert detail["escalation"]["stop_reason"] == "acknowledged"
            assert detail["escalation"]["next_at"] is None

            # PagerDuty's own retry of the same delivery, and a second agent: nothing changes.
            again, replay = await post(server, channel["id"], body, sign(SECRET, body))
            assert (again, replay) == (200, {"incident_id": incident["id"], "acknowledged": False})
            other = webhook_body("incident.acknowledged", key, agent="Grace Hopper")
            assert (await post(server, channel["id"], other, sign(SECRET, other)))[1]["acknowledged"] is False
            assert (await ok(ws, PkgID.INCIDENT_GET, {"id": incident["id"]}))["acked_at"] == detail[
                "acked_at"
            ]
            # A dashboard click after it is no second acknowledgement either.
            assert (await ok(ws, PkgID.INCIDENT_ACK, {"id": incident["id"]}))[
                "acked_by"
            ] == "pagerduty:Ada Lovelace"

            # The escalation is over: no further step, however long (> two repeat periods).
            sent = len(rx.requests)
            await rx.stays_at(sent, 2 * REPEAT_S + 0.6)
            # The acknowledgement came from PagerDuty: none goes back to it.
            assert pd.alerts[key] == ["trigger"]
            rows = await ok(ws, PkgID.DELIVERY_LIST, {"channel_id": channel["id"], "per_page": 100})
            assert [r["kind"] for r in rows if r["incident_id"] == incident["id"]] == ["state"]

            audit = await ok(
                ws, PkgID.AUDIT_LIST, {"target_id": str(incident["id"]), "action": "INCIDENT_ACK"}
            )
            # Once, not per webhook delivery (the last row is the dashboard click above).
            assert [a["actor"] for a in audit] == [f"user:{admin}", "pagerduty:Ada Lovelace"]
            audit = audit[1:]
            assert audit[0]["details"]["channel_id"] == channel["id"]
            dumped = json.dumps([audit, await ok(ws, PkgID.CHANNEL_LIST, {})])
            assert SECRET not in dumped and ROUTING_KEY not in dumped


async def test_webhooks_are_refused_unsigned_unknown_oversize_and_cross_tenant(server: ServerProcess) -> None:
    admin = await acreate_user(server.database_url, {unique("t"): "admin"})
    other = await acreate_user(server.database_url, {unique("t"): "admin"})
    with PagerDutyReceiver(ROUTING_KEY) as pd, HttpTarget() as target:
        async with (
            ws_connect(server, server.login(admin, PASSWORD)) as ws,
            ws_connect(server, server.login(other, PASSWORD)) as ws_other,
        ):
            channel = await pd_channel(ws, pd.events_url, webhook_secret=SECRET)
            unsigned = await pd_channel(ws, pd.events_url)  # no webhook_secret: no hook
            mine = await down_monitor(ws, target, "db", channels=[channel["id"]])
            theirs = await down_monitor(ws_other, target, "their-db")
            key = f"watchpost-incident-{mine['id']}"
            body = webhook_body("incident.acknowledged", key)

            refused = {"error": "unknown webhook or invalid signature"}
            wrong = sign("another-secret-value", body)
            tampered = webhook_body("incident.acknowledged", key, agent="Mallory")
            for channel_id, payload, signature in [
                (channel["id"], body, wrong),  # signed with another secret
                (channel["id"], tampered, sign(SECRET, body)),  # body changed after signing
                (channel["id"], body, None),  # no signature
                (channel["id"], body, "v1=" + "0" * 64),
                (unsigned["id"], body, sign(SECRET, body)),  # the channel has no webhook secret
                (999_999_999, body, sign(SECRET, body)),  # no such channel
                ("not-a-number", body, sign(SECRET, body)),
            ]:
                assert await post(server, channel_id, payload, signature) == (401, refused)

            # Oversize: refused before it is read to the end or verified.
            huge = b'{"event": {"pad": "' + b"x" * (70 * 1024) + b'"}}'
            status, answer = await post(server, channel["id"], huge, sign(SECRET, huge))
            assert status == 413 and "65536 bytes" in answer["error"]

            # Another tenant's incident behaves as unknown, through a correctly signed hook.
            foreign = webhook_body("incident.acknowledged", f"watchpost-incident-{theirs['id']}")
            status, answer = await post(server, channel["id"], foreign, sign(SECRET, foreign))
            assert status == 200 and "ignored" in answer
            assert (await ok(ws_other, PkgID.INCIDENT_GET, {"id": theirs["id"]}))["state"] == "open"
            assert (await call(ws, PkgID.INCIDENT_GET, {"id": theirs["id"]}))["status_code"] != 0

            # PagerDuty's set-up ping and other event types are accepted and ignored.
            ping = json.dumps({"event": {"id": "P1", "event_type": "pagey.ping", "data": None}}).encode()
            assert (await post(server, channel["id"], ping, sign(SECRET, ping)))[0] == 200
            assert (await ok(ws, PkgID.INCIDENT_GET, {"id": mine["id"]}))["state"] == "open"

            # Resolved in PagerDuty: acknowledged here; the monitor decides when it is over.
            # Several signatures (PagerDuty while a secret is rotated): one valid one is enough.
            resolved = webhook_body("incident.resolved", key, agent="Ada Lovelace")
            signature = f"v1={'ab' * 32}, {sign(SECRET, resolved)}"
            assert (await post(server, channel["id"], resolved, signature))[1]["acknowledged"] is True
            detail = await ok(ws, PkgID.INCIDENT_GET, {"id": mine["id"]})
            assert (detail["state"], detail["acked_by"]) == ("acknowledged", "pagerduty:Ada Lovelace")

"""Apprise and PagerDuty channels, message templates and quiet hours, end to end: one real
server on PostgreSQL, real monitored targets, real local receivers (an HTTP capture
server behind an Apprise ``json://`` URL, a local PagerDuty Events v2 API)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col
from websockets.asyncio.client import ClientConnection

from app.alerting import outbox, senders
from app.alerting.message import Alert
from app.alerting.senders import Transport
from app.alerting.worker import DeliveryOptions, DeliveryWorker
from app.models.base import utcnow
from app.models.channel import Channel
from app.models.delivery import Delivery
from app.protocol import PkgID
from app.storage.db import Database
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.monitoring_fixtures import add_monitor, add_tenant, eventually, migrated_db
from tests.receivers import HttpReceiver, PagerDutyReceiver
from tests.server import ServerProcess, call, ok, ws_connect
from tests.targets import HttpTarget

FAST = {
    "DELIVERY_POLL_INTERVAL": "0.1",
    "DELIVERY_BACKOFF_BASE": "0.1",
    "DELIVERY_BACKOFF_CAP": "0.3",
    "DELIVERY_TIMEOUT": "2",
    "DELIVERY_MAX_ATTEMPTS": "4",
    "WS_MESSAGE_RATE_LIMIT": "100000",
    "RATE_LIMIT_PER_MINUTE": "100000",
    "RATE_LIMIT_BURST": "10000",
    # Receivers on 127.0.0.1 are allowed; 127.0.0.2 stands for a forbidden network.
    "ALERT_DENY_NETWORKS": "127.0.0.2/32",
    "PUBLIC_URL": "https://watch.example.com",
}
APPRISE_TOKEN = "APPRISETOKEN9876"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(services.create_pg_database(), env=FAST)
    srv.start()
    yield srv
    srv.stop()


async def _admin(server: ServerProcess) -> str:
    user = await acreate_user(server.database_url, {unique("t"): "admin"})
    return server.login(user, PASSWORD)


async def _monitor(
    ws: ClientConnection, target: HttpTarget, channels: list[int], name: str, **extra: Any
) -> int:
    created = await ok(
        ws,
        PkgID.MONITOR_CREATE,
        {
            "name": name,
            "kind": "http",
            "url": target.url(f"/{name}"),
            "interval": 60,
            "timeout": 2,
            "channels": channels,
            **extra,
        },
    )
    return int(created["id"])


async def _state(ws: ClientConnection, monitor_id: int) -> str:
    return str((await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": monitor_id}))["state"])


async def _settled(
    ws: ClientConnection, channel_id: int, count: int, within: float = 20.0
) -> list[dict[str, Any]]:
    """The channel's deliveries once ``count`` exist and none is pending or in flight."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        rows = list(await ok(ws, PkgID.DELIVERY_LIST, {"channel_id": channel_id, "per_page": 100}))
        if len(rows) >= count and all(r["status"] not in ("pending", "sending") for r in rows):
            return rows
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"deliveries did not settle: {json.dumps(rows)[:2000]}")
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------------ apprise


async def test_apprise_channel_is_masked_tested_and_delivered_through_the_outbox(
    server: ServerProcess, target: HttpTarget
) -> None:
    token = await _admin(server)
    with HttpReceiver() as rx:
        url = f"json://127.0.0.1:{rx.port}/hook/{APPRISE_TOKEN}"
        async with ws_connect(server, token) as ws:
            created = await ok(
                ws,
                PkgID.CHANNEL_CREATE,
                {"name": unique("apprise"), "kind": "apprise", "config": {"urls": [url]}},
            )
            assert created["config"] == {"urls": ["json://***"]}
            listed = await ok(ws, PkgID.CHANNEL_LIST, {"kind": "apprise"})
            assert APPRISE_TOKEN not in json.dumps([created, listed])
            cid = created["id"]

            tested = await ok(ws, PkgID.CHANNEL_TEST, {"id": cid})
            assert tested["ok"] is True, tested
            assert tested["rendered"]["subject"].startswith("[Watchpost] Test message for")
            sent = rx.requests[-1]
            assert sent.path == f"/hook/{APPRISE_TOKEN}"
            assert sent.json()["title"] == tested["rendered"]["subject"]

            # Down: delivered through the outbox by the worker.
            target.respond("/apprise-api", 503)
            mid = await _monitor(ws, target, [cid], "apprise-api")
            assert await _state(ws, mid) == "down"
            rows = await _settled(ws, cid, 1)
            assert rows[0]["status"] == "delivered" and rows[0]["attempts"] == 1
            down = rx.requests[-1].json()
            assert down["title"] == "[Watchpost] apprise-api is DOWN"
            assert "Reason: status 503" in down["message"]

            # Up, with the service failing once with 503: retried, then delivered.
            rx.fail(1, 503)
            target.respond("/apprise-api", 200)
            assert await _state(ws, mid) == "up"
            rows = await _settled(ws, cid, 2)
            up = rows[0]
            assert up["state"] == "up" and up["status"] == "delivered" and up["attempts"] == 2
            first = up["attempt_log"][0]
            assert first["ok"] is False and first["permanent"] is False and first["status_code"] == 503

            # Down again, the service answering 400: permanent, no retries.
            rx.fail(1, 400)
            target.respond("/apprise-api", 503)
            assert await _state(ws, mid) == "down"
            rows = await _settled(ws, cid, 3)
            assert rows[0]["status"] == "failed" and rows[0]["attempts"] == 1
            assert rows[0]["attempt_log"][0]["permanent"] is True
            assert rows[0]["last_status_code"] == 400

            # A template reaches Apprise whole: subject as the title, body as the message.
            templated = await ok(
                ws,
                PkgID.CHANNEL_TEST,
                {
                    "id": cid,
                    "template": {"subject": "{{ monitor.name }}!", "body": "{{ reason }} / {{ state }}"},
                },
            )
            assert templated["rendered"] == {"subject": "checkout-api!", "body": "HTTP 503 / down"}
            assert rx.requests[-1].json()["title"] == "checkout-api!"
            assert rx.requests[-1].json()["message"] == "HTTP 503 / down"

            audit = await ok(ws, PkgID.AUDIT_LIST, {"target_id": str(cid)})
            assert audit, "CHANNEL_CREATE and CHANNEL_TEST are audited"
            everything = json.dumps([rows, audit, await ok(ws, PkgID.CHANNEL_LIST, {})])
            assert APPRISE_TOKEN not in everything
    assert APPRISE_TOKEN not in server.log_text()


async def test_apprise_urls_are_checked_and_denied_destinations_refused(server: ServerProcess) -> None:
    token = await _admin(server)
    with HttpReceiver(host="127.0.0.2") as forbidden:
        async with ws_connect(server, token) as ws:
            for urls, path in (
                (["nosuchservice://abc/def"], "config.urls.0"),
                (["json://127.0.0.1:1/x", "mailto://user:pw@example.com"], "config.urls.1"),
                ([], "config.urls"),
            ):
                resp = await call(
                    ws,
                    PkgID.CHANNEL_CREATE,
                    {"name": unique("bad"), "kind": "apprise", "config": {"urls": urls}},
                )
                assert resp["status_code"] == 2, resp
                assert resp["data"]["errors"][0]["path"] == path, resp
                assert "user:pw" not in json.dumps(resp)

            tested = await ok(
                ws,
                PkgID.CHANNEL_TEST,
                {
                    "kind": "apprise",
                    "config": {"urls": [f"json://127.0.0.2:{forbidden.port}/{APPRISE_TOKEN}"]},
                },
            )
            assert tested["ok"] is False and tested["permanent"] is True, tested
            assert "ALERT_DENY_NETWORKS" in tested["error"]
            assert APPRISE_TOKEN not in json.dumps(tested)
    assert forbidden.requests == []


# ---------------------------------------------------------------------- pagerduty


async def test_pagerduty_follows_the_incident_trigger_acknowledge_resolve(
    server: ServerProcess, target: HttpTarget
) -> None:
    token = await _admin(server)
    with PagerDutyReceiver(ROUTING_KEY) as pd:
        async with ws_connect(server, token) as ws:
            created = await ok(
                ws,
                PkgID.CHANNEL_CREATE,
                {
                    "name": unique("pd"),
                    "kind": "pagerduty",
                    "config": {"routing_key": ROUTING_KEY, "events_url": pd.events_url},
                },
            )
            assert created["config"]["routing_key"] == "***"
            assert created["config"]["severity"] == "critical"
            cid = created["id"]

            tested = await ok(ws, PkgID.CHANNEL_TEST, {"id": cid})
            assert tested["ok"] is True and tested["status_code"] == 202, tested
            assert list(pd.alerts.values()) == [["trigger", "resolve"]]

            target.respond("/pd-api", 503)
            mid = await _monitor(ws, target, [cid], "pd-api")
            assert await _state(ws, mid) == "down"
            await _settled(ws, cid, 1)
            incidents = await ok(ws, PkgID.INCIDENT_LIST, {"monitor_id": mid})
            key = f"watchpost-incident-{incidents[0]['id']}"
            assert pd.alerts[key] == ["trigger"]
            trigger = next(r.json() for r in pd.requests if r.json().get("dedup_key") == key)
            assert trigger["payload"]["summary"] == "[Watchpost] pd-api is DOWN"
            assert trigger["client_url"] == "https://watch.example.com/"

            await ok(ws, PkgID.INCIDENT_ACK, {"id": incidents[0]["id"]})
            await ok(ws, PkgID.INCIDENT_ACK, {"id": incidents[0]["id"]})  # the first ack counts
            rows = await _settled(ws, cid, 2)
            assert rows[0]["kind"] == "ack" and rows[0]["status"] == "delivered"
            assert pd.alerts[key] == ["trigger", "acknowledge"]

            target.respond("/pd-api", 200)
            assert await _state(ws, mid) == "up"
            rows = await _settled(ws, cid, 3)
            assert all(r["incident_id"] == incidents[0]["id"] for r in rows)
            assert pd.alerts[key] == ["trigger", "acknowledge", "resolve"]

            # The next incident, resolved by hand in Watchpost: resolved in PagerDuty too.
            target.respond("/pd-api", 503)
            assert await _state(ws, mid) == "down"
            await _settled(ws, cid, 4)
            second = (await ok(ws, PkgID.INCIDENT_LIST, {"monitor_id": mid, "state": "open"}))[0]
            await ok(ws, PkgID.INCIDENT_RESOLVE, {"id": second["id"]})
            rows = await _settled(ws, cid, 5)
            assert (rows[0]["state"], rows[0]["status"]) == ("resolved", "delivered")
            assert pd.alerts[f"watchpost-incident-{second['id']}"] == ["trigger", "resolve"]

            # A wrong routing key is refused by PagerDuty with 400: permanent.
            wrong = await ok(
                ws,
                PkgID.CHANNEL_TEST,
                {"id": cid, "config": {"routing_key": "WRONG" + ROUTING_KEY[5:], "events_url": "***"}},
            )
            assert wrong["ok"] is False and wrong["permanent"] is True and wrong["status_code"] == 400
            # The routing key only goes to the events URL it was given for.
            with PagerDutyReceiver(ROUTING_KEY) as elsewhere:
                moved = await call(
                    ws, PkgID.CHANNEL_TEST, {"id": cid, "config": {"events_url": elsewhere.events_url}}
                )
                assert moved["status_code"] == 2, moved
                assert moved["data"]["errors"] == [
                    {
                        "path": "config.routing_key",
                        "msg": "give it again (or null) when the destination changes",
                    }
                ]
            assert elsewhere.requests == []
            assert ROUTING_KEY not in json.dumps(await ok(ws, PkgID.AUDIT_LIST, {"target_id": str(cid)}))


# ---------------------------------------------------------------------- templates


async def test_templates_are_refused_with_their_position_rendered_by_test_and_delivered(
    server: ServerProcess, target: HttpTarget
) -> None:
    token = await _admin(server)
    template = {
        "subject": "{{ monitor.name }} went {{ state|upper }} ({{ tenant.timezone }})",
        "body": (
            "{{ monitor.name }} is {{ state }} since {{ time }}\nwhy: {{ reason }}\n{{ links.dashboard }}"
        ),
    }
    with HttpReceiver() as rx:
        async with ws_connect(server, token) as ws:
            await ok(ws, PkgID.TENANT_UPDATE, {"timezone": "Europe/Berlin"})
            for bad, where in (
                ({"body": "fine\n{{ monitor.name }"}, ("template.body", "line 2")),
                ({"subject": "{{ state|nosuchfilter }}"}, ("template.subject", "line 1")),
                ({"body": "{% macro m() %}{% endmacro %}"}, ("template.body", "macro")),
                (
                    {
                        "body": "{% for a in range(9) %}{% for b in range(9) %}{% for c in range(9) %}"
                        "{% endfor %}{% endfor %}{% endfor %}"
                    },
                    ("template.body", "nest"),
                ),
                ({"body": "{{ 'x' * 1000000 }}"}, ("template.body", "longer than")),
                ({"body": "{% for i in range(1000000) %}{% endfor %}"}, ("template.body", "range")),
            ):
                resp = await call(
                    ws,
                    PkgID.CHANNEL_CREATE,
                    {
                        "name": unique("tpl"),
                        "kind": "webhook",
                        "config": {"url": f"{rx.url}/t"},
                        "template": bad,
                    },
                )
                assert resp["status_code"] == 2, resp
                error = resp["data"]["errors"][0]
                assert error["path"] == where[0] and where[1] in error["msg"], resp

            created = await ok(
                ws,
                PkgID.CHANNEL_CREATE,
                {
                    "name": unique("tpl"),
                    "kind": "webhook",
                    "config": {"url": f"{rx.url}/t"},
                    "template": template,
                },
            )
            assert created["template"] == template
            cid = created["id"]
            refused = await call(ws, PkgID.CHANNEL_UPDATE, {"id": cid, "template": {"body": "{% if %}"}})
            assert refused["status_code"] == 2 and refused["data"]["errors"][0]["path"] == "template.body"

            tested = await ok(ws, PkgID.CHANNEL_TEST, {"id": cid})
            assert tested["ok"] is True
            rendered = tested["rendered"]
            assert rendered["subject"] == "checkout-api went DOWN (Europe/Berlin)"
            assert "why: HTTP 503" in rendered["body"] and "https://watch.example.com/" in rendered["body"]
            assert re.search(r" CES?T\n", rendered["body"]), rendered  # Berlin time, summer or winter
            assert rx.requests[-1].json()["text"] == rendered["body"]

            # A default channel's test still says what it always said.
            plain = await ok(
                ws, PkgID.CHANNEL_TEST, {"kind": "webhook", "config": {"url": f"{rx.url}/plain"}}
            )
            assert plain["rendered"]["body"].startswith("[Watchpost] Test message for unsaved channel\n")

            target.respond("/tpl-api", 503)
            mid = await _monitor(ws, target, [cid], "tpl-api")
            assert await _state(ws, mid) == "down"
            await _settled(ws, cid, 1)
            text = rx.requests[-1].json()["text"]
            assert text.startswith("tpl-api is down since ") and re.search(r" CES?T\n", text), text
            assert "why: status 503" in text


# ------------------------------------------------------------------- quiet hours


async def test_quiet_hours_hold_alerts_except_for_critical_monitors(
    server: ServerProcess, target: HttpTarget
) -> None:
    token = await _admin(server)
    always = {"timezone": "UTC", "windows": [{"start": "00:00", "end": "24:00"}]}
    with HttpReceiver() as rx:
        async with ws_connect(server, token) as ws:
            bad = await call(
                ws,
                PkgID.CHANNEL_CREATE,
                {
                    "name": unique("q"),
                    "kind": "webhook",
                    "config": {"url": f"{rx.url}/q"},
                    "quiet_hours": {
                        "timezone": "Mars/Olympus",
                        "windows": [{"start": "22:00", "end": "07:00"}],
                    },
                },
            )
            assert bad["status_code"] == 2 and bad["data"]["errors"][0]["path"] == "quiet_hours.timezone"
            created = await ok(
                ws,
                PkgID.CHANNEL_CREATE,
                {
                    "name": unique("q"),
                    "kind": "webhook",
                    "config": {"url": f"{rx.url}/q"},
                    "quiet_hours": always,
                },
            )
            cid = created["id"]
            target.respond("/quiet-api", 503)
            target.respond("/loud-api", 503)
            quiet = await _monitor(ws, target, [cid], "quiet-api")
            loud = await _monitor(ws, target, [cid], "loud-api", tags=["critical"])
            assert await _state(ws, quiet) == "down"
            assert await _state(ws, loud) == "down"

            deadline = asyncio.get_running_loop().time() + 20
            while True:
                rows = {r["monitor"]: r for r in await ok(ws, PkgID.DELIVERY_LIST, {"channel_id": cid})}
                held = rows.get("quiet-api")
                if rows.get("loud-api", {}).get("status") == "delivered" and held and held["last_error"]:
                    break
                assert asyncio.get_running_loop().time() < deadline, rows
                await asyncio.sleep(0.1)
            assert held["status"] == "pending" and held["attempts"] == 0
            assert held["last_error"].startswith("held by the channel's quiet hours until ")
            assert [r.json()["monitor"]["name"] for r in rx.requests] == ["loud-api"]

            # Lifting the quiet hours sends what they held.
            await ok(ws, PkgID.CHANNEL_UPDATE, {"id": cid, "quiet_hours": None})
            final = await _settled(ws, cid, 2)
            assert {r["monitor"]: r["status"] for r in final} == {
                "quiet-api": "delivered",
                "loud-api": "delivered",
            }
            assert sorted(r.json()["monitor"]["name"] for r in rx.requests) == ["loud-api", "quiet-api"]


async def test_reminders_inside_quiet_hours_are_skipped_and_critical_ones_sent(tmp_path: Path) -> None:
    """In process on SQLite (the embedded default), with the real outbox and worker."""
    db = await migrated_db(f"sqlite+aiosqlite:///{tmp_path / 'wp.db'}")
    try:
        with HttpReceiver() as rx:
            tenant = await add_tenant(db)
            async with db.session() as s:
                channel = Channel(
                    tenant_id=tenant,
                    name="night",
                    kind="webhook",
                    config={"url": f"{rx.url}/r"},
                    remind_every=10,
                    quiet_hours={"windows": [{"start": "00:00", "end": "24:00"}]},
                )
                s.add(channel)
                await s.commit()
                assert channel.id is not None
                cid = channel.id
            down_since = utcnow() - dt.timedelta(minutes=15)
            for name, tags in (("sleepy", []), ("vital", ["critical"])):
                await add_monitor(
                    db,
                    tenant,
                    name=name,
                    tags=tags,
                    state="down",
                    state_changed_at=down_since,
                    channels=[cid],
                )
            assert await outbox.enqueue_reminders(db) == 2
            worker = DeliveryWorker(db, DeliveryOptions(poll_interval=0.05, reminder_interval=3600.0))
            await worker.start()
            try:
                await eventually(lambda: _none_pending(db), what="reminders settled")
            finally:
                await worker.stop()
            async with db.session() as s:
                rows = (await s.execute(select(Delivery).order_by(col(Delivery.id)))).scalars().all()
            outcome = {r.monitor_name: (r.status, r.last_error) for r in rows}
            assert outcome == {
                "sleepy": ("cancelled", "reminder skipped: inside the channel's quiet hours"),
                "vital": ("delivered", None),
            }
            assert [r.json()["monitor"]["name"] for r in rx.requests] == ["vital"]
    finally:
        await db.close()


async def _none_pending(db: Database) -> bool:
    return await outbox.pending_count(db) == 0


async def test_apprise_with_several_urls_is_delivered_when_any_url_took_it() -> None:
    """Straight through the sender: a retry would repeat the alert for the URLs that took it."""
    with HttpReceiver() as good, HttpReceiver() as bad:
        config = {"urls": [f"json://127.0.0.1:{good.port}/a", f"json://127.0.0.1:{bad.port}/{APPRISE_TOKEN}"]}
        alert = Alert(monitor_name="multi", state="down", at=utcnow())
        async with httpx.AsyncClient() as http:
            transport = Transport(http, timeout=3.0)
            bad.fail(1, 400)
            some = await senders.send("apprise", config, alert, transport)
            assert some.ok is True and some.error is not None
            assert "URL 2 (json://***)" in some.error and "error=400" in some.error
            assert APPRISE_TOKEN not in some.error
            good.fail(1, 400)
            bad.fail(1, 503)
            mixed = await senders.send("apprise", config, alert, transport)
            assert mixed.ok is False and mixed.permanent is False  # one of them may work on retry
            good.fail(1, 404)
            bad.fail(1, 400)
            dead = await senders.send("apprise", config, alert, transport)
            assert dead.ok is False and dead.permanent is True
    assert len(good.requests) == 3 and len(bad.requests) == 3

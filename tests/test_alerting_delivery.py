"""Alert delivery end to end: real servers on PostgreSQL, real monitored targets, real
receivers. State changes come from MONITOR_CHECK_NOW (recorded like a scheduled check)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from app.protocol import PkgID
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.receivers import HttpReceiver, Reply, SmtpReceiver
from tests.server import ServerProcess, ok, ws_connect
from tests.targets import HttpTarget

FAST = {
    "DELIVERY_POLL_INTERVAL": "0.1",
    "DELIVERY_BACKOFF_BASE": "0.1",
    "DELIVERY_BACKOFF_CAP": "0.3",
    "DELIVERY_TIMEOUT": "1.5",
    "DELIVERY_MAX_ATTEMPTS": "4",
    "WS_MESSAGE_RATE_LIMIT": "100000",
    "RATE_LIMIT_PER_MINUTE": "100000",
    "RATE_LIMIT_BURST": "10000",
}
SECRET = "e2e-signing-secret-42"
TOKEN_IN_PATH = "TPATHTOKEN0123"


@pytest.fixture(scope="module")
def fast_server() -> Iterator[ServerProcess]:
    srv = ServerProcess(services.create_pg_database(), env=FAST)
    srv.start()
    yield srv
    srv.stop()


async def monitor(ws: ClientConnection, target: HttpTarget, channels: list[int], name: str = "api") -> int:
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
        },
    )
    return int(created["id"])


async def check_now(ws: ClientConnection, monitor_id: int) -> Any:
    return await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": monitor_id})


async def channel(ws: ClientConnection, kind: str, config: dict[str, Any], **extra: Any) -> int:
    created = await ok(
        ws, PkgID.CHANNEL_CREATE, {"name": unique(kind), "kind": kind, "config": config, **extra}
    )
    return int(created["id"])


async def deliveries(ws: ClientConnection, **filters: Any) -> list[dict[str, Any]]:
    return list(await ok(ws, PkgID.DELIVERY_LIST, {"per_page": 200, **filters}))


async def settle(ws: ClientConnection, count: int, within: float = 20.0) -> list[dict[str, Any]]:
    """Wait until ``count`` deliveries exist and none is pending or in flight."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        rows = await deliveries(ws)
        if len(rows) >= count and all(r["status"] not in ("pending", "sending") for r in rows):
            return rows
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"deliveries did not settle: {json.dumps(rows)[:2000]}")
        await asyncio.sleep(0.1)


async def test_down_then_up_alerts_every_linked_channel_exactly_once(
    fast_server: ServerProcess, target: HttpTarget
) -> None:
    slug = unique("t")
    editor = await acreate_user(fast_server.database_url, {slug: "editor"})
    with HttpReceiver() as rx, SmtpReceiver() as smtp:
        async with ws_connect(fast_server, fast_server.login(editor, PASSWORD)) as ws:
            hook = await channel(ws, "webhook", {"url": f"{rx.url}/hook", "secret": SECRET})
            slack = await channel(ws, "slack", {"url": f"{rx.url}/slack/{TOKEN_IN_PATH}"})
            discord = await channel(ws, "discord", {"url": f"{rx.url}/discord"})
            mail = await channel(
                ws,
                "email",
                {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "security": "none",
                    "from": "wp@example.com",
                    "to": ["a@example.com"],
                },
            )
            await channel(ws, "webhook", {"url": f"{rx.url}/unlinked"})
            target.respond("/api", 503)
            mid = await monitor(ws, target, [hook, slack, discord, mail])

            assert (await check_now(ws, mid))["state"] == "down"
            await check_now(ws, mid)  # still down: not a new state change
            rows = await settle(ws, 4)
            await rx.wait_for(3)
            await smtp.wait_for(1)
            await rx.stays_at(3, 1.0)
            assert {r.path for r in rx.requests} == {"/hook", f"/slack/{TOKEN_IN_PATH}", "/discord"}
            assert sorted(r["channel_id"] for r in rows) == sorted([hook, slack, discord, mail])
            assert {(r["state"], r["status"], r["attempts"], r["monitor_id"]) for r in rows} == {
                ("down", "delivered", 1, mid)
            }
            assert smtp.mails[0].subject == "[Watchpost] api is DOWN"
            hook_post = next(r for r in rx.requests if r.path == "/hook").json()
            assert (hook_post["state"], hook_post["previous_state"], hook_post["monitor"]["id"]) == (
                "down",
                "pending",
                mid,
            )

            target.respond("/api", 200)
            assert (await check_now(ws, mid))["state"] == "up"
            rows = await settle(ws, 8)
            await rx.wait_for(6)
            await smtp.wait_for(2)
            assert sorted(r["state"] for r in rows) == ["down"] * 4 + ["up"] * 4
            assert len(await deliveries(ws, channel_id=hook)) == 2
            assert len(await deliveries(ws, monitor_id=mid, status="delivered")) == 8
            assert await deliveries(ws, status="failed") == []
    # Nothing secret reached the server's log while sending.
    log = fast_server.log_text()
    assert SECRET not in log and TOKEN_IN_PATH not in log


async def test_retries_then_success_and_permanent_failure_without_retries(
    fast_server: ServerProcess, target: HttpTarget
) -> None:
    slug = unique("t")
    editor = await acreate_user(fast_server.database_url, {slug: "editor"})
    with HttpReceiver() as flaky, HttpReceiver(default=Reply(status=400, body=b"bad payload")) as broken:
        flaky.fail(2, status=500)
        async with ws_connect(fast_server, fast_server.login(editor, PASSWORD)) as ws:
            retrying = await channel(ws, "webhook", {"url": flaky.url})
            refusing = await channel(ws, "discord", {"url": f"{broken.url}/api/webhooks/1/{TOKEN_IN_PATH}"})
            target.respond("/db", 500)
            mid = await monitor(ws, target, [retrying, refusing], name="db")
            await check_now(ws, mid)
            await settle(ws, 2)
            await flaky.wait_for(3)
            await broken.stays_at(1, 1.0)  # a permanent 400 is never retried
            [ok_row] = await deliveries(ws, channel_id=retrying)
            assert (ok_row["status"], ok_row["attempts"]) == ("delivered", 3)
            assert [(a["attempt"], a["ok"], a["status_code"]) for a in ok_row["attempt_log"]] == [
                (1, False, 500),
                (2, False, 500),
                (3, True, 200),
            ]
            [failed] = await deliveries(ws, status="failed")
            assert (failed["channel_id"], failed["attempts"], failed["last_status_code"]) == (
                refusing,
                1,
                400,
            )
            assert "bad payload" in failed["last_error"] and TOKEN_IN_PATH not in json.dumps(failed)
            assert len(flaky.requests) == 3
    assert TOKEN_IN_PATH not in fast_server.log_text()
    status, body = fast_server.get("/metrics")
    assert status == 200
    assert metric(body, 'alert_delivery_attempts_total{kind="webhook",result="transient"}') >= 2
    assert metric(body, 'alert_delivery_attempts_total{kind="discord",result="permanent"}') >= 1
    assert metric(body, 'alert_deliveries_finished_total{kind="discord",status="failed"}') >= 1


def metric(body: bytes, series: str) -> float:
    for line in body.decode().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not exported")


async def test_pending_deliveries_are_sent_after_a_restart(
    fast_server: ServerProcess, target: HttpTarget
) -> None:
    slug = unique("t")
    editor = await acreate_user(fast_server.database_url, {slug: "editor"})
    with HttpReceiver() as rx:
        rx.hang(1)  # the first send is in flight when the server is told to stop
        async with ws_connect(fast_server, fast_server.login(editor, PASSWORD)) as ws:
            hook = await channel(ws, "webhook", {"url": rx.url})
            target.respond("/svc", 500)
            await check_now(ws, await monitor(ws, target, [hook], name="svc"))
            await rx.wait_for(1)
        fast_server.restart()
        await rx.wait_for(2)
        async with ws_connect(fast_server, fast_server.login(editor, PASSWORD)) as ws:
            [row] = await settle(ws, 1)
        assert (row["status"], row["attempts"]) == ("delivered", 2)
        first, second = row["attempt_log"]
        assert (first["ok"], second["ok"]) == (False, True)
        assert "did not answer" in first["error"]
        await rx.stays_at(2, 0.5)


async def test_two_instances_sharing_postgresql_alert_once_per_channel(
    fast_server: ServerProcess, target: HttpTarget
) -> None:
    a = fast_server
    b = ServerProcess(a.database_url, env=FAST)
    b.start()
    try:
        slug = unique("t")
        editor = await acreate_user(a.database_url, {slug: "editor"})
        with HttpReceiver() as rx:
            async with (
                ws_connect(a, a.login(editor, PASSWORD)) as ws_a,
                ws_connect(b, b.login(editor, PASSWORD)) as ws_b,
            ):
                hooks = [await channel(ws_a, "webhook", {"url": f"{rx.url}/c{i}"}) for i in range(2)]
                ids = []
                for i in range(4):
                    target.respond(f"/m{i}", 500)
                    ids.append(await monitor(ws_a, target, hooks, name=f"m{i}"))
                # Both instances record each failure at the same moment: one transition, however raced.
                for mid in ids:
                    await asyncio.gather(check_now(ws_a, mid), check_now(ws_b, mid))
                await rx.wait_for(8)
                await rx.stays_at(8, 1.0)
                rows = await settle(ws_b, 8)
            delivery_ids = [r.headers["x-watchpost-delivery"] for r in rx.requests]
            assert len(set(delivery_ids)) == 8
            assert sorted((r["monitor_id"], r["channel_id"]) for r in rows) == sorted(
                (m, c) for m in ids for c in hooks
            )
            assert {(r["status"], r["attempts"]) for r in rows} == {("delivered", 1)}
    finally:
        b.stop()

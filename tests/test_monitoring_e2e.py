"""The whole monitoring loop through a real server with its collector on (PostgreSQL):
real targets on loopback, a subscribed WebSocket client, events in order."""

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
from tests.server import ServerProcess, call, ok, ws_connect
from tests.targets import HttpTarget

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def collecting_server() -> Iterator[ServerProcess]:
    srv = ServerProcess(
        services.create_pg_database(),
        env={
            "COLLECTOR_ENABLED": "true",
            "MONITOR_MIN_INTERVAL": "1",
            "COLLECTOR_TICK": "0.2",
            "COLLECTOR_JITTER": "0.2",
            "WS_MESSAGE_RATE_LIMIT": "100000",
        },
    ).start()
    yield srv
    srv.stop()


async def next_event(
    ws: ClientConnection, want: Any, seen: list[dict[str, Any]], within: float = 20
) -> dict[str, Any]:
    """Read frames until ``want(event)`` holds; every event read is appended to ``seen``."""
    async with asyncio.timeout(within):
        while True:
            msg = json.loads(await ws.recv())
            if "topic" not in msg:
                continue
            seen.append(msg)
            if want(msg):
                return dict(msg)


def _what(event: dict[str, Any]) -> str:
    d = event["data"]
    if event["pkg_id"] == 900:
        return str(d["state"])
    if event["pkg_id"] == 901:
        return f"{'ok' if d['ok'] else 'fail'}/{d['state']}"
    if event["pkg_id"] == 903:
        return str(d["action"])
    return ""


def kinds(seen: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(pkg_id, what) per event, collapsing repeats (e.g. several ok results in a row)."""
    out: list[tuple[int, str]] = []
    for e in seen:
        item = (int(e["pkg_id"]), _what(e))
        if not out or out[-1] != item:
            out.append(item)
    return out


async def test_down_incident_up_resolved_events_in_order(
    collecting_server: ServerProcess, target: HttpTarget
) -> None:
    user = await acreate_user(collecting_server.database_url, {unique("t"): "editor"})
    target.respond("/svc", 200)
    async with ws_connect(collecting_server, collecting_server.login(user, PASSWORD)) as ws:
        await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors", "incidents"]})
        m = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            {
                "name": "svc",
                "kind": "http",
                "url": target.url("/svc"),
                "interval": 1,
                "timeout": 0.5,
                "fail_threshold": 2,
            },
        )
        await ok(ws, PkgID.SUBSCRIBE, {"topics": [f"monitor.{m['id']}"]})
        seen: list[dict[str, Any]] = []
        await next_event(ws, lambda e: e["pkg_id"] == 900 and e["data"]["state"] == "up", seen)
        seen.clear()
        target.respond("/svc", 500)
        await next_event(ws, lambda e: e["pkg_id"] == 903 and e["data"]["action"] == "opened", seen)
        assert kinds(seen)[-4:] == [(901, "fail/up"), (901, "fail/down"), (900, "down"), (903, "opened")]
        opened = seen[-1]["data"]["incident"]
        assert opened["monitor_id"] == m["id"] and opened["cause"] == "status 500, expected 200-399"
        seen.clear()
        target.respond("/svc", 200)
        await next_event(ws, lambda e: e["pkg_id"] == 903 and e["data"]["action"] == "resolved", seen)
        assert kinds(seen)[-3:] == [(901, "ok/up"), (900, "up"), (903, "resolved")]
        resolved = seen[-1]["data"]["incident"]
        assert (
            resolved["id"] == opened["id"]
            and resolved["resolved_by"] == "monitor"
            and resolved["duration_s"] > 0
        )
        # Sequence numbers are strictly increasing per topic.
        got = await ok(ws, PkgID.INCIDENT_GET, {"id": opened["id"]})
        assert got["state"] == "resolved"
        history = await call(ws, PkgID.CHECK_HISTORY, {"monitor_id": m["id"], "limit": 500})
        assert target.hits("/svc") >= len(history["data"])  # every recorded result was a real probe
        await ok(ws, PkgID.MONITOR_DELETE, {"id": m["id"]})


async def test_push_monitor_goes_down_when_pushes_stop(collecting_server: ServerProcess) -> None:
    user = await acreate_user(collecting_server.database_url, {unique("t"): "editor"})
    async with ws_connect(collecting_server, collecting_server.login(user, PASSWORD)) as ws:
        await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
        m = await ok(ws, PkgID.MONITOR_CREATE, {"name": "node", "kind": "push", "interval": 1, "grace": 1})
        for _ in range(8):  # pushes every 0.3 s keep it up for ~2.4 s
            assert (await ok(ws, PkgID.HEARTBEAT_PUSH, {"push_token": m["push_token"]}))["state"] == "up"
            await asyncio.sleep(0.3)
        assert (await ok(ws, PkgID.MONITOR_GET, {"id": m["id"]}))["state"] == "up"
        seen: list[dict[str, Any]] = []
        down = await next_event(ws, lambda e: e["pkg_id"] == 900 and e["data"]["state"] == "down", seen)
        assert down["data"]["id"] == m["id"] and "no push received within 2 s" in down["data"]["error"]
        await ok(ws, PkgID.HEARTBEAT_PUSH, {"push_token": m["push_token"]})
        assert (await ok(ws, PkgID.MONITOR_GET, {"id": m["id"]}))["state"] == "up"


async def test_group_follows_min_up(collecting_server: ServerProcess, target: HttpTarget) -> None:
    user = await acreate_user(collecting_server.database_url, {unique("t"): "editor"})
    async with ws_connect(collecting_server, collecting_server.login(user, PASSWORD)) as ws:
        await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
        members = []
        for i in range(3):
            target.respond(f"/o{i}", 200)
            members.append(
                await ok(
                    ws,
                    PkgID.MONITOR_CREATE,
                    {
                        "name": f"orch-{i}",
                        "kind": "http",
                        "interval": 1,
                        "timeout": 0.5,
                        "url": target.url(f"/o{i}"),
                    },
                )
            )
        group = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            {
                "name": "bridge",
                "kind": "group",
                "interval": 1,
                "timeout": 0.5,
                "members": [m["id"] for m in members],
                "min_up": 2,
            },
        )
        seen: list[dict[str, Any]] = []

        def group_is(state: str) -> Any:
            return lambda e: (
                e["pkg_id"] == 900 and e["data"]["id"] == group["id"] and e["data"]["state"] == state
            )

        await next_event(ws, group_is("up"), seen)
        target.respond("/o0", 500)
        await next_event(ws, group_is("degraded"), seen)
        target.respond("/o1", 500)
        down = await next_event(ws, group_is("down"), seen)
        assert "members up, 2 needed" in down["data"]["error"]
        incidents = await ok(ws, PkgID.INCIDENT_LIST, {"monitor_id": group["id"]})
        assert len(incidents) == 1 and incidents[0]["state"] == "open"
        target.respond("/o0", 200)
        await next_event(ws, group_is("degraded"), seen)
        incidents = await ok(ws, PkgID.INCIDENT_LIST, {"monitor_id": group["id"]})
        assert incidents[0]["state"] == "resolved"  # degraded still meets min_up

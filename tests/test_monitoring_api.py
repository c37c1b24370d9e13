"""Monitoring packages over real sockets (SQLite and PostgreSQL, collector off):
CRUD, validation, optimistic versions, CHECK_NOW, pushes, incidents, maintenance,
and tenant isolation on every package."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from app.protocol import PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, call_many, ok, ws_connect
from tests.targets import HttpTarget, TcpTarget


def http_monitor(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": unique("m"), "kind": "http", "url": url, "interval": 30, "timeout": 2, **extra}


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


async def test_crud_validation_and_versions(server: ServerProcess) -> None:
    slug = unique("t")
    editor = await acreate_user(server.database_url, {slug: "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        created = await ok(
            ws, PkgID.MONITOR_CREATE, http_monitor("https://example.invalid/health", tags=["prod", "api"])
        )
        assert created["state"] == "pending" and created["version"] == 1
        assert created["expected_status"] == ["200-399"] and created["tags"] == ["api", "prod"]
        for key in (
            "id",
            "name",
            "kind",
            "url",
            "method",
            "expected_status",
            "keyword",
            "verify_tls",
            "host",
            "port",
            "interval",
            "timeout",
            "fail_threshold",
            "recover_threshold",
            "members",
            "min_up",
            "tags",
            "channels",
            "description",
            "enabled",
            "state",
            "version",
            "push_token",
            "created_at",
            "updated_at",
        ):
            assert key in created, key
        got = await ok(ws, PkgID.MONITOR_GET, {"id": created["id"]})
        assert got["name"] == created["name"]

        dup = await call(ws, PkgID.MONITOR_CREATE, http_monitor("https://x.invalid/", name=created["name"]))
        assert dup["status_code"] == RSPCode.CONFLICT

        bad = await call(ws, PkgID.MONITOR_CREATE, http_monitor("ftp://x", interval=5, timeout=9))
        assert bad["status_code"] == RSPCode.INVALID_DATA
        paths = {e["path"] for e in bad["data"]["errors"]}
        assert {"url", "interval", "timeout"} <= paths
        bad = await call(ws, PkgID.MONITOR_CREATE, {"name": "t", "kind": "tcp", "host": "a b", "port": 70000})
        assert bad["status_code"] == RSPCode.INVALID_DATA
        assert {e["path"] for e in bad["data"]["errors"]} == {"host", "port"}
        bad = await call(
            ws, PkgID.MONITOR_CREATE, http_monitor("https://x.invalid/", expected_status=["2xx"])
        )
        assert (
            bad["status_code"] == RSPCode.INVALID_DATA
            and bad["data"]["errors"][0]["path"] == "expected_status"
        )
        bad = await call(
            ws, PkgID.MONITOR_CREATE, {"name": "g", "kind": "group", "members": [], "interval": 30}
        )
        assert bad["status_code"] == RSPCode.INVALID_DATA
        bad = await call(
            ws, PkgID.MONITOR_CREATE, http_monitor("https://x.invalid/", interval=90000, timeout=1)
        )
        assert bad["status_code"] == RSPCode.INVALID_DATA

        updated = await ok(ws, PkgID.MONITOR_UPDATE, {"id": created["id"], "version": 1, "interval": 60})
        assert updated["interval"] == 60 and updated["version"] == 2
        stale = await call(ws, PkgID.MONITOR_UPDATE, {"id": created["id"], "version": 1, "interval": 120})
        assert stale["status_code"] == RSPCode.CONFLICT and "reload" in stale["data"]["msg"]

        paused = await ok(ws, PkgID.MONITOR_PAUSE, {"id": created["id"]})
        assert paused["state"] == "paused" and paused["enabled"] is False
        resumed = await ok(ws, PkgID.MONITOR_RESUME, {"id": created["id"]})
        assert resumed["state"] == "pending" and resumed["enabled"] is True

        tcp = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            {
                "name": unique("t"),
                "kind": "tcp",
                "host": "127.0.0.1",
                "port": 9,
                "interval": 30,
                "timeout": 1,
                "tags": ["db"],
            },
        )
        listed = await call(ws, PkgID.MONITOR_LIST, {"per_page": 1})
        assert listed["meta"]["total"] == 2 and [m["id"] for m in listed["data"]] == [created["id"]]
        assert [m["id"] for m in await ok(ws, PkgID.MONITOR_LIST, {"kind": "tcp"})] == [tcp["id"]]
        assert [m["id"] for m in await ok(ws, PkgID.MONITOR_LIST, {"tag": "prod"})] == [created["id"]]
        assert [m["id"] for m in await ok(ws, PkgID.MONITOR_LIST, {"tag": "pro"})] == []
        assert [m["id"] for m in await ok(ws, PkgID.MONITOR_LIST, {"name": created["name"][2:].upper()})] == [
            created["id"]
        ]
        assert [m["id"] for m in await ok(ws, PkgID.MONITOR_LIST, {"state": "pending"})] == [
            created["id"],
            tcp["id"],
        ]

        # A group's member is not deleted out from under its group (which would count one
        # member fewer against min_up): CONFLICT names the group; out of the group, it goes.
        group = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            {"name": unique("g"), "kind": "group", "members": [tcp["id"], created["id"]], "interval": 30},
        )
        held = await call(ws, PkgID.MONITOR_DELETE, {"id": tcp["id"]})
        assert held["status_code"] == RSPCode.CONFLICT, held
        assert (
            f"(id {group['id']})" in held["data"]["msg"] and "remove it from the group" in held["data"]["msg"]
        )
        await ok(ws, PkgID.MONITOR_GET, {"id": tcp["id"]})
        await ok(
            ws,
            PkgID.MONITOR_UPDATE,
            {"id": group["id"], "version": group["version"], "members": [created["id"]]},
        )
        await ok(ws, PkgID.MONITOR_DELETE, {"id": tcp["id"]})
        gone = await call(ws, PkgID.MONITOR_GET, {"id": tcp["id"]})
        assert gone["status_code"] == RSPCode.NOT_FOUND


async def test_check_now_records_and_test_before_save(server: ServerProcess) -> None:
    slug = unique("t")
    editor = await acreate_user(server.database_url, {slug: "editor"})
    with HttpTarget() as target:
        target.respond("/ok", 200, "all good")
        async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
            await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors", "incidents"]})
            unsaved = await ok(
                ws,
                PkgID.MONITOR_CHECK_NOW,
                {"monitor": {"kind": "http", "url": target.url("/ok"), "keyword": "good"}},
            )
            assert unsaved["recorded"] is False and unsaved["result"]["ok"] is True
            assert unsaved["result"]["status_code"] == 200
            m = await ok(ws, PkgID.MONITOR_CREATE, http_monitor(target.url("/ok")))
            first = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]})
            assert first["recorded"] is True and first["state"] == "up" and first["result"]["ok"] is True
            target.respond("/ok", 503)
            second = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]})
            assert second["state"] == "down" and second["result"]["error"] == "status 503, expected 200-399"
            history = await call(ws, PkgID.CHECK_HISTORY, {"monitor_id": m["id"], "limit": 1})
            assert history["data"][0]["ok"] is False and history["meta"]["has_more"] is True
            older = await call(
                ws,
                PkgID.CHECK_HISTORY,
                {"monitor_id": m["id"], "limit": 1, "cursor": history["meta"]["next_cursor"]},
            )
            assert older["data"][0]["ok"] is True and older["meta"] == {
                "next_cursor": None,
                "has_more": False,
            }
            incidents = await ok(ws, PkgID.INCIDENT_LIST, {"state": "open"})
            assert [i["monitor_id"] for i in incidents] == [m["id"]]
            acked = await ok(ws, PkgID.INCIDENT_ACK, {"id": incidents[0]["id"]})
            assert (
                acked["acked_by"] == f"user:{editor}"
                and acked["acked_at"]
                and acked["state"] == "acknowledged"
            )
            resolved = await ok(ws, PkgID.INCIDENT_RESOLVE, {"id": incidents[0]["id"]})
            assert resolved["resolved_by"] == f"user:{editor}" and resolved["duration_s"] >= 0
            again = await call(ws, PkgID.INCIDENT_RESOLVE, {"id": incidents[0]["id"]})
            assert again["status_code"] == RSPCode.CONFLICT
            summary = await ok(ws, PkgID.STATUS_SUMMARY)
            # 24h uptime in the summary is the housekeeping cache (not refreshed yet); STATS_UPTIME is exact.
            assert [(s["id"], s["state"], s["uptime_24h"]) for s in summary["monitors"]] == [
                (m["id"], "down", None)
            ]
            exact = await ok(ws, PkgID.STATS_UPTIME, {"monitor_id": m["id"], "windows": ["24h"]})
            assert exact["windows"]["24h"] == {"uptime": 0.5, "up": 1, "checks": 2, "maintenance": 0}
            assert summary["counts"]["down"] == 1


async def test_push_monitor_with_api_token(server: ServerProcess) -> None:
    slug = unique("t")
    admin = await acreate_user(server.database_url, {slug: "admin"})
    async with ws_connect(server, server.login(admin, PASSWORD)) as ws:
        m = await ok(
            ws, PkgID.MONITOR_CREATE, {"name": "node-7", "kind": "push", "interval": 60, "grace": 30}
        )
        assert m["push_token"].startswith("wpp_")
        tok = await ok(ws, PkgID.TOKEN_CREATE, {"name": "node", "role": "viewer"})
    async with ws_connect(server, tok["token"]) as node:
        pushed = await ok(node, PkgID.HEARTBEAT_PUSH, {"push_token": m["push_token"], "latency_ms": 3.5})
        assert pushed["state"] == "up" and pushed["monitor_id"] == m["id"]
        down = await ok(
            node, PkgID.HEARTBEAT_PUSH, {"push_token": m["push_token"], "status": "down", "msg": "disk"}
        )
        assert down["state"] == "down"
        # viewers never see push tokens
        got = await ok(node, PkgID.MONITOR_GET, {"id": m["id"]})
        assert got["push_token"] is None
        wrong = await call(node, PkgID.HEARTBEAT_PUSH, {"push_token": "wpp_not-a-real-token"})
        assert wrong["status_code"] == RSPCode.NOT_FOUND
        denied = await call(node, PkgID.MONITOR_CREATE, {"name": "x", "kind": "push", "interval": 60})
        assert denied["status_code"] == RSPCode.PERMISSION_DENIED


async def test_maintenance_crud(server: ServerProcess) -> None:
    slug = unique("t")
    editor = await acreate_user(server.database_url, {slug: "editor"})
    now = datetime.now(UTC)
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        m = await ok(ws, PkgID.MONITOR_CREATE, http_monitor("https://example.invalid/"))
        w = await ok(
            ws,
            PkgID.MAINTENANCE_CREATE,
            {
                "name": "upgrade",
                "starts_at": iso(now - timedelta(minutes=1)),
                "ends_at": iso(now + timedelta(hours=1)),
                "monitors": [m["id"]],
            },
        )
        assert w["monitors"] == [m["id"]] and w["version"] == 1
        bad = await call(
            ws,
            PkgID.MAINTENANCE_CREATE,
            {"name": "x", "starts_at": iso(now), "ends_at": iso(now), "all_monitors": True},
        )
        assert bad["status_code"] == RSPCode.INVALID_DATA and bad["data"]["errors"][0]["path"] == "ends_at"
        bad = await call(
            ws,
            PkgID.MAINTENANCE_CREATE,
            {"name": "x", "starts_at": iso(now), "ends_at": iso(now + timedelta(hours=1))},
        )
        assert bad["status_code"] == RSPCode.INVALID_DATA and bad["data"]["errors"][0]["path"] == "monitors"
        assert [x["id"] for x in await ok(ws, PkgID.MAINTENANCE_LIST, {"active": True})] == [w["id"]]
        assert await ok(ws, PkgID.MAINTENANCE_LIST, {"upcoming": True}) == []
        upd = await ok(ws, PkgID.MAINTENANCE_UPDATE, {"id": w["id"], "version": 1, "all_monitors": True})
        assert upd["all_monitors"] is True and upd["version"] == 2
        stale = await call(ws, PkgID.MAINTENANCE_UPDATE, {"id": w["id"], "version": 1, "name": "y"})
        assert stale["status_code"] == RSPCode.CONFLICT
        # A check inside the window records maintenance, not down, and opens no incident.
        checked = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]})
        assert checked["state"] == "maintenance" and checked["result"]["maintenance"] is True
        assert await ok(ws, PkgID.INCIDENT_LIST) == []
        await ok(ws, PkgID.MAINTENANCE_DELETE, {"id": w["id"]})
        assert await ok(ws, PkgID.MAINTENANCE_LIST) == []


async def test_tenant_isolation_on_every_package(server: ServerProcess) -> None:
    a, b = unique("ta"), unique("tb")
    user_a = await acreate_user(server.database_url, {a: "admin"})
    user_b = await acreate_user(server.database_url, {b: "admin"})
    now = datetime.now(UTC)
    with TcpTarget() as tcp:
        port = tcp.port
        tcp.refuse()
        async with ws_connect(server, server.login(user_a, PASSWORD)) as wa:
            mon = await ok(
                wa,
                PkgID.MONITOR_CREATE,
                {
                    "name": "secret-db",
                    "kind": "tcp",
                    "host": "127.0.0.1",
                    "port": port,
                    "interval": 30,
                    "timeout": 1,
                },
            )
            push = await ok(wa, PkgID.MONITOR_CREATE, {"name": "secret-node", "kind": "push", "interval": 60})
            await ok(wa, PkgID.MONITOR_CHECK_NOW, {"id": mon["id"]})  # refused: down, incident opens
            incident = (await ok(wa, PkgID.INCIDENT_LIST))[0]
            window = await ok(
                wa,
                PkgID.MAINTENANCE_CREATE,
                {
                    "name": "secret-window",
                    "starts_at": iso(now),
                    "ends_at": iso(now + timedelta(hours=1)),
                    "monitors": [mon["id"]],
                },
            )
    async with ws_connect(server, server.login(user_b, PASSWORD)) as wb:
        await ok(wb, PkgID.SUBSCRIBE, {"topics": ["monitors", f"monitor.{mon['id']}", "incidents"]})
        mid, iid, wid = mon["id"], incident["id"], window["id"]
        not_found = [
            (PkgID.MONITOR_GET, {"id": mid}),
            (PkgID.MONITOR_UPDATE, {"id": mid, "version": 1, "name": "mine"}),
            (PkgID.MONITOR_DELETE, {"id": mid}),
            (PkgID.MONITOR_PAUSE, {"id": mid}),
            (PkgID.MONITOR_RESUME, {"id": mid}),
            (PkgID.MONITOR_CHECK_NOW, {"id": mid}),
            (PkgID.CHECK_HISTORY, {"monitor_id": mid}),
            (PkgID.HEARTBEAT_PUSH, {"push_token": push["push_token"]}),
            (PkgID.STATS_UPTIME, {"monitor_id": mid}),
            (PkgID.STATS_LATENCY, {"monitor_id": mid}),
            (PkgID.INCIDENT_GET, {"id": iid}),
            (PkgID.INCIDENT_ACK, {"id": iid}),
            (PkgID.INCIDENT_RESOLVE, {"id": iid}),
            (PkgID.MAINTENANCE_UPDATE, {"id": wid, "version": 1, "name": "mine"}),
            (PkgID.MAINTENANCE_DELETE, {"id": wid}),
        ]
        for pkg, data in not_found:
            resp = await call(wb, pkg, data)
            assert resp["status_code"] == RSPCode.NOT_FOUND, (pkg, resp)
            assert "secret" not in json.dumps(resp)
        assert await ok(wb, PkgID.MONITOR_LIST) == []
        assert await ok(wb, PkgID.INCIDENT_LIST) == []
        assert await ok(wb, PkgID.MAINTENANCE_LIST) == []
        assert (await ok(wb, PkgID.STATUS_SUMMARY))["monitors"] == []
        invalid = [
            (PkgID.MONITOR_CREATE, {"name": "g", "kind": "group", "members": [mid], "interval": 30}),
            (
                PkgID.MAINTENANCE_CREATE,
                {
                    "name": "w",
                    "starts_at": iso(now),
                    "ends_at": iso(now + timedelta(hours=1)),
                    "monitors": [mid],
                },
            ),
        ]
        for pkg, data in invalid:
            resp = await call(wb, pkg, data)
            assert resp["status_code"] == RSPCode.INVALID_DATA, (pkg, resp)
        # B saw none of A's events (A's changes happened before; make a fresh one now).
        async with ws_connect(server, server.login(user_a, PASSWORD)) as wa:
            await ok(wa, PkgID.MONITOR_PAUSE, {"id": mid})
        leaked: list[str] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                while True:
                    leaked.append(str(await wb.recv()))
        assert leaked == []
    async with ws_connect(server, server.login(user_a, PASSWORD)) as wa:
        still = await ok(wa, PkgID.MONITOR_GET, {"id": mid})
        assert still["name"] == "secret-db" and still["version"] == 2  # only A's own pause changed it


async def test_concurrent_gets_from_two_tenants_each_see_only_their_own(server: ServerProcess) -> None:
    """MONITOR_GET lookups from many requests share one query (app.storage.batch);
    the tenant check and the push-token rule still apply per request."""
    slug_a, slug_b = unique("t"), unique("t")
    owner_a = await acreate_user(server.database_url, {slug_a: "editor"})
    owner_b = await acreate_user(server.database_url, {slug_b: "editor"})
    viewer_a = await acreate_user(server.database_url, {slug_a: "viewer"})
    async with (
        ws_connect(server, server.login(owner_a, PASSWORD)) as wa,
        ws_connect(server, server.login(owner_b, PASSWORD)) as wb,
        ws_connect(server, server.login(viewer_a, PASSWORD)) as wv,
    ):
        mine_a = [
            await ok(wa, PkgID.MONITOR_CREATE, {"name": f"secret-a-{i}", "kind": "push"}) for i in range(4)
        ]
        mine_b = [
            await ok(wb, PkgID.MONITOR_CREATE, {"name": f"secret-b-{i}", "kind": "push"}) for i in range(4)
        ]
        every = [m["id"] for pair in zip(mine_a, mine_b, strict=True) for m in pair]
        asks = [(PkgID.MONITOR_GET, {"id": mid}) for mid in every] * 3
        got_a, got_b, got_v = await asyncio.gather(
            call_many(wa, asks), call_many(wb, asks), call_many(wv, asks)
        )
        names = {m["id"]: m["name"] for m in mine_a + mine_b}
        for who, replies, own in (("a", got_a, mine_a), ("b", got_b, mine_b), ("viewer", got_v, mine_a)):
            own_ids = {m["id"] for m in own}
            for (_, data), reply in zip(asks, replies, strict=True):
                if data["id"] in own_ids:
                    assert reply["status_code"] == RSPCode.OK, (who, reply)
                    assert reply["data"]["name"] == names[data["id"]]
                    token = reply["data"]["push_token"]
                    assert (token is None) == (who == "viewer"), (who, reply)
                else:
                    assert reply["status_code"] == RSPCode.NOT_FOUND, (who, reply)
                    assert names[data["id"]] not in json.dumps(reply)
        # A read right after a write sees the write.
        changed = await ok(
            wa, PkgID.MONITOR_UPDATE, {"id": mine_a[0]["id"], "version": 1, "description": "after"}
        )
        assert changed["version"] == 2
        again = await ok(wa, PkgID.MONITOR_GET, {"id": mine_a[0]["id"]})
        assert again["description"] == "after" and again["version"] == 2


async def test_ids_beyond_the_database_range_are_invalid_data_not_errors(server: ServerProcess) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        for pkg, data in (
            (PkgID.MONITOR_GET, {"id": 2**31}),
            (PkgID.MONITOR_GET, {"id": 2**70}),
            (PkgID.MONITOR_DELETE, {"id": 2**40}),
            (PkgID.INCIDENT_GET, {"id": 2**40}),
            (PkgID.CHECK_HISTORY, {"monitor_id": 2**40}),
            (PkgID.MONITOR_CREATE, {"name": "g", "kind": "group", "members": [2**40]}),
            (PkgID.SUBSCRIBE, {"topics": ["monitors"], "since": {"monitors": 2**64}}),
        ):
            resp = await call(ws, pkg, data)
            assert resp["status_code"] == RSPCode.INVALID_DATA, (pkg, resp)
        # The largest id is a well-formed question with a plain answer.
        resp = await call(ws, PkgID.MONITOR_GET, {"id": 2**31 - 1})
        assert resp["status_code"] == RSPCode.NOT_FOUND, resp

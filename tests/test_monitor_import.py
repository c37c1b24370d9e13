"""MONITOR_IMPORT (108) and MONITOR_EXPORT (109) over a real socket, on SQLite and PostgreSQL:
a fleet file applied by name — create, change only what differs, delete only when asked, dry
run, idempotent re-run, bad rows refused by index and name with nothing applied, chunking,
quota, one audit row — and export pages that import takes back unchanged; alert routing
(depends_on, covers_members, escalation_policy) by name both ways, and deleted monitors leaving
no id in others' depends_on."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from app.protocol import PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, ok, ws_connect

#: Bytes of rows per chunk (measured compact; tests.server.call sends json.dumps with spaces):
#: frames stay under WS_MAX_FRAME_BYTES (64 KiB) with the envelope.
CHUNK_BYTES = 50_000


def chunked(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for row in rows:
        n = len(orjson.dumps(row)) + 1
        if chunks[-1] and size + n > CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(row)
        size += n
    return chunks


async def import_fleet(ws: ClientConnection, rows: list[dict[str, Any]], **opts: Any) -> dict[str, Any]:
    """Send ``rows`` as one import (chunked as needed); the final answer."""
    parts = chunked(rows)
    import_id = uuid.uuid4().hex
    resp: dict[str, Any] = {}
    for i, part in enumerate(parts):
        data = {"import_id": import_id, "chunk": i, "chunks": len(parts), "monitors": part, **opts}
        resp = await call(ws, PkgID.MONITOR_IMPORT, data, timeout=60)
        if i < len(parts) - 1:
            assert resp["status_code"] == 0 and resp["data"]["received"] == i + 1, resp
    return resp


async def listed(ws: ClientConnection) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    page = 1
    while True:
        resp = await call(ws, PkgID.MONITOR_LIST, {"page": page, "per_page": 200})
        for m in resp["data"]:
            out[m["name"]] = m
        if page >= resp["meta"]["pages"]:
            return out
        page += 1


async def export_all(ws: ClientConnection, limit: int = 500) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await ok(ws, PkgID.MONITOR_EXPORT, {"after": after, "limit": limit})
        rows.extend(page["monitors"])
        if page["next"] is None:
            return rows
        after = page["next"]


def fleet(channel: str) -> list[dict[str, Any]]:
    return [
        {"name": "api", "kind": "http", "url": "https://api.example.invalid/health", "interval": 30},
        {"name": "db", "kind": "tcp", "host": "db.example.invalid", "port": 5432, "tags": ["prod", "db"]},
        {"name": "cron", "kind": "push", "interval": 300, "channels": [channel]},
        {"name": "stack", "kind": "group", "members": ["api", "db"], "min_up": 2},
    ]


async def editor_socket(server: ServerProcess, role: str = "editor") -> tuple[str, str]:
    slug = unique("fleet")
    user = await acreate_user(server.database_url, {slug: role})
    return slug, server.login(user, PASSWORD)


async def test_import_creates_and_a_second_run_changes_nothing(server: ServerProcess) -> None:
    _, token = await editor_socket(server)
    async with ws_connect(server, token) as ws:
        channel = await ok(
            ws,
            PkgID.CHANNEL_CREATE,
            {"name": "ops", "kind": "webhook", "config": {"url": "https://h.invalid/x"}},
        )
        resp = await import_fleet(ws, fleet("ops"))
        assert resp["status_code"] == 0, resp
        assert resp["data"]["applied"] is True
        assert sorted(resp["data"]["create"]) == ["api", "cron", "db", "stack"]
        assert resp["data"]["counts"] == {"create": 4, "update": 0, "delete": 0, "unchanged": 0}
        got = await listed(ws)
        assert set(got) == {"api", "cron", "db", "stack"}
        assert got["stack"]["members"] == [got["api"]["id"], got["db"]["id"]]
        assert got["cron"]["channels"] == [channel["id"]]
        assert got["cron"]["push_token"].startswith("wpp_")
        assert got["api"]["interval"] == 30 and got["api"]["timeout"] == 10.0
        assert got["db"]["tags"] == ["db", "prod"]

        again = await import_fleet(ws, fleet("ops"))
        assert again["status_code"] == 0, again
        assert again["data"]["counts"] == {"create": 0, "update": 0, "delete": 0, "unchanged": 4}
        after = await listed(ws)
        assert {n: m["version"] for n, m in after.items()} == {n: m["version"] for n, m in got.items()}


async def test_import_changes_only_the_fields_that_differ(server: ServerProcess) -> None:
    _, token = await editor_socket(server)
    async with ws_connect(server, token) as ws:
        await ok(
            ws,
            PkgID.CHANNEL_CREATE,
            {"name": "ops", "kind": "webhook", "config": {"url": "https://h.invalid/x"}},
        )
        assert (await import_fleet(ws, fleet("ops")))["status_code"] == 0
        before = await listed(ws)
        rows = fleet("ops")
        rows[0]["interval"] = 60  # api: interval back to the default (the timeout follows it)
        rows[1]["description"] = "primary database"
        rows[3]["members"] = ["api"]  # stack shrinks
        rows[3]["min_up"] = 1
        resp = await import_fleet(ws, rows)
        assert resp["status_code"] == 0, resp
        changed = {u["name"]: u["fields"] for u in resp["data"]["update"]}
        assert changed == {"api": ["interval"], "db": ["description"], "stack": ["members", "min_up"]}
        assert resp["data"]["unchanged"] == 1
        after = await listed(ws)
        assert after["api"]["interval"] == 60
        assert after["db"]["description"] == "primary database"
        assert after["stack"]["members"] == [after["api"]["id"]]
        for name in ("api", "db", "stack"):
            assert after[name]["version"] == before[name]["version"] + 1
        assert after["cron"]["version"] == before["cron"]["version"]
        assert after["cron"]["push_token"] == before["cron"]["push_token"]


async def test_delete_missing_is_opt_in_and_dry_run_changes_nothing(server: ServerProcess) -> None:
    _, token = await editor_socket(server)
    async with ws_connect(server, token) as ws:
        await ok(
            ws,
            PkgID.CHANNEL_CREATE,
            {"name": "ops", "kind": "webhook", "config": {"url": "https://h.invalid/x"}},
        )
        assert (await import_fleet(ws, fleet("ops")))["status_code"] == 0
        before = await listed(ws)
        rows = [r for r in fleet("ops") if r["name"] != "cron"]
        rows[0]["interval"] = 45
        rows.append({"name": "web", "kind": "http", "url": "https://web.example.invalid/"})

        dry = await import_fleet(ws, rows, dry_run=True, delete_missing=True)
        assert dry["status_code"] == 0, dry
        assert dry["data"]["applied"] is False
        assert dry["data"]["create"] == ["web"]
        assert dry["data"]["update"] == [{"name": "api", "fields": ["interval"]}]
        assert dry["data"]["delete"] == ["cron"]
        assert dry["data"]["unchanged"] == 2
        assert await listed(ws) == before

        kept = await import_fleet(ws, rows)
        assert kept["status_code"] == 0, kept
        assert kept["data"]["counts"] == {"create": 1, "update": 1, "delete": 0, "unchanged": 2}
        assert "cron" in await listed(ws)

        dropped = await import_fleet(ws, rows, delete_missing=True)
        assert dropped["status_code"] == 0, dropped
        assert dropped["data"]["delete"] == ["cron"]
        assert dropped["data"]["counts"] == {"create": 0, "update": 0, "delete": 1, "unchanged": 4}
        assert set(await listed(ws)) == {"api", "db", "stack", "web"}


async def test_bad_rows_are_refused_by_index_and_name_and_nothing_is_applied(server: ServerProcess) -> None:
    _, token = await editor_socket(server)
    _, other = await editor_socket(server)
    async with ws_connect(server, other) as ows:
        foreign = await ok(
            ows,
            PkgID.CHANNEL_CREATE,
            {"name": "theirs", "kind": "webhook", "config": {"url": "https://h.invalid/y"}},
        )
    async with ws_connect(server, token) as ws:
        good = {"name": "fine", "kind": "http", "url": "https://ok.example.invalid/"}
        cases: list[tuple[list[dict[str, Any]], str, str]] = [
            (
                [good, {"name": "slow", "kind": "http", "url": "https://x.invalid/", "interval": 1}],
                "monitors[1].interval",
                "slow",
            ),
            (
                [good, {"name": "typo", "kind": "http", "url": "https://x.invalid/", "interval": "60"}],
                "monitors[1].interval",
                "typo",
            ),
            (
                [good, {"name": "grp", "kind": "group", "members": ["fine", "nope"]}],
                "monitors[1].members",
                "grp",
            ),
            ([good, {"name": "fine", "kind": "push"}], "monitors[1].name", "fine"),
            (
                [good, {"name": "ch", "kind": "push", "channels": [foreign["id"]]}],
                "monitors[1].channels",
                "ch",
            ),
            ([good, {"name": "noip", "kind": "tcp", "host": "db.invalid"}], "monitors[1].port", "noip"),
            (
                [
                    good,
                    {"name": "a", "kind": "group", "members": ["b"]},
                    {"name": "b", "kind": "group", "members": ["a"]},
                ],
                "monitors[1].members",
                "a",
            ),
        ]
        for rows, path, name in cases:
            resp = await import_fleet(ws, rows)
            assert resp["status_code"] == RSPCode.INVALID_DATA, resp
            first = resp["data"]["errors"][0]
            assert first["path"] == path and first["name"] == name, resp
            assert resp["data"]["msg"].startswith(f"row 1 ({name!r}): "), resp
            assert "nothing was applied" in resp["data"]["msg"]
            assert await listed(ws) == {}


async def test_chunks_must_come_in_order_under_one_import_id(server: ServerProcess) -> None:
    _, token = await editor_socket(server)
    async with ws_connect(server, token) as ws:
        row = {"name": "a", "kind": "push"}
        no_id = await call(ws, PkgID.MONITOR_IMPORT, {"chunk": 0, "chunks": 2, "monitors": [row]})
        assert no_id["status_code"] == RSPCode.INVALID_DATA and "import_id" in no_id["data"]["msg"]
        first = await ok(
            ws, PkgID.MONITOR_IMPORT, {"import_id": "x", "chunk": 0, "chunks": 3, "monitors": [row]}
        )
        assert first == {"import_id": "x", "received": 1, "chunks": 3}
        skipped = await call(
            ws,
            PkgID.MONITOR_IMPORT,
            {"import_id": "x", "chunk": 2, "chunks": 3, "monitors": [{"name": "c", "kind": "push"}]},
        )
        assert skipped["status_code"] == RSPCode.INVALID_DATA and "expected chunk 1" in skipped["data"]["msg"]
        # The out-of-order chunk dropped the import: its next chunk finds nothing open.
        late = await call(
            ws,
            PkgID.MONITOR_IMPORT,
            {"import_id": "x", "chunk": 1, "chunks": 3, "monitors": [{"name": "b", "kind": "push"}]},
        )
        assert late["status_code"] == RSPCode.INVALID_DATA and "from chunk 0" in late["data"]["msg"]
        assert await listed(ws) == {}


async def test_import_respects_the_tenant_quota(server: ServerProcess) -> None:
    from sqlalchemy import update

    from app.models.tenant import Tenant
    from app.storage.db import Database

    slug, token = await editor_socket(server)
    db = Database(server.database_url)
    try:
        async with db.session() as s:
            await s.execute(update(Tenant).where(Tenant.slug == slug).values(quota_monitors=3))  # type: ignore[arg-type]
            await s.commit()
    finally:
        await db.close()
    async with ws_connect(server, token) as ws:
        rows = [{"name": f"m{i}", "kind": "push"} for i in range(4)]
        resp = await import_fleet(ws, rows)
        assert resp["status_code"] == RSPCode.CONFLICT, resp
        assert "this request adds 4" in resp["data"]["msg"] and resp["data"]["quota"] == 3
        assert await listed(ws) == {}
        assert (await import_fleet(ws, rows[:3]))["status_code"] == 0
        # Deleting in the same import makes room: the quota counts what the import leaves.
        swapped = await import_fleet(ws, [rows[0], rows[1], rows[3]], delete_missing=True)
        assert swapped["status_code"] == 0, swapped
        assert set(await listed(ws)) == {"m0", "m1", "m3"}


async def test_import_is_audited_once_with_counts(server: ServerProcess) -> None:
    _, token = await editor_socket(server, "admin")
    async with ws_connect(server, token) as ws:
        rows = [{"name": f"m{i}", "kind": "push", "description": "x" * 1500} for i in range(100)]
        resp = await import_fleet(ws, rows)  # several chunks
        assert resp["status_code"] == 0, resp
        audit = await ok(ws, PkgID.AUDIT_LIST, {"action": "MONITOR_IMPORT", "per_page": 50})
        assert len(audit) == 1, audit
        details = audit[0]["details"]
        assert details == {
            "rows": 100,
            "dry_run": False,
            "delete_missing": False,
            "create": 100,
            "update": 0,
            "delete": 0,
            "unchanged": 0,
        }


async def test_export_pages_round_trip_through_import(server: ServerProcess) -> None:
    _, token = await editor_socket(server)
    async with ws_connect(server, token) as ws:
        await ok(
            ws,
            PkgID.CHANNEL_CREATE,
            {"name": "ops", "kind": "webhook", "config": {"url": "https://h.invalid/x"}},
        )
        rows = fleet("ops") + [
            {
                "name": f"n{i:02}",
                "kind": "http",
                "url": f"https://u:secret{i}@n{i}.example.invalid/",
                "enabled": i % 2 == 0,
            }
            for i in range(20)
        ]
        assert (await import_fleet(ws, rows))["status_code"] == 0
        exported = await export_all(ws, limit=7)
        assert len(exported) == len(rows)
        by_name = {r["name"]: r for r in exported}
        assert by_name["stack"]["members"] == ["api", "db"]
        assert by_name["cron"]["channels"] == ["ops"]
        assert by_name["n01"]["url"] == "https://***@n1.example.invalid/"
        assert by_name["n01"]["enabled"] is False and "enabled" not in by_name["n02"]
        assert "timeout" not in by_name["api"]  # defaults are left out
        before = await listed(ws)
        again = await import_fleet(ws, exported)
        assert again["status_code"] == 0, again
        assert again["data"]["counts"]["unchanged"] == len(rows), again
        # A masked URL sent back unchanged keeps the stored credentials (checks still log in).
        assert await listed(ws) == before


async def test_ten_thousand_monitors_in_one_import(server: ServerProcess) -> None:
    _, token = await editor_socket(server)
    async with ws_connect(server, token) as ws:
        rows = [
            {
                "name": f"node-{i:05}",
                "kind": "http",
                "url": f"http://10.{i // 256 % 256}.{i % 256}.1:9100/health",
            }
            for i in range(10_000)
        ]
        frames = len(chunked(rows))
        assert frames <= 20  # a few dozen frames at most: far below the 600 messages/minute per user
        started = time.monotonic()
        resp = await import_fleet(ws, rows)
        took = time.monotonic() - started
        assert resp["status_code"] == 0, resp
        assert resp["data"]["counts"]["create"] == 10_000
        print(f"\n10,000-monitor import on {getattr(server, 'backend', '?')}: {frames} frames, {took:.2f} s")
        exported = await export_all(ws, limit=1000)
        assert [r["name"] for r in exported] == [r["name"] for r in rows]
        started = time.monotonic()
        again = await import_fleet(ws, exported)
        print(f"re-import (all unchanged): {time.monotonic() - started:.2f} s")
        assert again["status_code"] == 0 and again["data"]["counts"]["unchanged"] == 10_000, again
        started = time.monotonic()
        changed = await import_fleet(ws, [{**r, "interval": 120} for r in rows])
        print(f"re-import changing every interval: {time.monotonic() - started:.2f} s")
        assert changed["status_code"] == 0 and changed["data"]["counts"]["update"] == 10_000, changed
        assert changed["data"]["truncated"] is True and len(changed["data"]["update"]) == 1000
        started = time.monotonic()
        emptied = await import_fleet(ws, [], delete_missing=True)
        print(f"delete_missing with an empty file: {time.monotonic() - started:.2f} s")
        assert emptied["status_code"] == 0 and emptied["data"]["counts"]["delete"] == 10_000, emptied
        assert await listed(ws) == {}


async def test_events_per_monitor_for_a_small_import_and_one_summary_for_a_large_one(
    server: ServerProcess,
) -> None:
    from tests.realtime_support import next_event, no_event

    _, token = await editor_socket(server)
    async with ws_connect(server, token) as ws, ws_connect(server, token) as watcher:
        await ok(watcher, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
        small = [{"name": f"s{i}", "kind": "push"} for i in range(3)]
        assert (await import_fleet(ws, small))["status_code"] == 0
        seen = [await next_event(watcher, "monitors") for _ in small]
        assert [(e["pkg_id"], e["data"]["action"]) for e in seen] == [(902, "created")] * 3
        assert sorted(e["data"]["monitor"]["name"] for e in seen) == ["s0", "s1", "s2"]
        assert all(e["data"]["monitor"]["push_token"] is None for e in seen)

        large = small + [{"name": f"l{i}", "kind": "push"} for i in range(250)]
        assert (await import_fleet(ws, large))["status_code"] == 0
        summary = await next_event(watcher, "monitors")
        assert summary["pkg_id"] == 902
        assert summary["data"] == {"action": "imported", "created": 250, "updated": 0, "deleted": 0}
        await no_event(watcher, "monitors", wait=0.5)


def _cli(*args: str) -> tuple[int, str, str]:
    import os
    import subprocess
    import sys

    from tests.server import ROOT

    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATCHPOST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "app.client", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr


async def test_cli_export_then_import_round_trip(server: ServerProcess, tmp_path: Any) -> None:
    import asyncio

    import yaml

    _, token = await editor_socket(server)
    _, other = await editor_socket(server)
    ops = {"name": "ops", "kind": "webhook", "config": {"url": "https://h.invalid/x"}}
    async with ws_connect(server, token) as ws:
        await ok(ws, PkgID.CHANNEL_CREATE, ops)
        assert (await import_fleet(ws, fleet("ops")))["status_code"] == 0
    conn = ["--url", server.ws_url]
    code, out, err = await asyncio.to_thread(_cli, "export", "--format", "yaml", "--token", token, *conn)
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert [r["name"] for r in doc["monitors"]] == ["api", "db", "cron", "stack"]
    path = tmp_path / "monitors.yaml"
    path.write_text(out)

    async with ws_connect(server, other) as ws:
        await ok(ws, PkgID.CHANNEL_CREATE, ops)
    code, out, err = await asyncio.to_thread(_cli, "import", str(path), "--dry-run", "--token", other, *conn)
    assert code == 0, err
    assert json_of(out)["counts"] == {"create": 4, "update": 0, "delete": 0, "unchanged": 0}
    code, out, err = await asyncio.to_thread(_cli, "import", str(path), "--token", other, *conn)
    assert code == 0 and json_of(out)["applied"] is True, err
    async with ws_connect(server, other) as ws:
        copied = await listed(ws)
    assert set(copied) == {"api", "db", "cron", "stack"}
    assert copied["stack"]["members"] == [copied["api"]["id"], copied["db"]["id"]]

    doc["monitors"] = [r for r in doc["monitors"] if r["name"] != "cron"]
    path.write_text(yaml.safe_dump(doc))
    code, out, err = await asyncio.to_thread(
        _cli, "import", str(path), "--delete-missing", "--dry-run", "--token", other, *conn
    )
    assert code == 0, err
    assert json_of(out)["delete"] == ["cron"] and json_of(out)["unchanged"] == 3

    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "x", "kind": "http"}]')
    code, out, err = await asyncio.to_thread(_cli, "import", str(bad), "--token", other, *conn)
    assert code == 1 and "row 0 ('x'): an http monitor needs a url" in err, (out, err)
    code, out, err = await asyncio.to_thread(
        _cli, "import", str(tmp_path / "none.yaml"), "--token", other, *conn
    )
    assert code == 2 and "cannot read" in err


def json_of(text: str) -> Any:
    return orjson.loads(text)


async def test_viewers_export_but_do_not_import(server: ServerProcess) -> None:
    slug, token = await editor_socket(server)
    viewer = await acreate_user(server.database_url, {slug: "viewer"})
    async with ws_connect(server, token) as ws:
        assert (await import_fleet(ws, [{"name": "a", "kind": "push"}]))["status_code"] == 0
    async with ws_connect(server, server.login(viewer, PASSWORD)) as ws:
        assert [r["name"] for r in await export_all(ws)] == ["a"]
        denied = await import_fleet(ws, [{"name": "b", "kind": "push"}])
        assert denied["status_code"] == RSPCode.PERMISSION_DENIED, denied
        assert [r["name"] for r in await export_all(ws)] == ["a"]


async def routing_setup(ws: ClientConnection) -> tuple[int, dict[str, Any]]:
    """An escalation policy "night" and an existing monitor "legacy"; (policy id, legacy)."""
    channel = await ok(
        ws, PkgID.CHANNEL_CREATE, {"name": "ops", "kind": "webhook", "config": {"url": "https://h.invalid/x"}}
    )
    policy = await ok(
        ws, PkgID.ESCALATION_CREATE, {"name": "night", "steps": [{"after": 0, "channels": [channel["id"]]}]}
    )
    legacy = await ok(ws, PkgID.MONITOR_CREATE, {"name": "legacy", "kind": "push"})
    return int(policy["id"]), legacy


def routed(legacy_id: int) -> list[dict[str, Any]]:
    """Rows with alert routing: "api" depends on a row created after it and on an existing
    monitor, by name; "stack" covers its members and depends on "legacy" by id."""
    return [
        {
            "name": "api",
            "kind": "http",
            "url": "https://api.example.invalid/",
            "depends_on": ["edge", "legacy"],
            "escalation_policy": "night",
        },
        {"name": "edge", "kind": "http", "url": "https://edge.example.invalid/"},
        {
            "name": "stack",
            "kind": "group",
            "members": ["api", "edge"],
            "covers_members": True,
            "depends_on": [legacy_id],
        },
    ]


async def test_import_sets_alert_routing_by_name_and_export_round_trips_it(server: ServerProcess) -> None:
    _, token = await editor_socket(server)
    async with ws_connect(server, token) as ws:
        policy_id, legacy = await routing_setup(ws)
        resp = await import_fleet(ws, routed(legacy["id"]))
        assert resp["status_code"] == 0, resp
        assert resp["data"]["counts"] == {"create": 3, "update": 0, "delete": 0, "unchanged": 0}
        got = await listed(ws)
        # A dependency on a row created by the same import resolves to its new id.
        assert got["api"]["depends_on"] == [got["edge"]["id"], legacy["id"]]
        assert got["api"]["escalation_policy"] == policy_id
        assert got["stack"]["covers_members"] is True
        assert got["stack"]["depends_on"] == [legacy["id"]]
        assert got["edge"]["depends_on"] == [] and got["edge"]["escalation_policy"] is None

        exported = {r["name"]: r for r in await export_all(ws)}
        assert exported["api"]["depends_on"] == ["edge", "legacy"]
        assert exported["api"]["escalation_policy"] == "night"
        assert exported["stack"]["covers_members"] is True
        assert exported["stack"]["depends_on"] == ["legacy"]
        assert not {"depends_on", "covers_members", "escalation_policy"} & set(exported["edge"])

        again = await import_fleet(ws, list(exported.values()))
        assert again["status_code"] == 0, again
        assert again["data"]["counts"] == {"create": 0, "update": 0, "delete": 0, "unchanged": 4}
        after = await listed(ws)
        assert {n: m["version"] for n, m in after.items()} == {n: m["version"] for n, m in got.items()}


async def test_a_row_without_routing_means_its_defaults_and_dry_run_shows_it(server: ServerProcess) -> None:
    _, token = await editor_socket(server)
    async with ws_connect(server, token) as ws:
        _, legacy = await routing_setup(ws)
        assert (await import_fleet(ws, routed(legacy["id"])))["status_code"] == 0
        before = await listed(ws)
        plain = [
            {k: v for k, v in row.items() if k not in ("depends_on", "covers_members", "escalation_policy")}
            for row in routed(legacy["id"])
        ]
        dry = await import_fleet(ws, plain, dry_run=True)
        assert dry["status_code"] == 0, dry
        assert dry["data"]["applied"] is False
        assert dry["data"]["update"] == [
            {"name": "api", "fields": ["depends_on", "escalation_policy"]},
            {"name": "stack", "fields": ["covers_members", "depends_on"]},
        ]
        assert dry["data"]["unchanged"] == 1
        assert await listed(ws) == before

        applied = await import_fleet(ws, plain)
        assert applied["status_code"] == 0, applied
        after = await listed(ws)
        assert after["api"]["depends_on"] == [] and after["api"]["escalation_policy"] is None
        assert after["stack"]["covers_members"] is False and after["stack"]["depends_on"] == []
        assert after["api"]["version"] == before["api"]["version"] + 1


async def test_bad_routing_rows_are_refused_by_row_and_nothing_is_applied(server: ServerProcess) -> None:
    _, token = await editor_socket(server)
    async with ws_connect(server, token) as ws:
        _, legacy = await routing_setup(ws)
        before = await listed(ws)
        good = {"name": "fine", "kind": "http", "url": "https://ok.example.invalid/"}
        web = {"name": "web", "kind": "http", "url": "https://web.example.invalid/"}
        cases: list[tuple[list[dict[str, Any]], str, str, str]] = [
            ([good, {**web, "depends_on": ["fine", "nope"]}], "depends_on", "web", "'nope'"),
            ([good, {**web, "escalation_policy": "daytime"}], "escalation_policy", "web", "'daytime'"),
            ([good, {**web, "escalation_policy": 999_999}], "escalation_policy", "web", "999999"),
            ([good, {**web, "covers_members": True}], "covers_members", "web", "only a group"),
            ([good, {**web, "depends_on": ["web"]}], "depends_on", "web", "itself"),
            (
                [good, {"name": "legacy", "kind": "push", "depends_on": [legacy["id"]]}],
                "depends_on",
                "legacy",
                "itself",
            ),
            ([good, {**web, "depends_on": ["legacy", legacy["id"]]}], "depends_on", "web", "repeat"),
            (
                [good, {**web, "depends_on": ["fine"]}, {**good, "name": "b", "depends_on": ["web"]}],
                "depends_on",
                "web",
                "cycle",
            ),
            ([good, {**web, "depends_on": [f"m{i}" for i in range(21)]}], "depends_on", "web", "21"),
        ]
        cases[7][0][0]["depends_on"] = ["web"]  # fine <-> web: a direct cycle
        for rows, field, name, says in cases:
            resp = await import_fleet(ws, rows)
            assert resp["status_code"] == RSPCode.INVALID_DATA, resp
            named = [e for e in resp["data"]["errors"] if e["name"] == name]
            assert named and named[0]["path"] == f"monitors[1].{field}", resp
            assert says in named[0]["msg"], resp
            assert "nothing was applied" in resp["data"]["msg"]
            assert await listed(ws) == before


async def test_deleting_a_monitor_removes_it_from_other_monitors_depends_on(server: ServerProcess) -> None:
    _, token = await editor_socket(server)
    async with ws_connect(server, token) as ws:
        _, legacy = await routing_setup(ws)
        assert (await import_fleet(ws, routed(legacy["id"])))["status_code"] == 0
        before = await listed(ws)
        await ok(ws, PkgID.MONITOR_DELETE, {"id": legacy["id"]})
        after = await listed(ws)
        assert after["api"]["depends_on"] == [before["edge"]["id"]]
        assert after["stack"]["depends_on"] == []
        assert after["api"]["version"] == before["api"]["version"] + 1
        assert after["stack"]["version"] == before["stack"]["version"] + 1
        assert after["edge"]["version"] == before["edge"]["version"]  # did not depend on it

        # Import with delete_missing: a row still naming a monitor it deletes is refused …
        await ok(ws, PkgID.MONITOR_CREATE, {"name": "spare", "kind": "push"})
        rows = {r["name"]: r for r in await export_all(ws)}
        rows["edge"]["depends_on"] = ["spare"]
        assert (await import_fleet(ws, list(rows.values())))["status_code"] == 0
        del rows["spare"]
        refused = await import_fleet(ws, list(rows.values()), delete_missing=True)
        assert refused["status_code"] == RSPCode.INVALID_DATA, refused
        edge_row = list(rows).index("edge")
        assert [e["path"] for e in refused["data"]["errors"]] == [f"monitors[{edge_row}].depends_on"]
        assert "delete_missing removes it" in refused["data"]["msg"]
        # … and without it no dangling id is left, the version bumped, in the same transaction.
        edge = (await listed(ws))["edge"]
        del rows["edge"]["depends_on"]
        applied = await import_fleet(ws, list(rows.values()), delete_missing=True)
        assert applied["status_code"] == 0, applied
        assert applied["data"]["delete"] == ["spare"]
        assert applied["data"]["update"] == [{"name": "edge", "fields": ["depends_on"]}]
        final = await listed(ws)
        assert set(final) == {"api", "edge", "stack"}
        assert final["edge"]["depends_on"] == [] and final["edge"]["version"] == edge["version"] + 1

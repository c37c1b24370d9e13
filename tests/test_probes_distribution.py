"""Probe distribution (docs/probes.md): probe tokens, PROBE_HELLO / HEARTBEAT / ASSIGNMENTS,
assignment events (906) on ``probe.<location id>``, PROBE_LIST and probe status events (907).

Real servers and sockets: the single-instance tests run on SQLite and PostgreSQL (the
shared ``server``); the cross-instance ones on two servers sharing PostgreSQL and Redis,
the probe on one and the editor on the other.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from app.handlers import build_router
from app.protocol import PkgID, RSPCode
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.realtime_support import redis_server, servers
from tests.server import ServerProcess, call, call_many, new_req_id, ok, ws_connect

PROBE_PACKAGES = {610, 611, 612, 613}
#: How long an assignment change may take to reach a connected probe.
WITHIN = 1.0


async def _tenant_admin(srv: ServerProcess, slug: str | None = None) -> tuple[str, str]:
    """(slug, access token) of a new owner of a new tenant."""
    slug = slug or unique("pt")
    user = await acreate_user(srv.database_url, {slug: "owner"})
    return slug, srv.login(user, PASSWORD)


async def _probe_token(ws: ClientConnection, location: str) -> str:
    data = await ok(ws, PkgID.TOKEN_CREATE, {"name": unique("probe"), "role": "probe", "location": location})
    assert data["location"] == location and data["role"] == "probe"
    return str(data["token"])


def _http(name: str, locations: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "http",
        "url": "http://127.0.0.1:9/health",
        "interval": 60,
        "locations": locations,
        **extra,
    }


async def _snapshot(ws: ClientConnection, limit: int = 500) -> tuple[int, list[dict[str, Any]], int]:
    """(seq of the first page, every definition, pages read)."""
    after, found, pages, seq = 0, [], 0, -1
    while True:
        page = await ok(ws, PkgID.PROBE_ASSIGNMENTS, {"after_id": after, "limit": limit})
        pages += 1
        seq = page["seq"] if seq < 0 else seq
        found.extend(page["monitors"])
        if page["next_after_id"] is None:
            return seq, found, pages
        after = page["next_after_id"]


async def _next_assignment(ws: ClientConnection, timeout: float = WITHIN) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("pkg_id") == PkgID.EVENT_PROBE_ASSIGNMENT:
                assert str(msg["topic"]).startswith("probe."), msg
                return dict(msg)


async def _no_assignment(ws: ClientConnection, wait: float = 0.5) -> None:
    try:
        msg = await _next_assignment(ws, wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected assignment event {msg}")


# ----- tokens


async def test_token_create_probe_needs_location_and_local_is_reserved(server: ServerProcess) -> None:
    slug, token = await _tenant_admin(server)
    async with ws_connect(server, token, tenant=slug) as ws:
        cases = [
            ({"name": "p1", "role": "probe"}, "location"),
            ({"name": "p2", "role": "viewer", "location": "eu-west"}, "location"),
            ({"name": "p3", "role": "probe", "location": "local"}, "location"),
            ({"name": "p4", "role": "probe", "location": "EU West"}, None),
        ]
        for body, path in cases:
            resp = await call(ws, PkgID.TOKEN_CREATE, body)
            assert resp["status_code"] == RSPCode.INVALID_DATA, (body, resp)
            if path:
                assert resp["data"]["errors"][0]["path"] == path, resp
        await _probe_token(ws, "eu-west")
        # The location now exists: a monitor may name it (and an unknown one is refused).
        await ok(ws, PkgID.MONITOR_CREATE, _http("m", ["eu-west", "local"], quorum=2))
        bad = await call(ws, PkgID.MONITOR_CREATE, _http("n", ["us-east"]))
        assert bad["status_code"] == RSPCode.INVALID_DATA and "us-east" in json.dumps(bad), bad


# ----- security


async def test_probe_token_is_refused_every_other_package(server: ServerProcess) -> None:
    slug, token = await _tenant_admin(server)
    async with ws_connect(server, token, tenant=slug) as ws:
        probe_token = await _probe_token(ws, "eu-west")
    others = sorted(pid for pid in build_router().specs if pid not in PROBE_PACKAGES)
    assert {int(PkgID.PING), int(PkgID.WHOAMI), int(PkgID.SUBSCRIBE), int(PkgID.PROBE_LIST)} <= set(others)
    async with ws_connect(server, probe_token) as probe:
        answers = await call_many(probe, [(pid, {}) for pid in others], timeout=30)
        wrong = {
            pid: a["status_code"]
            for pid, a in zip(others, answers, strict=True)
            if a["status_code"] != RSPCode.PERMISSION_DENIED
        }
        assert not wrong, f"packages a probe token was not refused with 3: {wrong}"
        sub = await call(probe, PkgID.SUBSCRIBE, {"topics": ["probes"]})
        assert sub["status_code"] == RSPCode.PERMISSION_DENIED, sub
        # Its own packages work.
        hello = await ok(probe, PkgID.PROBE_HELLO, {"version": "1.0"})
        assert hello["location"] == "eu-west"


async def test_assignments_are_scoped_to_tenant_and_location(server: ServerProcess) -> None:
    slug_a, token_a = await _tenant_admin(server)
    slug_b, token_b = await _tenant_admin(server)
    async with (
        ws_connect(server, token_a, tenant=slug_a) as a,
        ws_connect(server, token_b, tenant=slug_b) as b,
    ):
        probe_eu = await _probe_token(a, "eu")
        await _probe_token(a, "us")
        await _probe_token(a, "eu_1")  # "_" is a LIKE wildcard: must not match "eux1"
        await _probe_token(a, "eux1")
        await _probe_token(b, "eu")  # another tenant's location of the same name
        channel = await ok(
            a,
            PkgID.CHANNEL_CREATE,
            {"name": "hook", "kind": "webhook", "config": {"url": "https://hooks.example.com/x"}},
        )
        secret_headers = {"Authorization": "Bearer top-secret", "X-Plain": "v"}
        mine = []
        for i in range(7):
            extra: dict[str, Any] = {"headers": secret_headers, "channels": [channel["id"]]} if i == 0 else {}
            mine.append((await ok(a, PkgID.MONITOR_CREATE, _http(f"eu-{i}", ["eu"], **extra)))["id"])
        both = await ok(a, PkgID.MONITOR_CREATE, _http("both", ["local", "eu"], quorum=1))
        mine.append(both["id"])
        await ok(a, PkgID.MONITOR_CREATE, _http("us-only", ["us"]))
        await ok(a, PkgID.MONITOR_CREATE, _http("local-only", ["local"]))
        await ok(a, PkgID.MONITOR_CREATE, _http("eux1-only", ["eux1"]))
        paused = await ok(a, PkgID.MONITOR_CREATE, _http("paused-eu", ["eu"], enabled=False))
        other = await ok(b, PkgID.MONITOR_CREATE, _http("b-eu", ["eu"]))
        async with ws_connect(server, probe_eu) as probe:
            wrong = await call(probe, PkgID.PROBE_HELLO, {"version": "1.0", "location": "us"})
            assert wrong["status_code"] == RSPCode.INVALID_DATA and "'eu'" in wrong["data"]["msg"], wrong
            early = await call(probe, PkgID.PROBE_HEARTBEAT, {"buffered": 0})
            assert early["status_code"] == RSPCode.INVALID_DATA, early
            hello = await ok(probe, PkgID.PROBE_HELLO, {"version": "1.0", "location": "eu"})
            assert hello["recovered"] is False
            assert hello["heartbeat_interval"] > 0 and hello["grace"] > 0 and hello["report_max"] >= 1
            beat = await ok(probe, PkgID.PROBE_HEARTBEAT, {"buffered": 3, "lag_ms": 1.5, "monitors": 8})
            assert abs(beat["server_time"] - time.time()) < 5
            _seq, defs, pages = await _snapshot(probe, limit=3)
            assert pages >= 3
            assert sorted(d["id"] for d in defs) == sorted(mine)
            assert paused["id"] not in {d["id"] for d in defs} and other["id"] not in {d["id"] for d in defs}
            first = next(d for d in defs if d["id"] == mine[0])
            # What a runner needs, stored secrets included; no alert routing.
            assert first["headers"] == secret_headers
            assert first["url"] == "http://127.0.0.1:9/health" and first["kind"] == "http"
            assert {"interval", "timeout", "version", "expected_status", "options"} <= set(first)
            assert "channels" not in first and "hooks.example.com" not in json.dumps(defs)
        async with ws_connect(server, await _probe_token(a, "eu_2")) as probe:
            await ok(probe, PkgID.PROBE_HELLO, {"version": "1.0"})
            assert (await _snapshot(probe))[1] == []
        async with ws_connect(server, await _probe_token(b, "eu-b")) as probe:
            await ok(probe, PkgID.PROBE_HELLO, {"version": "1.0"})
            assert (await _snapshot(probe))[1] == []


async def test_eu_1_does_not_match_eux1(server: ServerProcess) -> None:
    slug, token = await _tenant_admin(server)
    async with ws_connect(server, token, tenant=slug) as a:
        t1 = await _probe_token(a, "eu_1")
        await _probe_token(a, "eux1")
        m = await ok(a, PkgID.MONITOR_CREATE, _http("x", ["eux1"]))
        n = await ok(a, PkgID.MONITOR_CREATE, _http("y", ["eu_1"]))
        async with ws_connect(server, t1) as probe:
            await ok(probe, PkgID.PROBE_HELLO, {"version": "1.0"})
            ids = [d["id"] for d in (await _snapshot(probe))[1]]
            assert ids == [n["id"]] and m["id"] not in ids


async def test_probe_topic_is_not_subscribable(server: ServerProcess) -> None:
    slug, token = await _tenant_admin(server)
    async with ws_connect(server, token, tenant=slug) as ws:
        await _probe_token(ws, "eu")
        listed = await ok(ws, PkgID.PROBE_LIST, {})
        assert [loc["name"] for loc in listed["locations"]] == ["eu"]
        for topic in ("probe.1", "probe.{id}"):
            resp = await call(ws, PkgID.SUBSCRIBE, {"topics": [topic]})
            assert resp["status_code"] != RSPCode.OK, resp


# ----- PROBE_LIST and probe status events


async def test_probe_list_and_status_events(server: ServerProcess) -> None:
    slug, token = await _tenant_admin(server)
    async with ws_connect(server, token, tenant=slug) as ed:
        probe_token = await _probe_token(ed, "eu")
        await _probe_token(ed, "idle")
        await ok(ed, PkgID.SUBSCRIBE, {"topics": ["probes"]})
        before = {loc["name"]: loc for loc in (await ok(ed, PkgID.PROBE_LIST, {}))["locations"]}
        assert before["eu"]["status"] == "never" and before["eu"]["probes"] == []
        async with ws_connect(server, probe_token) as probe:
            hello = await ok(probe, PkgID.PROBE_HELLO, {"version": "2.5"})
            ev = await _event(ed, PkgID.EVENT_PROBE_STATUS)
            assert ev["topic"] == "probes"
            assert ev["data"]["connected"] is True and ev["data"]["location"] == "eu"
            assert ev["data"]["probe_id"] == hello["probe_id"] and ev["data"]["version"] == "2.5"
            await ok(probe, PkgID.PROBE_HEARTBEAT, {"buffered": 7, "lag_ms": 12.5})
            listed = {loc["name"]: loc for loc in (await ok(ed, PkgID.PROBE_LIST, {}))["locations"]}
            assert listed["eu"]["status"] == "online" and listed["idle"]["status"] == "never"
            (row,) = listed["eu"]["probes"]
            assert row["id"] == hello["probe_id"] and row["connected"] is True and row["status"] == "online"
            assert row["version"] == "2.5" and row["buffered"] == 7 and row["lag_ms"] == 12.5
            assert row["connected_since"] and row["last_seen_at"]
        ev = await _event(ed, PkgID.EVENT_PROBE_STATUS)
        assert ev["data"]["connected"] is False and ev["data"]["probe_id"] == hello["probe_id"]
        listed = {loc["name"]: loc for loc in (await ok(ed, PkgID.PROBE_LIST, {}))["locations"]}
        (row,) = listed["eu"]["probes"]
        assert listed["eu"]["status"] == "offline" and row["connected"] is False and row["disconnected_at"]


async def _event(ws: ClientConnection, pkg_id: int, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("pkg_id") == pkg_id and "topic" in msg:
                return dict(msg)


# ----- assignment events across instances


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two servers sharing one PostgreSQL database and one Redis."""
    import uuid

    prefix = f"wptest:{uuid.uuid4().hex[:10]}:"
    url = services.create_pg_database()
    redis = services.redis_test_url()
    one = redis_server(url, redis, prefix)
    two = redis_server(url, redis, prefix)
    with servers(one, two):
        yield one, two


async def test_assignment_changes_reach_a_connected_probe_from_either_instance(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    here, there = pair
    slug, token = await _tenant_admin(here)
    async with ws_connect(there, token, tenant=slug) as ed, ws_connect(here, token, tenant=slug) as ed_here:
        probe_token = await _probe_token(ed, "eu")
        await _probe_token(ed, "us")
        async with ws_connect(here, probe_token) as probe:
            hello = await ok(probe, PkgID.PROBE_HELLO, {"version": "1.0"})
            assert hello["recovered"] is False

            # A new monitor with the location (made on the other instance).
            m = await ok(ed, PkgID.MONITOR_CREATE, _http("a", ["eu", "local"], headers={"X-Key": "k1"}))
            ev = await _next_assignment(probe)
            assert ev["data"]["op"] == "upsert" and ev["data"]["monitor"]["id"] == m["id"]
            assert ev["data"]["monitor"]["headers"] == {"X-Key": "k1"}
            assert ev["seq"] > hello["seq"]
            # Another location's monitor: nothing for this probe.
            await ok(ed, PkgID.MONITOR_CREATE, _http("us-only", ["us"]))
            await _no_assignment(probe)
            # A definition change: upsert with the new version.
            m = await ok(ed, PkgID.MONITOR_UPDATE, {"id": m["id"], "version": m["version"], "interval": 120})
            ev = await _next_assignment(probe)
            assert ev["data"]["op"] == "upsert" and ev["data"]["monitor"]["interval"] == 120
            assert ev["data"]["monitor"]["version"] == m["version"]
            # The location removed from the monitor.
            m = await ok(
                ed, PkgID.MONITOR_UPDATE, {"id": m["id"], "version": m["version"], "locations": ["local"]}
            )
            ev = await _next_assignment(probe)
            assert ev["data"] == {"op": "remove", "monitor_id": m["id"]}
            m = await ok(
                ed, PkgID.MONITOR_UPDATE, {"id": m["id"], "version": m["version"], "locations": ["eu"]}
            )
            assert (await _next_assignment(probe))["data"]["op"] == "upsert"
            # Pause and resume (on this instance), then delete (on the other).
            await ok(ed_here, PkgID.MONITOR_PAUSE, {"id": m["id"]})
            assert (await _next_assignment(probe))["data"] == {"op": "remove", "monitor_id": m["id"]}
            await ok(ed_here, PkgID.MONITOR_RESUME, {"id": m["id"]})
            assert (await _next_assignment(probe))["data"]["op"] == "upsert"
            await ok(ed, PkgID.MONITOR_DELETE, {"id": m["id"]})
            assert (await _next_assignment(probe))["data"] == {"op": "remove", "monitor_id": m["id"]}
            # A fleet import: one event per monitor that changed for this location.
            await ok(ed, PkgID.MONITOR_IMPORT, {"monitors": [_http("imp-1", ["eu"]), _http("imp-2", ["us"])]})
            ev = await _next_assignment(probe)
            assert ev["data"]["op"] == "upsert" and ev["data"]["monitor"]["name"] == "imp-1"
            await _no_assignment(probe)
            # The snapshot agrees with what the events said.
            _seq, defs, _pages = await _snapshot(probe)
            assert [d["name"] for d in defs] == ["imp-1"]


async def test_reconnect_with_since_replays_missed_assignments(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    here, there = pair
    slug, token = await _tenant_admin(here)
    async with ws_connect(there, token, tenant=slug) as ed:
        probe_token = await _probe_token(ed, "eu")
        async with ws_connect(here, probe_token) as probe:
            hello = await ok(probe, PkgID.PROBE_HELLO, {"version": "1.0"})
            a = await ok(ed, PkgID.MONITOR_CREATE, _http("a", ["eu"]))
            last = (await _next_assignment(probe))["seq"]
        # While the probe is away: one new monitor, one removed.
        b = await ok(ed, PkgID.MONITOR_CREATE, _http("b", ["eu"]))
        await ok(ed, PkgID.MONITOR_PAUSE, {"id": a["id"]})
        async with ws_connect(there, probe_token) as probe:
            frames = []
            req_id = new_req_id()
            hello_since = {"version": "1.0", "since": last}
            await probe.send(json.dumps({"pkg_id": PkgID.PROBE_HELLO, "req_id": req_id, "data": hello_since}))
            async with asyncio.timeout(5):
                while True:
                    msg = json.loads(await probe.recv())
                    if msg.get("req_id") == req_id:
                        answer = msg
                        break
                    frames.append(msg)
            assert answer["status_code"] == 0, answer
            assert answer["data"]["recovered"] is True and answer["data"]["probe_id"] == hello["probe_id"]
            replayed = [f["data"] for f in frames if f.get("pkg_id") == PkgID.EVENT_PROBE_ASSIGNMENT]
            assert [r["op"] for r in replayed] == ["upsert", "remove"], replayed
            assert replayed[0]["monitor"]["id"] == b["id"] and replayed[1]["monitor_id"] == a["id"]
            assert answer["data"]["seq"] == last + 2
            # Live again after the replay.
            c = await ok(ed, PkgID.MONITOR_CREATE, _http("c", ["eu"]))
            ev = await _next_assignment(probe)
            assert ev["data"]["monitor"]["id"] == c["id"] and ev["seq"] == last + 3


async def test_a_large_import_sends_one_reload_per_location(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    here, there = pair
    slug, token = await _tenant_admin(here)
    async with ws_connect(there, token, tenant=slug) as ed:
        probe_token = await _probe_token(ed, "eu")
        await _probe_token(ed, "us")
        us_token = await _probe_token(ed, "us2")
        async with ws_connect(here, probe_token) as probe, ws_connect(here, us_token) as us:
            await ok(probe, PkgID.PROBE_HELLO, {"version": "1.0"})
            await ok(us, PkgID.PROBE_HELLO, {"version": "1.0"})
            rows = [_http(f"bulk-{i}", ["eu"]) for i in range(201)] + [_http("small", ["us2"])]
            await ok(ed, PkgID.MONITOR_IMPORT, {"monitors": rows})
            assert (await _next_assignment(probe, 5))["data"] == {"op": "reload"}
            await _no_assignment(probe)
            ev = await _next_assignment(us, 5)
            assert ev["data"]["op"] == "upsert" and ev["data"]["monitor"]["name"] == "small"
            _seq, defs, pages = await _snapshot(probe, limit=100)
            assert len(defs) == 201 and pages == 3

"""Probe reports and the quorum through a real server with its collector on (PostgreSQL):
probe tokens send PROBE_REPORT over raw WebSockets, the collector decides each monitor's
state from its locations (docs/probes.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from app.protocol import PkgID, RSPCode
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, ok, sqlite_url, ws_connect
from tests.targets import HttpTarget

pytestmark = pytest.mark.slow

GRACE = 2  # PROBE_GRACE of the test server: a location is unknown 1 + 2 s after its last result


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(
        services.create_pg_database(),
        env={
            "COLLECTOR_ENABLED": "true",
            "MONITOR_MIN_INTERVAL": "1",
            "COLLECTOR_TICK": "0.2",
            "COLLECTOR_JITTER": "0.2",
            "PROBE_GRACE": str(GRACE),
            "WS_MESSAGE_RATE_LIMIT": "100000",
        },
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def any_server(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[ServerProcess]:
    """Reports on both databases (ON CONFLICT statements differ by dialect)."""
    if request.param == "postgresql":
        yield server
        return
    srv = ServerProcess(sqlite_url(), env={"PROBE_GRACE": str(GRACE), "WS_MESSAGE_RATE_LIMIT": "100000"})
    srv.start()
    yield srv
    srv.stop()


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def now() -> datetime:
    return datetime.now(UTC)


_keys = iter(range(10**9))


def result(
    monitor_id: int,
    ok_: bool,
    *,
    key: str | None = None,
    ts: datetime | None = None,
    latency: float | None = 12.0,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "key": key or f"k{next(_keys)}-{unique('r')}",
        "monitor_id": monitor_id,
        "ts": iso(ts or now()),
        "ok": ok_,
        "latency_ms": latency if ok_ else None,
        "status_code": 200 if ok_ else None,
        "error": None if ok_ else (error or "connection refused"),
    }


@contextlib.asynccontextmanager
async def admin(srv: ServerProcess) -> AsyncIterator[ClientConnection]:
    user = await acreate_user(srv.database_url, {unique("t"): "admin"})
    async with ws_connect(srv, srv.login(user, PASSWORD)) as ws:
        yield ws


async def probe_token(ws: ClientConnection, location: str) -> str:
    made = await ok(ws, PkgID.TOKEN_CREATE, {"name": unique("probe"), "role": "probe", "location": location})
    return str(made["token"])


async def report(srv: ServerProcess, token: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    async with ws_connect(srv, token) as p:
        return await call(p, PkgID.PROBE_REPORT, {"results": results})


async def next_event(ws: ClientConnection, want: Any, within: float = 20) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            msg = json.loads(await ws.recv())
            if "topic" in msg and want(msg):
                return dict(msg)


async def wait_for(cond: Any, within: float = 20, what: str = "") -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        got = await cond()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def http_monitor(name: str, url: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "http", "url": url, "interval": 1, "timeout": 0.5, **fields}


async def test_reports_accepted_duplicates_refused_and_forward_only(any_server: ServerProcess) -> None:
    server = any_server
    async with admin(server) as ws, admin(server) as other:
        token = await probe_token(ws, "eu")
        await probe_token(other, "eu")  # the same name in another tenant is another location
        url = "http://127.0.0.1:9/never"  # never probed: "local" is not among its locations
        mine = await ok(ws, PkgID.MONITOR_CREATE, http_monitor("mine", url, locations=["eu"], interval=60))
        local_only = await ok(ws, PkgID.MONITOR_CREATE, http_monitor("local-only", url, interval=60))
        gone = await ok(ws, PkgID.MONITOR_CREATE, http_monitor("gone", url, locations=["eu"], interval=60))
        await ok(ws, PkgID.MONITOR_DELETE, {"id": gone["id"]})
        foreign = await ok(
            other, PkgID.MONITOR_CREATE, http_monitor("foreign", url, locations=["eu"], interval=60)
        )
        await ok(ws, PkgID.SUBSCRIBE, {"topics": [f"monitor.{mine['id']}"]})

        t0 = now()
        first = [
            result(mine["id"], True, key="a-1", ts=t0, latency=10.0),
            result(local_only["id"], True, key="a-2"),
            result(foreign["id"], True, key="a-3"),
            result(gone["id"], False, key="a-4"),
            result(mine["id"], False, key="a-5", ts=t0 - timedelta(seconds=30)),
            result(mine["id"], True, key="a-6", ts=t0 + timedelta(minutes=5)),
        ]
        got = await report(server, token, first)
        assert got["status_code"] == 0, got
        answer = got["data"]
        assert (answer["accepted"], answer["duplicates"]) == (2, 0)
        refused = {r["index"]: r for r in answer["refused"]}
        assert sorted(refused) == [1, 2, 3, 5]
        assert refused[1]["reason"] == "the monitor is not checked from eu"
        assert refused[2]["reason"] == refused[3]["reason"] == "no such monitor in this tenant"
        assert refused[2]["monitor_id"] == foreign["id"]
        assert "future" in refused[5]["reason"]

        event = await next_event(ws, lambda e: e["pkg_id"] == PkgID.EVENT_LOCATION_STATE)
        assert event["data"]["location"] == "eu" and event["data"]["state"] == "up"
        assert event["data"]["monitor_id"] == mine["id"]

        # A resend of the same keys stores nothing twice.
        again = (await report(server, token, first))["data"]
        assert (again["accepted"], again["duplicates"], len(again["refused"])) == (0, 2, 4)

        # An older result replayed later fills history, never the latest result.
        old = (await report(server, token, [result(mine["id"], False, ts=t0 - timedelta(seconds=10))]))[
            "data"
        ]
        assert old["accepted"] == 1
        got_monitor = await ok(ws, PkgID.MONITOR_GET, {"id": mine["id"]})
        (status,) = got_monitor["location_status"]
        assert status["location"] == "eu" and status["state"] == "up" and status["latency_ms"] == 10.0
        assert status["checked_at"].startswith(iso(t0)[:19])
        assert "location_status" not in await ok(ws, PkgID.MONITOR_GET, {"id": local_only["id"]})

        stats = await ok(ws, PkgID.LOCATION_STATS, {"monitor_id": mine["id"], "window": "1h"})
        (eu,) = stats["locations"]
        assert (eu["checks"], eu["up"], eu["p50"], eu["p95"]) == (3, 1, 10.0, 10.0)
        assert eu["uptime"] == pytest.approx(1 / 3) and eu["state"] == "up"
        hidden = await call(other, PkgID.LOCATION_STATS, {"monitor_id": mine["id"]})
        assert hidden["status_code"] == RSPCode.NOT_FOUND, hidden

        # Malformed reports are refused whole.
        bad_key = await report(server, token, [result(mine["id"], True, key="no spaces")])
        assert bad_key["status_code"] == RSPCode.INVALID_DATA
        bad_ts = await report(server, token, [{**result(mine["id"], True), "ts": "yesterday-ish"}])
        assert bad_ts["status_code"] == RSPCode.INVALID_DATA
        # Only a probe token may report.
        denied = await call(ws, PkgID.PROBE_REPORT, {"results": [result(mine["id"], True)]})
        assert denied["status_code"] == RSPCode.PERMISSION_DENIED


async def test_quorum_two_one_red_location_then_two(server: ServerProcess, target: HttpTarget) -> None:
    target.respond("/q", 200)
    async with admin(server) as ws:
        tok_a, tok_b = await probe_token(ws, "qa"), await probe_token(ws, "qb")
        m = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            http_monitor("quorum", target.url("/q"), locations=["local", "qa", "qb"], quorum=2),
        )
        await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors", "incidents"]})
        b_ok = True
        stop = asyncio.Event()

        async def probes() -> None:
            async with ws_connect(server, tok_a) as pa, ws_connect(server, tok_b) as pb:
                while not stop.is_set():
                    a = await call(
                        pa, PkgID.PROBE_REPORT, {"results": [result(m["id"], False, error="timed out")]}
                    )
                    b = await call(
                        pb, PkgID.PROBE_REPORT, {"results": [result(m["id"], b_ok, error="refused")]}
                    )
                    assert a["data"]["accepted"] == b["data"]["accepted"] == 1, (a, b)
                    await asyncio.sleep(0.3)

        task = asyncio.create_task(probes())
        try:
            red = await next_event(
                ws,
                lambda e: (
                    e["pkg_id"] == PkgID.EVENT_LOCATION_STATE
                    and e["data"]["location"] == "qa"
                    and e["data"]["state"] == "down"
                ),
            )
            assert red["topic"] == "monitors" and red["data"]["error"] == "timed out"
            await wait_for(lambda: _state_is(ws, m["id"], "up"), what="the monitor up with one location red")
            got = await ok(ws, PkgID.MONITOR_GET, {"id": m["id"]})
            states = {s["location"]: s["state"] for s in got["location_status"]}
            assert states == {"local": "up", "qa": "down", "qb": "up"}
            await asyncio.sleep(3)  # several intervals with one location red
            assert (await _incidents(ws, m["id"])) == []
            assert (await ok(ws, PkgID.MONITOR_GET, {"id": m["id"]}))["state"] == "up"

            b_ok = False
            opened = await next_event(
                ws, lambda e: e["pkg_id"] == PkgID.EVENT_INCIDENT and e["data"]["action"] == "opened"
            )
            cause = opened["data"]["incident"]["cause"]
            assert cause == "down in qa, qb (2 of 3 locations, quorum 2): qa: timed out; qb: refused"
            await asyncio.sleep(2)
            incidents = await _incidents(ws, m["id"])
            assert len(incidents) == 1 and incidents[0]["cause"] == cause
        finally:
            stop.set()
            await task
        assert target.hits("/q") > 0  # "local" is one of its locations: the server checks it too


async def _state_is(ws: ClientConnection, monitor_id: int, state: str) -> bool:
    return bool((await ok(ws, PkgID.MONITOR_GET, {"id": monitor_id}))["state"] == state)


async def _incidents(ws: ClientConnection, monitor_id: int) -> list[dict[str, Any]]:
    return list(await ok(ws, PkgID.INCIDENT_LIST, {"monitor_id": monitor_id}))


async def test_a_silent_location_is_unknown_not_failing(server: ServerProcess, target: HttpTarget) -> None:
    target.respond("/s", 200)
    async with admin(server) as ws:
        tok_a, tok_b = await probe_token(ws, "sa"), await probe_token(ws, "sb")
        m = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            http_monitor("stale", target.url("/s"), locations=["sa", "sb"], quorum=1, fail_threshold=1),
        )
        # "sa" saw it down once, then its probe went away; "sb" keeps reporting up.
        assert (await report(server, tok_a, [result(m["id"], False)]))["data"]["accepted"] == 1
        stop = asyncio.Event()

        async def probe_b() -> None:
            async with ws_connect(server, tok_b) as pb:
                while not stop.is_set():
                    await call(pb, PkgID.PROBE_REPORT, {"results": [result(m["id"], True)]})
                    await asyncio.sleep(0.3)

        task = asyncio.create_task(probe_b())
        try:
            await wait_for(lambda: _state_is(ws, m["id"], "down"), what="down while sa is fresh")
            # interval 1 + PROBE_GRACE 2: sa is unknown after 3 s and no longer counts.
            await wait_for(lambda: _state_is(ws, m["id"], "up"), within=15, what="up once sa is unknown")
            got = await ok(ws, PkgID.MONITOR_GET, {"id": m["id"]})
            states = {s["location"]: s["state"] for s in got["location_status"]}
            assert states == {"sa": "unknown", "sb": "up"}
            stats = await ok(ws, PkgID.LOCATION_STATS, {"monitor_id": m["id"]})
            assert {s["location"]: s["state"] for s in stats["locations"]} == states
        finally:
            stop.set()
            await task
        assert target.hits("/s") == 0  # no "local": the server never checks it itself


async def test_probe_only_monitor_follows_its_location(server: ServerProcess, target: HttpTarget) -> None:
    target.respond("/p", 200)
    async with admin(server) as ws:
        tok = await probe_token(ws, "pa")
        m = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            http_monitor("remote", target.url("/p"), locations=["pa"], fail_threshold=1),
        )
        await asyncio.sleep(2)  # several due times with no result: nothing recorded
        got = await ok(ws, PkgID.MONITOR_GET, {"id": m["id"]})
        assert got["state"] == "pending"
        assert got["location_status"] == [
            {"location": "pa", "state": "unknown", "checked_at": None, "latency_ms": None, "error": None}
        ]
        assert (await call(ws, PkgID.CHECK_HISTORY, {"monitor_id": m["id"]}))["data"] == []
        # CHECK_NOW decides by the quorum too, and the server does not check it itself.
        unknown = await call(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]})
        assert unknown["status_code"] == RSPCode.CONFLICT, unknown

        async def send(ok_: bool) -> None:
            await report(server, tok, [result(m["id"], ok_, latency=7.0, error="503 from pa")])

        await send(True)
        now_up = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]})
        assert now_up["state"] == "up" and now_up["result"]["latency_ms"] == 7.0
        await wait_for(lambda: _state_is(ws, m["id"], "up"), what="up from pa's report")
        latest = (await call(ws, PkgID.CHECK_HISTORY, {"monitor_id": m["id"], "limit": 1}))["data"][0]
        assert latest["latency_ms"] == 7.0
        await send(False)
        await wait_for(lambda: _state_is(ws, m["id"], "down"), what="down from pa's report")
        got = await ok(ws, PkgID.MONITOR_GET, {"id": m["id"]})
        assert got["last_error"] == "down in pa (1 of 1 locations, quorum 1): pa: 503 from pa"
    assert target.hits("/p") == 0


async def test_a_location_changing_state_is_decided_at_once_not_at_the_next_due_time(
    server: ServerProcess,
) -> None:
    """A one-hour monitor checked from one location: the report that turns the location
    red makes the monitor due now, so it goes down within seconds, not an hour later."""
    async with admin(server) as ws:
        tok = await probe_token(ws, "slow")
        m = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            {**http_monitor("hourly", "http://127.0.0.1:9/x", locations=["slow"]), "interval": 3600},
        )
        for round_ in range(3):
            await report(server, tok, [result(m["id"], True)])
            await wait_for(lambda: _state_is(ws, m["id"], "up"), within=15, what=f"up at once ({round_})")
            await report(server, tok, [result(m["id"], False, error="refused from slow")])
            await wait_for(lambda: _state_is(ws, m["id"], "down"), within=15, what=f"down at once ({round_})")
        # Decided on each change (and at its first due time), not on every collector tick.
        history = (await call(ws, PkgID.CHECK_HISTORY, {"monitor_id": m["id"]}))["data"]
        assert 6 <= len(history) <= 8, history


async def test_monitor_locations_validated_over_the_socket(server: ServerProcess, target: HttpTarget) -> None:
    async with admin(server) as ws:
        await probe_token(ws, "va")
        url = target.url("/v")
        cases = [
            (http_monitor("x", url, locations=["va", "nowhere"]), "nowhere"),
            (http_monitor("x", url, locations=["local", "va"], quorum=3), "quorum"),
            (http_monitor("x", url, locations=["va", "va"]), "repeat"),
            ({"name": "x", "kind": "push", "interval": 60, "locations": ["va"]}, "locations"),
            ({"name": "x", "kind": "group", "members": [], "locations": ["local", "va"]}, "locations"),
        ]
        for body, named in cases:
            got = await call(ws, PkgID.MONITOR_CREATE, body)
            assert got["status_code"] == RSPCode.INVALID_DATA, (body, got)
            assert named in json.dumps(got), (body, got)

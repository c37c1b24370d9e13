"""Hostile frames over a real socket to a real server on PostgreSQL: control characters,
nesting, req_id forms, invalid UTF-8, generated JSON for every package, and a flood of
costly rejections that must not slow another tenant down."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

from app.handlers import build_router
from app.protocol import PkgID, RSPCode
from app.rbac import PROBE, load_policy
from app.routing import PackageSpec
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.realtime_support import HIGH_LIMITS
from tests.server import ServerProcess, call, expect_close, ok, ws_connect

SPECS: list[PackageSpec] = [s for s in build_router().specs.values() if s.validator is not None]
#: Packages only a probe token may call (the owner's socket would be refused them with 3).
PROBE_ONLY = {pid for pid, role in load_policy().ws.items() if role == PROBE}


@pytest.fixture(scope="module")
def pg_server() -> Iterator[ServerProcess]:
    srv = ServerProcess(services.create_pg_database(), env={**HIGH_LIMITS, "LOG_REQUESTS": "errors"})
    srv.start()
    yield srv
    srv.stop()


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def envelope(pkg_id: int, data: Any, req_id: str | None = None) -> str:
    return compact({"pkg_id": pkg_id, "req_id": req_id or str(uuid.uuid4()), "data": data})


async def send_raw(ws: Any, text: str, req_id: str | None = None) -> dict[str, Any]:
    await ws.send(text)
    async with asyncio.timeout(10):
        while True:
            msg = json.loads(await ws.recv())
            if "topic" not in msg and msg.get("req_id") == req_id:
                return dict(msg)


# ----- control characters (PostgreSQL cannot store NUL: these were status 1)


async def test_nul_in_strings_and_keys_is_refused_with_2(pg_server: ServerProcess) -> None:
    async with ws_connect(pg_server, pg_server.login()) as ws:
        listed = await call(ws, PkgID.MONITOR_LIST, {"name": "a\x00b"})
        assert listed["status_code"] == RSPCode.INVALID_DATA, listed
        assert listed["data"]["msg"].startswith("data.name: control character U+0000 is not allowed")
        created = await call(ws, PkgID.MONITOR_CREATE, {"name": "api\x00", "kind": "push"})
        assert created["status_code"] == RSPCode.INVALID_DATA, created
        assert created["data"]["msg"].startswith("data.name: control character U+0000")
        keyed = await call(ws, PkgID.MONITOR_LIST, {"na\x00me": "x"})
        assert keyed["status_code"] == RSPCode.INVALID_DATA and "in key" in keyed["data"]["msg"]
        escaped = await call(ws, PkgID.MONITOR_CREATE, {"name": "bell\x07", "kind": "push"})
        assert escaped["status_code"] == RSPCode.INVALID_DATA and "U+0007" in escaped["data"]["msg"]
        # Free text keeps its tabs and line breaks.
        made = await ok(ws, PkgID.MONITOR_CREATE, {"name": "ok", "kind": "push", "description": "a\tb\r\nc"})
        assert made["description"] == "a\tb\r\nc"
        assert (await ok(ws, PkgID.PING))["pong"] is True


# ----- nesting


def _deep_list(rid: str, key: str, levels: int) -> str:
    """A MONITOR_LIST frame whose data nests ``levels`` deep at ``key`` (data itself is level 1)."""
    inner = "[" * (levels - 1) + "1" + "]" * (levels - 1)
    return envelope(PkgID.MONITOR_LIST, {key: "HOLE"}, rid).replace('"HOLE"', inner)


async def test_depth_33_is_refused_before_the_schema_and_32_reaches_it(pg_server: ServerProcess) -> None:
    async with ws_connect(pg_server, pg_server.login()) as ws:
        rid = str(uuid.uuid4())
        at_limit = await send_raw(ws, _deep_list(rid, "x", 32), rid)
        assert at_limit["status_code"] == RSPCode.INVALID_DATA
        assert "Additional properties" in at_limit["data"]["msg"]  # the schema saw it
        rid = str(uuid.uuid4())
        over = await send_raw(ws, _deep_list(rid, "x", 33), rid)
        assert over["status_code"] == RSPCode.INVALID_DATA
        assert over["data"]["msg"].startswith("data.x.0.0") and "deeper than 32 levels" in over["data"]["msg"]
        # ~1000 levels inside a checked field used to end in RecursionError (status 1).
        rid = str(uuid.uuid4())
        very = await send_raw(ws, _deep_list(rid, "name", 1000), rid)
        assert very["status_code"] == RSPCode.INVALID_DATA and "deeper than 32" in very["data"]["msg"]
        assert (await ok(ws, PkgID.PING))["pong"] is True


# ----- req_id


async def test_only_canonical_req_ids_are_answered_with_them(pg_server: ServerProcess) -> None:
    canonical = str(uuid.uuid4())
    async with ws_connect(pg_server, pg_server.login()) as ws:
        for odd in (
            f"urn:uuid:{canonical}",
            "{" + canonical + "}",
            canonical.replace("-", ""),
            canonical[:-1] + "\u0663",
            "\n" + canonical.replace("-", "")[1:],
        ):
            resp = await send_raw(ws, compact({"pkg_id": PkgID.PING, "req_id": odd}), None)
            assert resp["status_code"] == RSPCode.INVALID_DATA and resp["pkg_id"] == PkgID.PING
            assert "canonical form" in resp["data"]["msg"]
        resp = await send_raw(
            ws, compact({"pkg_id": PkgID.PING, "req_id": canonical.upper()}), canonical.upper()
        )
        assert resp["status_code"] == RSPCode.OK


# ----- invalid UTF-8


async def test_invalid_utf8_closes_1007_with_one_warning_line(pg_server: ServerProcess) -> None:
    before = len(pg_server.log_text())
    async with ws_connect(pg_server, pg_server.login()) as ws:
        # websockets validates what it sends; write the text frame's bytes directly.
        ws.protocol.send_text(b'{"pkg_id":1,"req_id":"\xff\xfe"}')
        ws.send_data()
        assert await expect_close(ws) == 1007  # RFC 6455: invalid payload data
    await asyncio.sleep(0.3)
    log = pg_server.log_text()[before:]
    lines = [line for line in log.splitlines() if "UTF-8" in line]
    assert len(lines) == 1 and " WARNING " in lines[0], log
    assert "Traceback" not in log and "UnicodeDecodeError" not in log


# ----- generated JSON for every package, through the real router


def _json() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=6), c, max_size=5),
        max_leaves=30,
    )


def _rejected(spec: PackageSpec) -> st.SearchStrategy[dict[str, Any]]:
    """Data the package's schema refuses: near misses on its own keys, or anything."""
    keys = list((spec.schema or {}).get("properties", {})) or ["id"]
    near = st.dictionaries(
        st.sampled_from(keys) | st.text(max_size=6), _json(), min_size=1, max_size=len(keys) + 2
    )
    assert spec.validator is not None
    check = spec.validator
    return (near | st.dictionaries(st.text(max_size=6), _json(), min_size=1, max_size=4)).filter(
        lambda d: bool(check.errors(d))
    )


def _sync_socket(srv: ServerProcess, token: str) -> SyncConnection:
    return sync_connect(
        srv.ws_url,
        additional_headers={"Authorization": f"Bearer {token}"},
        subprotocols=["watchpost.v1"],  # type: ignore[list-item]
        max_size=2**24,
    )


def _answer(ws: SyncConnection, text: str, rid: str) -> dict[str, Any]:
    """Send one frame and read up to its answer (events in between are skipped)."""
    ws.send(text)
    while True:
        msg = json.loads(ws.recv(timeout=10))
        if msg.get("req_id") == rid and "topic" not in msg:
            return dict(msg)


@pytest.fixture(scope="module")
def owner_socket(pg_server: ServerProcess) -> Iterator[SyncConnection]:
    name = unique("fuzz")
    asyncio.run(acreate_user(pg_server.database_url, {unique("fuzz-t"): "owner"}, username=name))
    with _sync_socket(pg_server, pg_server.login(name, PASSWORD)) as ws:
        yield ws


@pytest.fixture(scope="module")
def probe_socket(pg_server: ServerProcess, owner_socket: SyncConnection) -> Iterator[SyncConnection]:
    """A probe token's socket, for the packages only probes may call."""
    rid = str(uuid.uuid4())
    place = unique("fuzz-loc").lower()
    made = {"name": place, "role": "probe", "location": place}
    msg = _answer(owner_socket, envelope(PkgID.TOKEN_CREATE, made, rid), rid)
    assert msg["status_code"] == RSPCode.OK, msg
    with _sync_socket(pg_server, msg["data"]["token"]) as ws:
        yield ws


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
@settings(
    max_examples=8,
    deadline=None,
    # Shrinking replays frames against the server for minutes; the failing frame is printed.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_every_package_rejects_generated_json_over_the_socket(
    owner_socket: SyncConnection, probe_socket: SyncConnection, spec: PackageSpec, data: st.DataObject
) -> None:
    ws = probe_socket if spec.pkg_id in PROBE_ONLY else owner_socket
    value = data.draw(_rejected(spec))
    rid = str(uuid.uuid4())
    text = envelope(spec.pkg_id, value, rid)
    started = time.perf_counter()
    msg = _answer(ws, text, rid)
    elapsed = time.perf_counter() - started
    assert msg["status_code"] == RSPCode.INVALID_DATA, (spec.name, value, msg)
    assert len(msg["data"].get("errors", [])) <= 5
    assert len(json.dumps(msg)) < 4096
    assert elapsed < 2.0  # generous: a round trip on a busy 2-core machine


# ----- one tenant's costly rejections do not stall another tenant


def _percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


async def test_flood_of_oversized_subscribes_does_not_stall_another_tenants_ping(
    pg_server: ServerProcess,
) -> None:
    attacker = await acreate_user(pg_server.database_url, {unique("flood-a"): "viewer"})
    victim = await acreate_user(pg_server.database_url, {unique("calm-b"): "viewer"})
    flood = envelope(PkgID.SUBSCRIBE, {"topics": [0] * 30000})
    assert 60_000 < len(flood) <= 64 * 1024
    async with (
        ws_connect(pg_server, pg_server.login(attacker, PASSWORD)) as bad,
        ws_connect(pg_server, pg_server.login(victim, PASSWORD)) as good,
    ):
        times: list[float] = []

        async def pinger(stop: asyncio.Event) -> None:
            while not stop.is_set() or len(times) < 40:
                started = time.perf_counter()
                await ok(good, PkgID.PING)
                times.append(time.perf_counter() - started)
                await asyncio.sleep(0.005)

        stop = asyncio.Event()
        task = asyncio.create_task(pinger(stop))
        for _ in range(40):
            await bad.send(flood)
        answers = [json.loads(await bad.recv()) for _ in range(40)]
        stop.set()
        await task
    assert _percentile(times, 99) < 0.25, sorted(times)[-5:]
    assert {a["status_code"] for a in answers} == {RSPCode.INVALID_DATA}
    assert (
        answers[0]["data"]["msg"]
        == "invalid data for SUBSCRIBE: topics: has 30000 items; at most 100 allowed"
    )

"""Events across instances and recovery with ``since``: real servers sharing PostgreSQL and Redis.

One server (``shared``) serves the whole module; each test uses its own topic.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from app.protocol import PkgID, RSPCode
from tests import services
from tests.fixtures import unique
from tests.realtime_support import (
    call_collect,
    events_until,
    next_event,
    publisher,
    redis_server,
    servers,
)
from tests.server import ServerProcess, call, ok, ws_connect

HISTORY = 100


@pytest.fixture(scope="module")
def shared(redis_url: str) -> Iterator[tuple[ServerProcess, str]]:
    """A server with a history of ``HISTORY`` events per topic, and its Redis key prefix."""
    prefix = f"wptest:{uuid.uuid4().hex[:10]}:"
    srv = redis_server(services.create_pg_database(), redis_url, prefix, EVENT_HISTORY_SIZE=str(HISTORY))
    with servers(srv):
        yield srv, prefix


def _monitor(**extra: Any) -> dict[str, Any]:
    return {
        "name": unique("m"),
        "kind": "http",
        "url": "https://example.invalid/",
        "interval": 30,
        "timeout": 2,
        **extra,
    }


async def test_event_published_on_one_instance_reaches_subscribers_on_every_instance(
    shared: tuple[ServerProcess, str], redis_url: str
) -> None:
    a, redis_prefix = shared
    b = redis_server(a.database_url, redis_url, redis_prefix, EVENT_HISTORY_SIZE=str(HISTORY))
    with servers(b):
        token = a.login()
        async with (
            ws_connect(a, token) as on_a,
            ws_connect(b, token) as on_b,
            publisher(redis_url, redis_prefix) as third,
        ):
            tenant_id = (await ok(on_a, PkgID.WHOAMI))["tenant_id"]
            for ws in (on_a, on_b):
                start = (await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]}))["topics"]["monitors"]
                assert start == {"seq": 0, "recovered": False, "replayed": 0}
            # Created through B: the subscriber on A sees it (and so does B's own).
            resp, early = await call_collect(on_b, PkgID.MONITOR_CREATE, _monitor())
            created = resp["data"]
            for ws in (on_a, on_b):
                # The publisher's own subscriber may get the event before the response.
                event = early[0] if ws is on_b and early else await next_event(ws, "monitors")
                assert event["pkg_id"] == PkgID.EVENT_MONITOR_CHANGED and event["seq"] == 1
                assert (
                    event["data"]["action"] == "created" and event["data"]["monitor"]["id"] == created["id"]
                )
            # A request that fails after reading (stale version) publishes nothing: the next
            # event anywhere is seq 2, from the update that commits.
            stale = await call(
                on_a, PkgID.MONITOR_UPDATE, {"id": created["id"], "version": 7, "interval": 60}
            )
            assert stale["status_code"] == RSPCode.CONFLICT
            resp, early = await call_collect(
                on_a, PkgID.MONITOR_UPDATE, {"id": created["id"], "version": 1, "interval": 60}
            )
            assert resp["status_code"] == RSPCode.OK, resp
            for ws in (on_a, on_b):
                event = early[0] if ws is on_a and early else await next_event(ws, "monitors")
                assert (event["seq"], event["data"]["action"]) == (2, "updated")
            # One sequence across publishers: A, B and a third instance take turns.
            seen: dict[ClientConnection, list[int]] = {on_a: [], on_b: []}
            for i in range(6):
                if i % 3 == 2:
                    await third.publish(tenant_id, "monitors", {"n": i})
                    continue
                ws = on_a if i % 3 == 0 else on_b
                resp, before = await call_collect(ws, PkgID.MONITOR_CREATE, _monitor())
                assert resp["status_code"] == RSPCode.OK, resp
                seen[ws] += [e["seq"] for e in before]
            for ws, seqs in seen.items():
                if not seqs or seqs[-1] < 8:
                    seqs += await events_until(ws, "monitors", 8)
                assert seqs == list(range(3, 9))


async def test_reconnect_with_since_replays_exactly_the_missed_events_then_live(
    shared: tuple[ServerProcess, str], redis_url: str
) -> None:
    srv, prefix = shared
    topic = "monitor.1"
    token = srv.login()
    async with publisher(redis_url, prefix, HISTORY) as pub:
        async with ws_connect(srv, token) as ws:
            tenant_id = (await ok(ws, PkgID.WHOAMI))["tenant_id"]
            await ok(ws, PkgID.SUBSCRIBE, {"topics": [topic]})
            await pub.publish(tenant_id, topic, {"n": 0})
            seen = (await next_event(ws, topic))["seq"]
        missed = [await pub.publish(tenant_id, topic, {"n": i}) for i in range(1, 6)]
        assert missed == list(range(seen + 1, seen + 6))
        async with ws_connect(srv, token) as ws:
            resp, replay = await call_collect(
                ws, PkgID.SUBSCRIBE, {"topics": [topic], "since": {topic: seen}}
            )
            assert resp["status_code"] == 0, resp
            assert resp["data"]["topics"][topic] == {"seq": missed[-1], "recovered": True, "replayed": 5}
            assert [e["seq"] for e in replay] == missed
            assert [e["data"]["n"] for e in replay] == [1, 2, 3, 4, 5]
            live = await pub.publish(tenant_id, topic, {"n": 6})
            event = await next_event(ws, topic)
            assert (event["seq"], event["data"]) == (live, {"n": 6})


async def test_switch_from_replay_to_live_has_no_gap_and_no_duplicate(
    shared: tuple[ServerProcess, str], redis_url: str
) -> None:
    """Events keep flowing while the client re-subscribes with ``since``."""
    srv, prefix = shared
    topic = "monitor.2"
    async with publisher(redis_url, prefix, HISTORY) as pub, ws_connect(srv, srv.login()) as ws:
        tenant_id = (await ok(ws, PkgID.WHOAMI))["tenant_id"]
        seen = await pub.publish(tenant_id, topic, {"n": 0})
        stop = asyncio.Event()
        flowing = asyncio.Event()
        published: list[int] = []

        async def flood() -> None:
            while not stop.is_set():
                published.append(await pub.publish(tenant_id, topic, {"n": len(published)}))
                if len(published) == 5:
                    flowing.set()
                await asyncio.sleep(0.01)

        task = asyncio.create_task(flood())
        try:
            await flowing.wait()
            resp, replay = await call_collect(
                ws, PkgID.SUBSCRIBE, {"topics": [topic], "since": {topic: seen}}
            )
            assert resp["status_code"] == 0 and resp["data"]["topics"][topic]["recovered"] is True, resp
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await task
        last = published[-1]
        got = [e["seq"] for e in replay] + await events_until(ws, topic, last)
        assert got == list(range(seen + 1, last + 1))


async def test_history_exceeded_answers_not_recovered_with_current_seq(
    shared: tuple[ServerProcess, str], redis_url: str
) -> None:
    srv, prefix = shared
    topic = "monitor.3"
    async with publisher(redis_url, prefix, HISTORY) as pub, ws_connect(srv, srv.login()) as ws:
        tenant_id = (await ok(ws, PkgID.WHOAMI))["tenant_id"]
        seen = await pub.publish(tenant_id, topic, {"n": 0})
        for i in range(HISTORY + 5):
            current = await pub.publish(tenant_id, topic, {"n": i})
        resp, replay = await call_collect(ws, PkgID.SUBSCRIBE, {"topics": [topic], "since": {topic: seen}})
        assert resp["data"]["topics"][topic] == {"seq": current, "recovered": False, "replayed": 0}
        assert replay == []
        # Within the window it still recovers, and live events follow.
        resp, replay = await call_collect(
            ws, PkgID.SUBSCRIBE, {"topics": [topic], "since": {topic: current - 3}}
        )
        assert resp["data"]["topics"][topic]["recovered"] is True
        assert [e["seq"] for e in replay] == [current - 2, current - 1, current]
        nxt = await pub.publish(tenant_id, topic, {"n": "live"})
        assert (await next_event(ws, topic))["seq"] == nxt


async def test_since_ahead_of_the_sequence_is_not_recovered(shared: tuple[ServerProcess, str]) -> None:
    """A seq the topic never reached (e.g. history wiped) must make the client reload."""
    srv, _ = shared
    async with ws_connect(srv, srv.login()) as ws:
        resp, _ = await call_collect(
            ws, PkgID.SUBSCRIBE, {"topics": ["monitor.4"], "since": {"monitor.4": 50}}
        )
        assert resp["status_code"] == RSPCode.OK
        assert resp["data"]["topics"]["monitor.4"] == {"seq": 0, "recovered": False, "replayed": 0}

"""Events across instances and recovery with ``since``: real servers sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio

from app.protocol import PkgID, RSPCode
from tests.realtime_support import call_collect, events_until, next_event, publisher, redis_server, servers
from tests.server import ok, ws_connect


async def test_event_published_on_one_instance_reaches_subscribers_on_every_instance(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    a = redis_server(pg_url, redis_url, redis_prefix)
    b = redis_server(pg_url, redis_url, redis_prefix)
    with servers(a, b):
        token = a.login()
        async with (
            ws_connect(a, token) as on_a,
            ws_connect(b, token) as on_b,
            publisher(redis_url, redis_prefix) as via_a,
            publisher(redis_url, redis_prefix) as via_b,
        ):
            tenant_id = (await ok(on_a, PkgID.WHOAMI))["tenant_id"]
            start_a = (await ok(on_a, PkgID.SUBSCRIBE, {"topics": ["monitors"]}))["topics"]["monitors"]
            start_b = (await ok(on_b, PkgID.SUBSCRIBE, {"topics": ["monitors"]}))["topics"]["monitors"]
            assert start_a["seq"] == start_b["seq"] == 0
            # Two independent publishers (as two instances would be) take turns on one topic.
            seqs = []
            for i in range(10):
                pub = via_b if i % 2 == 0 else via_a
                seqs.append(await pub.publish(tenant_id, "monitors", {"n": i}))
            assert seqs == list(range(1, 11))  # one sequence, continuous across publishers
            for ws in (on_a, on_b):
                first = await next_event(ws, "monitors")
                assert first["pkg_id"] == PkgID.EVENT_MONITOR_CHANGED and first["data"] == {"n": 0}
                assert [first["seq"], *await events_until(ws, "monitors", 10)] == list(range(1, 11))


async def test_reconnect_with_since_replays_exactly_the_missed_events_then_live(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    srv = redis_server(pg_url, redis_url, redis_prefix)
    with servers(srv):
        token = srv.login()
        async with publisher(redis_url, redis_prefix) as pub:
            async with ws_connect(srv, token) as ws:
                tenant_id = (await ok(ws, PkgID.WHOAMI))["tenant_id"]
                await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
                await pub.publish(tenant_id, "monitors", {"n": 0})
                seen = (await next_event(ws, "monitors"))["seq"]
            missed = [await pub.publish(tenant_id, "monitors", {"n": i}) for i in range(1, 6)]
            assert missed == list(range(seen + 1, seen + 6))
            async with ws_connect(srv, token) as ws:
                resp, replay = await call_collect(
                    ws, PkgID.SUBSCRIBE, {"topics": ["monitors"], "since": {"monitors": seen}}
                )
                assert resp["status_code"] == 0, resp
                assert resp["data"]["topics"]["monitors"] == {
                    "seq": missed[-1],
                    "recovered": True,
                    "replayed": 5,
                }
                assert [e["seq"] for e in replay] == missed
                assert [e["data"]["n"] for e in replay] == [1, 2, 3, 4, 5]
                live = await pub.publish(tenant_id, "monitors", {"n": 6})
                event = await next_event(ws, "monitors")
                assert (event["seq"], event["data"]) == (live, {"n": 6})


async def test_switch_from_replay_to_live_has_no_gap_and_no_duplicate(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """Events keep flowing while the client re-subscribes with ``since``."""
    srv = redis_server(pg_url, redis_url, redis_prefix)
    with servers(srv):
        token = srv.login()
        async with publisher(redis_url, redis_prefix) as pub, ws_connect(srv, token) as ws:
            tenant_id = (await ok(ws, PkgID.WHOAMI))["tenant_id"]
            seen = await pub.publish(tenant_id, "monitors", {"n": 0})
            stop = asyncio.Event()
            published: list[int] = []

            async def flood() -> None:
                while not stop.is_set():
                    published.append(await pub.publish(tenant_id, "monitors", {"n": len(published)}))
                    await asyncio.sleep(0.002)

            task = asyncio.create_task(flood())
            try:
                await asyncio.sleep(0.2)
                resp, replay = await call_collect(
                    ws, PkgID.SUBSCRIBE, {"topics": ["monitors"], "since": {"monitors": seen}}
                )
                assert resp["status_code"] == 0 and resp["data"]["topics"]["monitors"]["recovered"] is True
                await asyncio.sleep(0.3)
            finally:
                stop.set()
                await task
            last = published[-1]
            got = [e["seq"] for e in replay] + await events_until(ws, "monitors", last)
            assert got == list(range(seen + 1, last + 1))


async def test_history_exceeded_answers_not_recovered_with_current_seq(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    srv = redis_server(pg_url, redis_url, redis_prefix, EVENT_HISTORY_SIZE="5")
    with servers(srv):
        token = srv.login()
        async with publisher(redis_url, redis_prefix, history_size=5) as pub, ws_connect(srv, token) as ws:
            tenant_id = (await ok(ws, PkgID.WHOAMI))["tenant_id"]
            seen = await pub.publish(tenant_id, "monitors", {"n": 0})
            for i in range(10):
                current = await pub.publish(tenant_id, "monitors", {"n": i})
            resp, replay = await call_collect(
                ws, PkgID.SUBSCRIBE, {"topics": ["monitors"], "since": {"monitors": seen}}
            )
            assert resp["data"]["topics"]["monitors"] == {"seq": current, "recovered": False, "replayed": 0}
            assert replay == []
            # Within the window it still recovers, and live events follow.
            resp, replay = await call_collect(
                ws, PkgID.SUBSCRIBE, {"topics": ["monitors"], "since": {"monitors": current - 3}}
            )
            assert resp["data"]["topics"]["monitors"]["recovered"] is True
            assert [e["seq"] for e in replay] == [current - 2, current - 1, current]
            nxt = await pub.publish(tenant_id, "monitors", {"n": "live"})
            assert (await next_event(ws, "monitors"))["seq"] == nxt


async def test_since_ahead_of_the_sequence_is_not_recovered(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """A seq the topic never reached (e.g. history wiped) must make the client reload."""
    srv = redis_server(pg_url, redis_url, redis_prefix)
    with servers(srv):
        async with ws_connect(srv, srv.login()) as ws:
            resp, _ = await call_collect(
                ws, PkgID.SUBSCRIBE, {"topics": ["monitors"], "since": {"monitors": 50}}
            )
            assert resp["status_code"] == RSPCode.OK
            assert resp["data"]["topics"]["monitors"] == {"seq": 0, "recovered": False, "replayed": 0}

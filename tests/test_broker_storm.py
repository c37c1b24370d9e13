"""Reconnect storms on the Redis broker: thousands of sockets subscribe at the same moment.

After a deploy or failover every dashboard reconnects and resubscribes at once,
most of them with ``since``. Each of those SUBSCRIBEs must answer 0 (waiting
briefly for Redis if need be), never 10 UNAVAILABLE, and the first event after
the storm must reach every socket.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from app.protocol import CloseCode, PkgID
from tests import services
from tests.realtime_support import DEFAULT_TENANT_ID, next_event, publisher, redis_server, servers
from tests.server import ServerProcess, new_req_id, ws_connect

#: Sockets in the storm: several times the Redis client pool (100 connections by
#: default in redis-py, where the storm used to fail), small enough for the test budget.
SOCKETS = 2000
#: Events published before the storm, replayed to the sockets that send ``since``.
BACKLOG = 5


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


async def _open_all(srv: ServerProcess, token: str, n: int, stack: list[Any]) -> list[ClientConnection]:
    """Open ``n`` authenticated sockets, a few hundred handshakes at a time."""
    gate = asyncio.Semaphore(200)

    async def one() -> ClientConnection:
        async with gate:
            cm = ws_connect(srv, token, ping_interval=None)
            ws = await cm.__aenter__()
            stack.append(cm)
            return ws

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def _answer(ws: ClientConnection, req_id: str) -> tuple[dict[str, Any], list[int]]:
    """The SUBSCRIBE's answer and the seqs of the events that came before it (the replay)."""
    seqs: list[int] = []
    async with asyncio.timeout(60):
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("topic") == "monitors":
                seqs.append(int(msg["seq"]))
            elif msg.get("req_id") == req_id:
                return dict(msg), seqs


@pytest.fixture
def storm_server(redis_url: str, redis_prefix: str) -> Iterator[ServerProcess]:
    """A server on PostgreSQL and Redis that lets one user hold every socket of the storm."""
    _raise_fd_limit(SOCKETS + 500)
    srv = redis_server(
        services.create_pg_database(), redis_url, redis_prefix, WS_MAX_CONNECTIONS_PER_USER=str(SOCKETS + 10)
    )
    with servers(srv):
        yield srv


async def test_thousands_of_simultaneous_subscribes_with_since_all_succeed(
    storm_server: ServerProcess, redis_url: str, redis_prefix: str
) -> None:
    srv = storm_server
    stack: list[Any] = []
    try:
        async with publisher(redis_url, redis_prefix) as pub:
            first = await pub.publish(DEFAULT_TENANT_ID, "monitors", {"n": 0})
            for i in range(1, BACKLOG):
                await pub.publish(DEFAULT_TENANT_ID, "monitors", {"n": i})
            last = first + BACKLOG - 1
            since = first - 1  # every event of the backlog is missed

            sockets = await _open_all(srv, srv.login(), SOCKETS, stack)
            # Every frame is written before any answer is read: the server sees one burst.
            req_ids = [new_req_id() for _ in sockets]
            frames = []
            for i, req_id in enumerate(req_ids):
                data: dict[str, Any] = {"topics": ["monitors"]}
                if i % 4:  # three in four recover with since, the rest start fresh
                    data["since"] = {"monitors": since}
                frames.append(json.dumps({"pkg_id": PkgID.SUBSCRIBE, "req_id": req_id, "data": data}))
            await asyncio.gather(*(ws.send(f) for ws, f in zip(sockets, frames, strict=True)))
            results = await asyncio.gather(*(_answer(ws, r) for ws, r in zip(sockets, req_ids, strict=True)))

            answers = [a for a, _replay in results]
            failed = [a for a in answers if a["status_code"] != 0]
            assert not failed, f"{len(failed)} of {SOCKETS} SUBSCRIBEs failed, e.g. {failed[:3]}"
            for i, (a, replay) in enumerate(results):
                topic = a["data"]["topics"]["monitors"]
                if i % 4:  # recovered: exactly the missed events, in order, before the answer
                    assert topic == {"seq": last, "recovered": True, "replayed": BACKLOG}, a
                    assert replay == list(range(first, last + 1)), replay
                else:
                    assert topic == {"seq": last, "recovered": False, "replayed": 0}, a
                    assert replay == [], replay

            # Every socket is live: the next event reaches each of them once.
            live = await pub.publish(DEFAULT_TENANT_ID, "monitors", {"n": "after"})
            got = await asyncio.gather(*(next_event(ws, "monitors", timeout=30) for ws in sockets))
            assert [e["seq"] for e in got] == [live] * SOCKETS
            assert "Too many connections" not in srv.log_text()
    finally:
        await asyncio.gather(*(cm.__aexit__(None, None, None) for cm in stack), return_exceptions=True)


async def _until(event: asyncio.Event, tasks: list[asyncio.Task[Any]], timeout: float = 60) -> None:
    """Wait for ``event``; a task that fails meanwhile fails the test with its own error."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        async with asyncio.timeout(timeout):
            while not waiter.done():
                await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
    finally:
        waiter.cancel()


#: Sockets moved from a draining instance to the other one.
MOVED = 1000


async def test_drained_instances_sockets_resubscribe_on_the_other_with_nothing_lost(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """SIGTERM one of two instances holding ``MOVED`` sockets while events keep coming.

    Every dashboard is closed with 1001, reconnects to the other instance and
    resubscribes with ``since`` its last seen seq: every SUBSCRIBE answers 0 and
    every dashboard sees every event exactly once, in order.
    """
    _raise_fd_limit(2 * MOVED + 500)
    env = {"WS_MAX_CONNECTIONS_PER_USER": str(2 * MOVED + 10), "EVENT_HISTORY_SIZE": "2000"}
    a = redis_server(pg_url, redis_url, redis_prefix, **env)
    b = redis_server(pg_url, redis_url, redis_prefix, **env)
    with servers(a, b):
        assert a.proc is not None
        token = a.login()
        subscribed = 0
        all_subscribed = asyncio.Event()
        resubscribed = 0
        all_resubscribed = asyncio.Event()
        final: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def moved() -> None:
            nonlocal resubscribed
            resubscribed += 1
            if resubscribed == MOVED:
                all_resubscribed.set()

        async def dashboard() -> tuple[int, list[int], list[dict[str, Any]]]:
            """The seq it started from, every event seq it saw, and its two SUBSCRIBE answers."""
            nonlocal subscribed
            seen: list[int] = []
            answers: list[dict[str, Any]] = []
            async with ws_connect(a, token, ping_interval=None) as ws:
                req_id = new_req_id()
                await ws.send(
                    json.dumps(
                        {"pkg_id": PkgID.SUBSCRIBE, "req_id": req_id, "data": {"topics": ["monitors"]}}
                    )
                )
                answer, before = await _answer(ws, req_id)
                answers.append(answer)
                subscribed += 1
                if subscribed == MOVED:
                    all_subscribed.set()
                if answer["status_code"] != 0:
                    moved()
                    return 0, before, answers  # not subscribed: reported below
                start = int(answer["data"]["topics"]["monitors"]["seq"])
                try:
                    async for raw in ws:
                        msg = json.loads(raw)
                        if msg.get("topic") == "monitors":
                            seen.append(int(msg["seq"]))
                except ConnectionClosed:
                    pass
                assert ws.close_code == CloseCode.GOING_AWAY, ws.close_code
            # The other instance; the since is the last event this dashboard saw.
            async with ws_connect(b, token, ping_interval=None) as ws:
                req_id = new_req_id()
                since = seen[-1] if seen else start
                data = {"topics": ["monitors"], "since": {"monitors": since}}
                await ws.send(json.dumps({"pkg_id": PkgID.SUBSCRIBE, "req_id": req_id, "data": data}))
                answer, replay = await _answer(ws, req_id)
                answers.append(answer)
                seen += replay
                moved()
                if answer["status_code"] != 0:
                    return start, seen, answers  # not subscribed: reported below
                last = await final
                while not seen or seen[-1] < last:
                    seen.append(int((await next_event(ws, "monitors", timeout=30))["seq"]))
            return start, seen, answers

        async with publisher(redis_url, redis_prefix) as pub:
            dashboards = [asyncio.create_task(dashboard()) for _ in range(MOVED)]
            try:
                await _until(all_subscribed, dashboards)
                stop = asyncio.Event()

                async def keep_publishing() -> None:
                    i = 0
                    while not stop.is_set():
                        await pub.publish(DEFAULT_TENANT_ID, "monitors", {"during": i})
                        i += 1
                        await asyncio.sleep(0.1)

                steady = asyncio.create_task(keep_publishing())
                await asyncio.sleep(0.5)
                a.proc.send_signal(signal.SIGTERM)  # drain: every socket closes with 1001
                await _until(all_resubscribed, dashboards)
                await asyncio.sleep(0.5)  # a few events after the move, live on the new instance
                stop.set()
                await steady
                final.set_result(await pub.publish(DEFAULT_TENANT_ID, "monitors", {"n": "final"}))
                async with asyncio.timeout(60):
                    results = await asyncio.gather(*dashboards)
            finally:
                for task in dashboards:
                    task.cancel()
                await asyncio.gather(*dashboards, return_exceptions=True)

        assert await asyncio.to_thread(a.proc.wait, 20) == 0
        last = final.result()
        for start, seen, answers in results:
            assert [x["status_code"] for x in answers] == [0, 0], answers
            assert answers[1]["data"]["topics"]["monitors"]["recovered"] is True, answers
            assert seen == list(range(start + 1, last + 1)), (start, seen)
        # Events really flowed across the move: some were missed while moving and replayed.
        assert sum(answers[1]["data"]["topics"]["monitors"]["replayed"] for _s, _seen, answers in results) > 0

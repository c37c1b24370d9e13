"""A client that stops reading is closed with 4009; everyone else keeps receiving everything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

from websockets.asyncio.client import ClientConnection, connect

from app.protocol import CloseCode, PkgID
from tests.realtime_support import publisher, redis_server, rss_kib, servers
from tests.server import expect_close, ok, ws_connect

READERS = 50
#: Large, so the slow socket's kernel buffers (up to 4 MiB on loopback) fill after ~150 events.
PAYLOAD = "x" * 32000


async def _reader(ws: ClientConnection, got: list[int], progress: asyncio.Event) -> None:
    try:
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("topic") == "monitors":
                got.append(int(msg["seq"]))
                progress.set()
    finally:
        progress.set()  # wake the waiter so it notices a closed reader


async def _caught_up(
    got: list[list[int]], last: int, tasks: list[asyncio.Task[None]], progress: asyncio.Event
) -> None:
    async with asyncio.timeout(30):
        while min(len(g) for g in got) < last:
            assert not any(t.done() for t in tasks), "a reading client was disconnected"
            progress.clear()
            await progress.wait()


async def test_slow_consumer_is_closed_4009_and_others_get_everything(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    srv = redis_server(pg_url, redis_url, redis_prefix)  # default send queue: 1 MiB or 1000 messages
    with servers(srv):
        token = srv.login()
        assert srv.proc is not None
        # The slow client's kernel buffer is tiny so back-pressure reaches the server quickly.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        slow = await connect(
            srv.ws_url,
            sock=sock,
            additional_headers={"Authorization": f"Bearer {token}"},
            subprotocols=["watchpost.v1"],
            max_queue=1,
            open_timeout=10,
        )  # type: ignore[list-item]
        readers: list[ClientConnection] = []
        tasks: list[asyncio.Task[None]] = []
        stack = contextlib.AsyncExitStack()
        try:
            tenant_id = (await ok(slow, PkgID.WHOAMI))["tenant_id"]
            await ok(slow, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
            got: list[list[int]] = []
            progress = asyncio.Event()
            for _ in range(READERS):
                ws = await stack.enter_async_context(ws_connect(srv, token))
                readers.append(ws)
                await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
                got.append([])
                tasks.append(asyncio.create_task(_reader(ws, got[-1], progress)))
            rss_before = rss_kib(srv.proc.pid)
            # From here on nobody reads from ``slow``.
            async with publisher(redis_url, redis_prefix) as pub:
                last = 0
                slow_closed = False
                for _round in range(60):
                    for _ in range(10):
                        last = await pub.publish(tenant_id, "monitors", {"blob": PAYLOAD})
                    # Pace by the fast readers: each must have everything so far before more is sent.
                    await _caught_up(got, last, tasks, progress)
                    if "send queue overflow" in srv.log_text():
                        slow_closed = True
                        break
                assert slow_closed, "the slow consumer was never closed"
                # Keep streaming after the close: the others still get every event.
                for _ in range(20):
                    last = await pub.publish(tenant_id, "monitors", {"blob": PAYLOAD})
            await _caught_up(got, last, tasks, progress)
            for seqs in got:
                assert seqs == list(range(1, last + 1))
            rss_after = rss_kib(srv.proc.pid)
            assert rss_after - rss_before < 64 * 1024, (rss_before, rss_after)
            assert await expect_close(slow, timeout=30) == CloseCode.SLOW_CONSUMER
            # The readers' sockets are still open and the server answers them.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert (await ok(readers[0], PkgID.PING))["pong"] is True
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await stack.aclose()
            await slow.close()

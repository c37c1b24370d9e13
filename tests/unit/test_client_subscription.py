"""A subscription's own bookkeeping, without a socket: replayed copies dropped, gaps,
restarted numbering and a slow reader turned into Resync (over real servers: tests/test_client.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from app.client import Event, Resync, Subscription, WatchpostClient
from app.protocol import PkgID


def _sub(max_queue: int = 100) -> Subscription:
    return Subscription(WatchpostClient("ws://127.0.0.1:9/web"), ["monitors"], max_queue=max_queue)


def _ev(seq: int) -> Event:
    return Event("monitors", seq, PkgID.EVENT_MONITOR_STATUS, {"seq": seq})


def _answer(seq: int, recovered: bool) -> dict[str, Any]:
    return {"status_code": 0, "data": {"topics": {"monitors": {"seq": seq, "recovered": recovered}}}}


async def _drain(sub: Subscription) -> list[Event | Resync]:
    out: list[Event | Resync] = []
    with contextlib.suppress(TimeoutError):
        while True:
            out.append(await asyncio.wait_for(anext(sub), 0.05))
    return out


async def test_replayed_copies_are_dropped_and_a_gap_asks_for_resync() -> None:
    sub = _sub()
    sub._on_subscribe_answer(_answer(10, False), gen=1, since={})  # fresh: continue after 10
    for seq in (11, 12, 11, 12, 13, 16):
        sub._deliver(_ev(seq), gen=1)
    assert await _drain(sub) == [_ev(11), _ev(12), _ev(13), Resync("monitors", 15, "gap"), _ev(16)]
    assert sub._subscribe_request() == ({"topics": ["monitors"], "since": {"monitors": 16}}, {"monitors": 16})


async def test_not_recovered_gives_resync_and_restarts_numbering() -> None:
    sub = _sub()
    sub._on_subscribe_answer(_answer(40, False), gen=1, since={})
    sub._deliver(_ev(41), gen=1)
    assert await _drain(sub) == [_ev(41)]
    # Reconnected to a server whose sequence restarted (no Redis): its word replaces ours.
    sub._on_subscribe_answer(_answer(2, True), gen=2, since={"monitors": 41})
    sub._deliver(_ev(3), gen=2)
    assert await _drain(sub) == [Resync("monitors", 2, "not_recovered"), _ev(3)]


async def test_a_reader_falling_behind_gets_an_overflow_resync() -> None:
    sub = _sub(max_queue=3)
    sub._on_subscribe_answer(_answer(0, False), gen=1, since={})
    for seq in range(1, 8):
        sub._deliver(_ev(seq), gen=1)
    assert await _drain(sub) == [Resync("monitors", 7, "overflow")]
    sub._deliver(_ev(8), gen=1)
    assert await _drain(sub) == [_ev(8)]

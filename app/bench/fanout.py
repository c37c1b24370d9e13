"""Broadcast measurement: publish one event at a time, time its arrival at every subscriber.

A round starts just before the publisher sends (for Watchpost: the request
whose handler publishes the event; for the echo: the frame it rebroadcasts) and
ends when every subscriber has the event or the round times out. Time to last
delivery is the latest arrival in the round. Every subscriber must get every
event's ``seq`` exactly once: missing ones are lost, repeats are duplicated.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.bench.stats import summarize_ns
from app.bench.wsclient import BenchConnection

#: Makes the server publish one event; called once per round.
Publish = Callable[[int], Awaitable[None]]


@dataclass
class _Round:
    start_ns: int
    arrivals_ns: list[int] = field(default_factory=list)
    complete: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class FanoutResult:
    subscribers: int
    rounds: int
    expected: int = 0
    delivered: int = 0
    duplicated: int = 0
    stray: int = 0
    timed_out_rounds: int = 0
    last_delivery_ns: list[int] = field(default_factory=list)
    first_delivery_ns: list[int] = field(default_factory=list)
    server_cpu_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        last = summarize_ns(self.last_delivery_ns)
        first = summarize_ns(self.first_delivery_ns)
        deliveries = self.delivered or 1
        return {
            "subscribers": self.subscribers,
            "rounds": self.rounds,
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.expected - self.delivered,
            "duplicated": self.duplicated,
            "stray_events": self.stray,
            "timed_out_rounds": self.timed_out_rounds,
            "time_to_last_delivery": last,
            "time_to_first_delivery": {k: first[k] for k in ("p50_ms", "p99_ms", "max_ms")},
            "server_cpu_us_per_delivery": (
                round(self.server_cpu_s / deliveries * 1e6, 2) if self.server_cpu_s is not None else None
            ),
        }


class _Tracker:
    """Attributes each arriving ``seq`` to the round in progress and counts repeats."""

    def __init__(self, subscribers: int, event_pkg_id: int, topic: str | None) -> None:
        self.subscribers = subscribers
        self.event_pkg_id = event_pkg_id
        self.topic = topic
        self.current: _Round | None = None
        self.round_of_seq: dict[int, _Round] = {}
        self.seen: list[set[int]] = [set() for _ in range(subscribers)]
        self.duplicated = 0
        self.stray = 0

    def on_frame(self, index: int, text: bytes) -> None:
        now = time.perf_counter_ns()
        message = orjson.loads(text)
        if message.get("pkg_id") != self.event_pkg_id or (self.topic and message.get("topic") != self.topic):
            self.stray += 1
            return
        seq = message["seq"]
        if seq in self.seen[index]:
            self.duplicated += 1
            return
        self.seen[index].add(seq)
        round_ = self.round_of_seq.get(seq)
        if round_ is None:
            if self.current is None:
                self.stray += 1
                return
            round_ = self.round_of_seq[seq] = self.current
        round_.arrivals_ns.append(now - round_.start_ns)
        if len(round_.arrivals_ns) >= self.subscribers:
            round_.complete.set()


async def run_fanout(
    subscribers: Sequence[BenchConnection],
    publish: Publish,
    *,
    rounds: int,
    event_pkg_id: int,
    topic: str | None,
    round_timeout_s: float = 15.0,
    pause_s: float = 0.05,
    server_cpu: Callable[[], float] | None = None,
) -> FanoutResult:
    """Publish ``rounds`` events one after another; subscribers must already be subscribed."""
    tracker = _Tracker(len(subscribers), event_pkg_id, topic)
    result = FanoutResult(subscribers=len(subscribers), rounds=rounds)

    previous = [ws.on_message for ws in subscribers]
    for index, ws in enumerate(subscribers):
        ws.on_message = functools.partial(tracker.on_frame, index)
    cpu0 = server_cpu() if server_cpu else 0.0
    try:
        for number in range(1, rounds + 1):
            round_ = tracker.current = _Round(start_ns=time.perf_counter_ns())
            await publish(number)
            try:
                await asyncio.wait_for(round_.complete.wait(), round_timeout_s)
            except TimeoutError:
                result.timed_out_rounds += 1
            if round_.arrivals_ns:
                result.last_delivery_ns.append(max(round_.arrivals_ns))
                result.first_delivery_ns.append(min(round_.arrivals_ns))
            await asyncio.sleep(pause_s)
        # Late or repeated frames of the last round still count.
        await asyncio.sleep(max(pause_s, 0.2))
    finally:
        if server_cpu:
            result.server_cpu_s = server_cpu() - cpu0
        for ws, old in zip(subscribers, previous, strict=True):
            ws.on_message = old
    result.expected = rounds * len(subscribers)
    result.delivered = sum(len(seqs) for seqs in tracker.seen)
    result.duplicated = tracker.duplicated
    result.stray = tracker.stray
    return result

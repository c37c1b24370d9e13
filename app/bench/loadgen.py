"""The load generator: many WebSocket connections, requests kept in flight, replies matched by req_id.

Each connection runs one closed loop: it sends ``in_flight`` requests, and
every reply (matched by ``req_id``) is timed and at once replaced by a new
request until the measurement window ends; then the run waits for the replies
still owed. A reply whose ``req_id`` is not outstanding counts as
duplicated/unexpected, an owed reply that never comes counts as lost, and a
reply with a non-zero ``status_code`` as an error. Connections are
:class:`app.bench.wsclient.BenchConnection` (websockets' sans-I/O protocol), so
the whole loop is a callback: no task or future per message.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.bench.stats import summarize_ns
from app.bench.wsclient import BenchConnection, connect

#: A request frame split around its req_id: ``prefix + req_id + suffix`` is the UTF-8 text sent.
FrameParts = tuple[bytes, bytes]
#: Returns the cumulative CPU seconds of the process(es) under test.
CpuProbe = Callable[[], float]


async def open_connections(
    url: str,
    count: int,
    *,
    headers: dict[str, str] | None = None,
    subprotocols: Sequence[str] | None = None,
    concurrency: int = 64,
) -> list[BenchConnection]:
    """Open ``count`` connections (``concurrency`` handshakes at a time); close them with :func:`close_all`.

    Raises on the first failed handshake: a bench with fewer connections than
    asked for would report the wrong figures.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one() -> BenchConnection:
        async with gate:
            return await connect(url, headers=headers, subprotocols=subprotocols)

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    opened = [r for r in results if isinstance(r, BenchConnection)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await close_all(opened)
        raise RuntimeError(f"{len(failures)} of {count} connections to {url} failed: {failures[0]!r}")
    return opened


async def close_all(connections: Sequence[BenchConnection]) -> None:
    """Close every connection, in parallel, ignoring ones already gone."""
    await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)


async def request_all(
    connections: Sequence[BenchConnection], pkg_id: int, data: dict[str, Any], concurrency: int = 100
) -> list[dict[str, Any]]:
    """One setup request on every connection (``concurrency`` at a time); the replies in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(ws: BenchConnection) -> dict[str, Any]:
        async with gate:
            return await ws.request(pkg_id, data)

    return await asyncio.gather(*(one(ws) for ws in connections))


def _req_id_source() -> Callable[[], str]:
    # UUID-shaped ids without calling uuid4 per request: a random prefix plus a counter.
    prefix = str(uuid.uuid4())[:24]
    counter = 0

    def next_id() -> str:
        nonlocal counter
        counter += 1
        return f"{prefix}{counter:012x}"

    return next_id


@dataclass
class _Window:
    """The measurement window shared by every connection of one run."""

    start_ns: int
    end_ns: int
    #: Set when the window ends: loops stop sending and only collect what they are owed.
    stopping: bool = False


@dataclass
class RpcResult:
    """Figures of one closed-loop run; ``to_dict`` is what goes into the results file."""

    connections: int
    in_flight: int
    duration_s: float
    completed: int = 0
    sent: int = 0
    received: int = 0
    lost: int = 0
    unexpected: int = 0
    errors: int = 0
    events_ignored: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        throughput = self.completed / self.duration_s if self.duration_s else 0.0
        summary = summarize_ns(self.latencies_ns)
        server_us = (
            round(self.server_cpu_s / self.completed * 1e6, 1)
            if self.server_cpu_s is not None and self.completed
            else None
        )
        return {
            "connections": self.connections,
            "in_flight": self.in_flight,
            "duration_s": round(self.duration_s, 3),
            "throughput_rps": round(throughput, 1),
            "latency": summary,
            "server_cpu_us_per_request": server_us,
            "client_cpu_utilisation": round(self.client_cpu_s / self.duration_s, 3)
            if self.duration_s
            else None,
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "duplicated_or_unexpected": self.unexpected,
            "errors": self.errors,
            "error_samples": self.error_samples[:5],
        }


async def run_rpc(
    connections: Sequence[BenchConnection],
    frames: Sequence[FrameParts],
    *,
    in_flight: int,
    warmup_s: float,
    duration_s: float,
    drain_timeout_s: float = 15.0,
    server_cpu: CpuProbe | None = None,
) -> RpcResult:
    """Drive every connection with ``in_flight`` outstanding requests; measure after ``warmup_s``.

    Connections must be open and idle (no events expected); they stay open
    afterwards, back on their default message handler, so the caller can reuse
    or close them.
    """
    now = time.perf_counter_ns()
    window = _Window(start_ns=now + int(warmup_s * 1e9), end_ns=now + int((warmup_s + duration_s) * 1e9))
    result = RpcResult(connections=len(connections), in_flight=in_flight, duration_s=duration_s)
    next_id = _req_id_source()
    if not frames:
        raise ValueError("run_rpc needs at least one frame")
    #: Connection -> its (prefix, suffix); connection i sends frames[i % len(frames)].
    parts = {id(ws): frames[i % len(frames)] for i, ws in enumerate(connections)}
    #: req_id -> send time (ns); ids are unique across connections.
    pending: dict[str, int] = {}
    latencies = result.latencies_ns
    drained = asyncio.Event()

    def send_one(ws: BenchConnection) -> None:
        req_id = next_id()
        pending[req_id] = time.perf_counter_ns()
        result.sent += 1
        prefix, suffix = parts[id(ws)]
        ws.send(prefix + req_id.encode() + suffix)

    def handler(ws: BenchConnection) -> Callable[[bytes], None]:
        def on_message(payload: bytes) -> None:
            received_ns = time.perf_counter_ns()
            message = orjson.loads(payload)
            req_id = message.get("req_id")
            if req_id is None and message.get("pkg_id", 0) >= 900:
                result.events_ignored += 1
                return
            sent_ns = pending.pop(req_id, None)
            if sent_ns is None:
                result.unexpected += 1
                return
            result.received += 1
            if message.get("status_code") != 0:
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(payload[:300].decode(errors="replace"))
            if window.start_ns <= received_ns < window.end_ns:
                result.completed += 1
                latencies.append(received_ns - sent_ns)
            if not window.stopping:
                send_one(ws)
            elif not pending:
                drained.set()

        return on_message

    previous = [ws.on_message for ws in connections]
    for ws in connections:
        ws.on_message = handler(ws)
    try:
        for ws in connections:
            for _ in range(in_flight):
                send_one(ws)
        await asyncio.sleep(warmup_s)
        cpu0, server0 = time.process_time(), server_cpu() if server_cpu else 0.0
        await asyncio.sleep(max(0.0, (window.end_ns - time.perf_counter_ns()) / 1e9))
        window.stopping = True
        result.client_cpu_s = time.process_time() - cpu0
        if server_cpu:
            result.server_cpu_s = server_cpu() - server0
        if pending:
            try:
                await asyncio.wait_for(drained.wait(), drain_timeout_s)
            except TimeoutError:
                pass
    finally:
        for ws, old in zip(connections, previous, strict=True):
            ws.on_message = old
    closed = [ws.close_code for ws in connections if not ws.is_open]
    if closed:
        result.errors += len(closed)
        result.error_samples.append(
            f"{len(closed)} connections closed during the run, codes {sorted(set(map(str, closed)))}"
        )
    result.lost = len(pending)
    return result

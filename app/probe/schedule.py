"""When each assigned monitor runs: its interval, at its own stable phase, never in bursts.

A monitor's checks start at ``k * interval + phase(id, interval)`` seconds of the
Unix clock. The phase is the fractional part of ``id * φ`` (the golden ratio)
times the interval: for any set of ids, and consecutive ids in particular, the
starts spread nearly evenly over the interval (the three-gap theorem: the gaps
between neighbouring phases take at most three sizes), they are the same in
every probe and after every restart, and adding a monitor never moves another.

:class:`Scheduler` holds the assigned definitions and a heap of due times; it
calls ``run(definition, due)`` for each due check, at most ``concurrency`` at a
time. A check still running when its monitor is due again is not started twice
(that start is skipped and counted). The lag of each start (how late it began
after its due time) is kept for the heartbeat's ``lag_ms``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("app.probe")

#: 1/φ: multiplying ids by it spreads them evenly modulo 1.
_GOLDEN = (math.sqrt(5) - 1) / 2

Definition = dict[str, Any]
#: Seconds of start lags kept (the heartbeat reads the last interval of them).
LAG_KEEP = 300.0

Runner = Callable[[Definition, float], Awaitable[None]]


def phase(monitor_id: int, interval: float) -> float:
    """Seconds into each interval at which ``monitor_id`` starts (0 <= phase < interval)."""
    return math.fmod(monitor_id * _GOLDEN, 1.0) * interval


def next_due(monitor_id: int, interval: float, now: float) -> float:
    """The first start of the monitor strictly after ``now`` (Unix seconds)."""
    offset = phase(monitor_id, interval)
    k = math.floor((now - offset) / interval) + 1
    return k * interval + offset


class Scheduler:
    """Runs every assigned monitor at its interval; ``upsert``/``remove`` change the set."""

    def __init__(
        self, run: Runner, *, concurrency: int = 200, clock: Callable[[], float] = time.time
    ) -> None:
        self._run = run
        self._clock = clock
        self.concurrency = max(1, concurrency)
        self._sem = asyncio.Semaphore(self.concurrency)
        self.definitions: dict[int, Definition] = {}
        #: monitor id -> generation; a heap entry of an older generation is stale.
        self._gen: dict[int, int] = {}
        self._heap: list[tuple[float, int, int]] = []
        self._running: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        #: (monotonic time, lag ms) of recent starts, for :meth:`lag_p50`.
        self._lags: deque[tuple[float, float]] = deque()
        self.started = 0
        self.skipped_overlap = 0
        self.skipped_late = 0

    # -- the assigned set ------------------------------------------------------------

    def upsert(self, definition: Definition) -> None:
        """Add or change a monitor; a new one or a changed interval is (re)scheduled."""
        mid = int(definition["id"])
        old = self.definitions.get(mid)
        self.definitions[mid] = definition
        if old is None or old.get("interval") != definition.get("interval"):
            self._schedule(mid, self._clock())

    def remove(self, monitor_id: int) -> None:
        """Stop running the monitor (a check in flight finishes; its result is still reported)."""
        self.definitions.pop(monitor_id, None)
        self._gen.pop(monitor_id, None)

    def replace(self, definitions: list[Definition]) -> None:
        """Make the assigned set exactly ``definitions`` (after a snapshot)."""
        keep = {int(d["id"]) for d in definitions}
        for mid in [m for m in self.definitions if m not in keep]:
            self.remove(mid)
        for definition in definitions:
            self.upsert(definition)

    def _schedule(self, mid: int, now: float) -> None:
        interval = float(self.definitions[mid]["interval"])
        gen = self._gen.get(mid, 0) + 1
        self._gen[mid] = gen
        heapq.heappush(self._heap, (next_due(mid, interval, now), mid, gen))
        self._wake.set()

    # -- running ---------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.create_task(self._tick_loop(), name="probe-scheduler")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _tick_loop(self) -> None:
        while True:
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                due, mid, gen = heapq.heappop(self._heap)
                if self._gen.get(mid) != gen:
                    continue  # removed or rescheduled
                interval = float(self.definitions[mid]["interval"])
                nxt = due + interval
                if nxt <= now:
                    # The process was stopped (or starved) for a whole interval: run once, not a burst.
                    self.skipped_late += int((now - due) // interval)
                    nxt = next_due(mid, interval, now)
                heapq.heappush(self._heap, (nxt, mid, gen))
                if mid in self._running:
                    self.skipped_overlap += 1
                    continue
                self._launch(mid, due)
            self._wake.clear()
            delay = self._heap[0][0] - self._clock() if self._heap else 3600.0
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), min(delay, 3600.0))
                except TimeoutError:
                    pass

    def _launch(self, mid: int, due: float) -> None:
        self._running.add(mid)
        task = asyncio.create_task(self._one(mid, due))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, mid: int, due: float) -> None:
        try:
            async with self._sem:
                definition = self.definitions.get(mid)
                if definition is None:
                    return  # removed while waiting for a slot
                lag_ms = max(0.0, (self._clock() - due) * 1000.0)
                mono = time.monotonic()
                self._lags.append((mono, lag_ms))
                while self._lags[0][0] < mono - LAG_KEEP:
                    self._lags.popleft()
                self.started += 1
                await self._run(definition, due)
        except Exception:
            log.exception("check of monitor %s failed unexpectedly", mid)
        finally:
            self._running.discard(mid)

    # -- figures ---------------------------------------------------------------------

    def lag_p50(self, window: float) -> float | None:
        """Median start lag (ms) over the last ``window`` seconds (None: no start in it)."""
        cutoff = time.monotonic() - window
        recent = [lag for at, lag in self._lags if at >= cutoff]
        return round(statistics.median(recent), 2) if recent else None

    def lags(self) -> list[float]:
        return [lag for _, lag in self._lags]

    @property
    def in_flight(self) -> int:
        return len(self._running)

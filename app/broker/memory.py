"""In-process broker: the embedded default when no ``REDIS_URL`` is configured.

Everything lives in this process: a seq counter, a bounded ring buffer of recent
frames and the listeners of each topic. ``publish`` delivers synchronously, so
when it returns every local listener has the frame.

Nothing survives a restart, so a topic's seq does not start at 0: it starts at
a per-process base above every seq an earlier process could have reached (see
:func:`seq_base`). A client resuming with a ``since`` from before the restart
then holds a seq below this process's history (or above its current seq) and
is answered ``recovered=False`` instead of being told it missed nothing.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from app.broker.base import Broker, HistoryResult, Listener, ListenerRegistry
from app.protocol import encode_event

#: 2024-01-01T00:00:00Z in ms: counting from here instead of 1970 keeps seqs small longer.
_EPOCH_MS = 1_704_067_200_000
#: Seqs a process may use per millisecond it lived before its successor starts above them.
_SEQS_PER_MS = 4096


def seq_base(now: float | None = None) -> int:
    """The seq every topic of a process started at ``now`` (default: the wall clock) begins at.

    ``ms since 2024 × 4096``: a process that started ``d`` ms before this one had
    a base ``4096·d`` lower, so every seq it reached is below this base unless it
    published more than 4096 events per millisecond of its life on one topic
    (4 million a second, far beyond one process). The result stays below 2**53
    (exact in JavaScript numbers, so browser clients can compare seqs) until
    about 2093: 2**53 / 4096 ms is 69.7 years. It assumes the wall clock does
    not go backwards between a process and the next.
    """
    ms = int((time.time() if now is None else now) * 1000) - _EPOCH_MS
    return max(ms, 0) * _SEQS_PER_MS


@dataclass(slots=True)
class _Topic:
    #: The newest seq; ``seq_base`` until this process publishes on the topic.
    seq: int
    #: ``(seq, monotonic time, frame)``, oldest first; bounded by ``history_size``.
    history: deque[tuple[int, float, str]] = field(default_factory=deque)


class MemoryBroker(Broker):
    """Broadcast within one process, with per-topic history bounded by size and age."""

    def __init__(self, history_size: int = 300, history_ttl: float = 600.0) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1; use 1 to keep only the newest event.")
        if history_ttl <= 0:
            raise ValueError("history_ttl must be a positive number of seconds.")
        self.history_size = history_size
        self.history_ttl = history_ttl
        #: Every topic's seq starts here; the first event of a topic is ``seq_base + 1``.
        self.seq_base = seq_base()
        self._topics: dict[str, _Topic] = {}
        self._listeners = ListenerRegistry()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._listeners.clear()

    async def publish(self, topic: str, topic_name: str, pkg_id: int, data: Any) -> int:
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = _Topic(self.seq_base, deque(maxlen=self.history_size))
        state.seq += 1
        seq = state.seq
        frame = encode_event(topic_name, pkg_id, seq, data)
        now = time.monotonic()
        state.history.append((seq, now, frame))
        self._expire(state, now)
        self._listeners.deliver(topic, seq, frame)
        return seq

    def add_listener(self, topic: str, listener: Listener) -> None:
        self._listeners.add(topic, listener)

    def remove_listener(self, topic: str, listener: Listener) -> None:
        self._listeners.discard(topic, listener)

    async def history(self, topic: str, since: int) -> HistoryResult:
        state = self._topics.get(topic)
        current = state.seq if state else self.seq_base
        if since == current:
            return HistoryResult(events=[], recovered=True, current_seq=current)
        if state is None or since > current:
            # The client holds a seq this sequence never reached, or one from before
            # this process started (below seq_base): it cannot trust its state, so
            # it must reload.
            return HistoryResult(events=[], recovered=False, current_seq=current)
        self._expire(state, time.monotonic())
        events = [(seq, frame) for seq, _, frame in state.history if seq > since]
        # A since below seq_base never matches: this process's first event is seq_base + 1.
        recovered = bool(events) and events[0][0] == since + 1
        return HistoryResult(events=events, recovered=recovered, current_seq=current)

    def _expire(self, state: _Topic, now: float) -> None:
        cutoff = now - self.history_ttl
        while state.history and state.history[0][1] < cutoff:
            state.history.popleft()

    def listener_count(self, topic: str) -> int:
        """How many local listeners ``topic`` has (diagnostics and tests)."""
        return len(self._listeners.get(topic, ()))

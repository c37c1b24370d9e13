"""In-process broker: the embedded default when no ``REDIS_URL`` is configured.

Everything lives in this process: a seq counter, a bounded ring buffer of recent
frames and the listeners of each topic. ``publish`` delivers synchronously, so
when it returns every local listener has the frame.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from app.broker.base import Broker, HistoryResult, Listener, ListenerRegistry, encode_event


@dataclass(slots=True)
class _Topic:
    seq: int = 0
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
        self._topics: dict[str, _Topic] = {}
        self._listeners = ListenerRegistry()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._listeners.clear()

    async def publish(self, topic: str, topic_name: str, pkg_id: int, data: Any) -> int:
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = _Topic(history=deque(maxlen=self.history_size))
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
        current = state.seq if state else 0
        if since == current:
            return HistoryResult(events=[], recovered=True, current_seq=current)
        if state is None or since > current:
            # The client holds a seq this sequence never reached (e.g. the process
            # restarted): it cannot trust its state, so it must reload.
            return HistoryResult(events=[], recovered=False, current_seq=current)
        self._expire(state, time.monotonic())
        events = [(seq, frame) for seq, _, frame in state.history if seq > since]
        recovered = bool(events) and events[0][0] == since + 1
        return HistoryResult(events=events, recovered=recovered, current_seq=current)

    def _expire(self, state: _Topic, now: float) -> None:
        cutoff = now - self.history_ttl
        while state.history and state.history[0][1] < cutoff:
            state.history.popleft()

    def listener_count(self, topic: str) -> int:
        """How many local listeners ``topic`` has (diagnostics and tests)."""
        return len(self._listeners.get(topic, ()))

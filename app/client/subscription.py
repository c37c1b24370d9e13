"""Subscriptions: events per topic, deduplicated by ``seq``, with recovery markers.

A :class:`Subscription` is what :meth:`WatchpostClient.subscribe` returns. The
client's reader task feeds it frames in arrival order (events, and the answers
to the SUBSCRIBE requests it sends on every (re)connect); the consumer pulls
:class:`Event` and :class:`Resync` items from it with ``async for``.

Why dedupe happens on the consumer side: ``last_seq`` only advances for items
the application has actually received, so the ``since`` sent on a reconnect
asks for exactly what the application has not seen; anything replayed that is
still sitting in the queue is dropped when it comes round again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from app.client.errors import RateLimited, error_from_response

if TYPE_CHECKING:
    from app.client.client import WatchpostClient

log = logging.getLogger("app.client")


@dataclass(frozen=True, slots=True)
class Event:
    """One server event. ``seq`` is strictly increasing per topic."""

    topic: str
    seq: int
    pkg_id: int
    data: Any


@dataclass(frozen=True, slots=True)
class Resync:
    """Events of ``topic`` were missed and cannot be replayed: reload that state now.

    After reloading (e.g. STATUS_SUMMARY, INCIDENT_LIST) keep iterating; events
    that follow have ``seq > current_seq``. ``reason`` is ``"not_recovered"``
    (the server's history no longer covers the gap, e.g. after a long outage or
    a server restart without Redis), ``"gap"`` (a seq was skipped on a live
    connection) or ``"overflow"`` (this iterator fell more than ``max_queue``
    events behind and events were dropped locally).
    """

    topic: str
    current_seq: int
    reason: Literal["not_recovered", "gap", "overflow"] = "not_recovered"


@dataclass(frozen=True, slots=True)
class _Queued:
    """An event plus the connection generation it arrived on."""

    event: Event
    gen: int


@dataclass(frozen=True, slots=True)
class _Ack:
    """The server's answer to one SUBSCRIBE, in frame order relative to events."""

    gen: int
    #: topic -> (current_seq, recovered)
    topics: dict[str, tuple[int, bool]]
    #: topics that were sent with a ``since`` in that request
    with_since: frozenset[str]
    #: the ``since`` values that were sent
    since: dict[str, int]


@dataclass(frozen=True, slots=True)
class _Stop:
    error: BaseException | None


_Item = _Queued | _Ack | _Stop


def parse_subscribe_answer(data: Any, topics: Iterable[str]) -> dict[str, tuple[int, bool]]:
    """Per-topic ``(current_seq, recovered)`` from a SUBSCRIBE answer.

    Accepts ``{"topics": {name: {...}}}``, ``{name: {...}}`` and
    ``{"topics": [{"topic": name, ...}]}``, with the seq under ``seq`` or
    ``current_seq``; a topic missing from the answer counts as recovered at 0.
    """
    entries: dict[str, Any] = {}
    body = data.get("topics", data) if isinstance(data, dict) else data
    if isinstance(body, dict):
        entries = {k: v for k, v in body.items() if isinstance(v, dict)}
    elif isinstance(body, list):
        entries = {e["topic"]: e for e in body if isinstance(e, dict) and isinstance(e.get("topic"), str)}
    out: dict[str, tuple[int, bool]] = {}
    for topic in topics:
        entry = entries.get(topic, {})
        seq = entry.get("current_seq", entry.get("seq", 0))
        out[topic] = (int(seq) if isinstance(seq, int) else 0, bool(entry.get("recovered", True)))
    return out


class Subscription:
    """An async iterator of :class:`Event` and :class:`Resync` for a set of topics.

    Use ``async with client.subscribe([...]) as sub: async for item in sub`` so
    the topics are unsubscribed on exit, or iterate directly and call
    :meth:`close`. Iteration ends when the subscription or the client is closed
    and raises when the subscription can no longer continue (the server refused
    a topic, authentication failed for good, or the connection dropped with
    ``reconnect=False``).
    """

    def __init__(
        self,
        client: WatchpostClient,
        topics: Iterable[str],
        *,
        since: dict[str, int] | None = None,
        max_queue: int = 10_000,
    ) -> None:
        self.topics: tuple[str, ...] = tuple(dict.fromkeys(topics))
        if not self.topics:
            raise ValueError("subscribe() needs at least one topic, e.g. ['monitors']")
        self._client = client
        #: Newest seq the consumer has received per topic (None: not known yet).
        self.last_seq: dict[str, int | None] = {t: None for t in self.topics}
        for topic, seq in (since or {}).items():
            if topic in self.last_seq:
                self.last_seq[topic] = seq
        self._max_queue = max_queue
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        #: Items produced from one queue entry but not yet handed out (a Resync before its event).
        self._ready: deque[Event | Resync] = deque()
        #: topic -> newest seq dropped because the queue was full.
        self._overflow: dict[str, int] = {}
        #: Current seq from answers to fresh SUBSCRIBEs not consumed yet: the ``since`` to use if
        #: the connection drops before the consumer gets to them (else those events would be lost).
        self._floor: dict[str, int] = {}
        #: Highest seq handed out per topic on the current connection generation.
        self._gen_max: dict[str, tuple[int, int]] = {}
        #: True once the server confirmed a SUBSCRIBE; ``_settled`` fires on that or on stop.
        self._active = False
        self._settled = asyncio.Event()
        self._stopped = False
        self._error: BaseException | None = None

    # -- consumer side -------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event | Resync:
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._overflow:
                topic, seq = self._overflow.popitem()
                self.last_seq[topic] = max(self.last_seq[topic] or 0, seq)
                return Resync(topic, seq, "overflow")
            item = await self._queue.get()
            if isinstance(item, _Stop):
                self._queue.put_nowait(item)  # keep ending for any later __anext__
                if item.error is not None:
                    raise item.error
                raise StopAsyncIteration
            if isinstance(item, _Ack):
                self._apply_ack(item)
            else:
                self._apply_event(item)

    async def __aenter__(self) -> Subscription:
        await self.wait_active()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def wait_active(self, timeout: float | None = None) -> None:
        """Wait until the server has confirmed the subscription (first SUBSCRIBE answer).

        Call this before triggering events you expect to see. Raises the
        server's error if it refused a topic, ``TimeoutError`` after ``timeout``.
        """
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"the server did not confirm the subscription to {list(self.topics)}"
            ) from None
        if self._error is not None:
            raise self._error
        if not self._active:
            raise RuntimeError("the subscription was closed before the server confirmed it")

    async def close(self) -> None:
        """Unsubscribe (topics no other subscription of this client still uses) and end iteration."""
        if self._stopped:
            return
        self._stop(None)
        await self._client._release(self)

    def _apply_event(self, item: _Queued) -> None:
        ev = item.event
        last = self.last_seq.get(ev.topic)
        if last is not None and ev.seq <= last:
            return  # already handed out (replayed, or seen through another subscription's replay)
        if last is not None and ev.seq > last + 1:
            log.warning(
                "events %d..%d of topic %r were skipped; asking for a resync", last + 1, ev.seq - 1, ev.topic
            )
            self._ready.append(Resync(ev.topic, ev.seq - 1, "gap"))
        self.last_seq[ev.topic] = ev.seq
        prev = self._gen_max.get(ev.topic)
        if prev is None or prev[0] != item.gen or prev[1] < ev.seq:
            self._gen_max[ev.topic] = (item.gen, ev.seq)
        self._ready.append(ev)

    def _apply_ack(self, ack: _Ack) -> None:
        for topic, (current, recovered) in ack.topics.items():
            if topic not in self.last_seq:
                continue
            sent_since = ack.since.get(topic)
            if sent_since is not None and current < sent_since:
                # The server's sequence restarted below what we saw (history lost, e.g. a restart
                # without Redis): whatever it claims, the old numbering is meaningless now.
                recovered = False
            gen_max = self._gen_max.get(topic)
            seen_here = gen_max[1] if gen_max is not None and gen_max[0] == ack.gen else 0
            if topic not in ack.with_since:
                # Fresh subscription: continue after the current seq (or after events already seen).
                self.last_seq[topic] = max(self.last_seq[topic] or 0, current)
            elif not recovered:
                # The server's word replaces our numbering; events already handed out on this
                # connection are still counted so they are not handed out again.
                self.last_seq[topic] = max(current, seen_here)
                self._ready.append(Resync(topic, current, "not_recovered"))

    # -- producer side (called by the client's reader, synchronously, in frame order) ---

    def _deliver(self, event: Event, gen: int) -> None:
        if self._stopped:
            return
        if event.topic in self._overflow or self._queue.qsize() >= self._max_queue:
            self._overflow[event.topic] = max(self._overflow.get(event.topic, 0), event.seq)
            return
        self._queue.put_nowait(_Queued(event, gen))

    def _subscribe_request(self) -> tuple[dict[str, Any], dict[str, int]]:
        """The SUBSCRIBE data for a (re)connect: every topic, ``since`` where a seq is known."""
        # Queued-but-unconsumed events count as unseen: the replay re-sends them and the
        # consumer drops whichever copy comes second.
        since = {t: s for t, s in self.last_seq.items() if s is not None}
        for topic, floor in self._floor.items():
            since.setdefault(topic, floor)
        data: dict[str, Any] = {"topics": list(self.topics)}
        if since:
            data["since"] = since
        return data, since

    def _on_subscribe_answer(self, frame: dict[str, Any], gen: int, since: dict[str, int]) -> None:
        if self._stopped:
            return
        if frame.get("status_code") != 0:
            exc = error_from_response(frame)
            if isinstance(exc, RateLimited):
                delay = (exc.retry_after_ms or 1000) / 1000
                log.warning("SUBSCRIBE was rate limited; retrying in %.1f s", delay)
                self._client._retry_subscribe(self, delay)
                return
            self._fail(exc)
            return
        topics = parse_subscribe_answer(frame.get("data"), self.topics)
        for topic, (current, _) in topics.items():
            if topic not in since:
                self._floor[topic] = current
        self._queue.put_nowait(_Ack(gen, topics, frozenset(since), since))
        self._active = True
        self._settled.set()

    def _fail(self, exc: BaseException) -> None:
        """End iteration with ``exc`` (after the items already queued)."""
        if self._stopped:
            return
        self._error = exc
        self._stop(exc)
        self._client._forget(self)

    def _stop(self, error: BaseException | None) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._settled.set()
        self._queue.put_nowait(_Stop(error))

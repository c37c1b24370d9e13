"""The broker contract: broadcast plus bounded per-topic history.

A *topic* here is the full, tenant-scoped key (``t<tenant_id>:monitors``); the
websocket layer maps tenant-relative names to these keys, so a broker never
needs to know about tenants.

Every published event gets a per-topic, strictly increasing ``seq`` assigned
atomically by the backend, so two instances publishing on the same topic still
produce one gap-free sequence. Redis starts a topic at 1; the in-process
backend starts above every seq of the previous process (its history does not
survive a restart), so do not assume any particular first seq. The backend encodes the event
frame once (:func:`app.protocol.encode_event`) and hands every local subscriber the same ``str``.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Called once per delivered event with the topic and the encoded frame
#: (a JSON text). Must not block: subscribers enqueue and return.
Listener = Callable[[str, int, str], None]


@dataclass(frozen=True, slots=True)
class HistoryResult:
    """What :meth:`Broker.history` found for one topic."""

    #: ``(seq, frame)`` pairs with ``seq > since``, oldest first.
    events: list[tuple[int, str]]
    #: False when the history no longer covers ``since + 1`` (events were lost).
    recovered: bool
    #: The topic's newest seq (where the sequence starts when nothing was published yet:
    #: 0 on Redis, the process's base in the in-process broker).
    current_seq: int


log = logging.getLogger("watchpost.broker")


class ListenerRegistry(dict[str, list[Listener]]):
    """Local listeners per topic, shared by every backend.

    ``add`` / ``discard`` say when a topic gains its first or loses its last
    listener (the Redis backend subscribes / unsubscribes then).
    """

    def add(self, topic: str, listener: Listener) -> bool:
        """Register; True when this is the topic's first listener."""
        listeners = self.setdefault(topic, [])
        listeners.append(listener)
        return len(listeners) == 1

    def discard(self, topic: str, listener: Listener) -> bool:
        """Unregister if present; True when the topic has no listener left."""
        listeners = self.get(topic)
        if not listeners or listener not in listeners:
            return False
        listeners.remove(listener)
        if listeners:
            return False
        del self[topic]
        return True

    def deliver(self, topic: str, seq: int, frame: str) -> None:
        """Call every listener of ``topic``; one that raises does not stop the others."""
        # Copy: a listener may remove itself (or others) while we iterate.
        for listener in list(self.get(topic, ())):
            try:
                listener(topic, seq, frame)
            except Exception:
                log.exception(
                    "Listener %r failed on topic %s seq %d; other listeners still get it.",
                    listener,
                    topic,
                    seq,
                )


class Broker(abc.ABC):
    """Broadcast with history. One instance per app; see ``app.broker.create_broker``."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect / start background tasks. Called once from the app lifespan."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop background tasks and release connections. Idempotent."""

    @abc.abstractmethod
    async def publish(self, topic: str, topic_name: str, pkg_id: int, data: Any) -> int:
        """Assign the next seq, store the event in history, deliver it everywhere.

        ``topic`` is the scoped key, ``topic_name`` the tenant-relative name put
        into the frame. Returns the seq. Raises ``BrokerUnavailable`` when the
        backend cannot be reached.
        """

    @abc.abstractmethod
    def add_listener(self, topic: str, listener: Listener) -> None:
        """Deliver future events of ``topic`` to ``listener`` (this instance only).

        The first listener for a topic makes this instance start receiving it
        (e.g. a Redis SUBSCRIBE); instances without listeners do no work for it.
        """

    @abc.abstractmethod
    def remove_listener(self, topic: str, listener: Listener) -> None:
        """Undo :meth:`add_listener`; the last one stops receiving the topic."""

    @abc.abstractmethod
    async def history(self, topic: str, since: int) -> HistoryResult:
        """Events with ``seq > since`` still held for ``topic``."""

    async def wait_subscribed(self, topic: str) -> None:
        """Wait until events of ``topic`` published from now on reach this instance.

        Call after :meth:`add_listener` and before :meth:`history` when replaying
        a ``since``: then replay plus live delivery has no gap (drop live events
        with ``seq <=`` the last replayed one to avoid duplicates). Raises
        ``BrokerUnavailable`` when the subscription cannot be confirmed in time.
        In-process backends deliver at once, so the default returns immediately.
        """
        return None

    async def ready(self) -> bool:
        """True when the backend is reachable (readiness probe)."""
        return True


class BrokerUnavailable(Exception):
    """The broker backend (Redis) cannot be reached."""

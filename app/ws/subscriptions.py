"""SUBSCRIBE / UNSUBSCRIBE for one connection, with gap-free recovery.

Switching from history to live without gaps or duplicates: the listener is
attached first and buffers; history is read; the replay is queued; then the
buffer is flushed skipping every seq already sent; from then on events go
straight to the send queue. Each subscription remembers the last seq it sent.
"""

from __future__ import annotations

from typing import Any

from app import metrics
from app.broker.base import Broker, BrokerUnavailable
from app.errors import InvalidData, PermissionDenied, Unavailable
from app.events import scoped, topic_role
from app.rbac import Policy
from app.ws.connection import Connection

#: ``since`` larger than any seq: asks the broker only for the current seq.
_CURRENT = 2**62


class Subscription:
    __slots__ = ("buffer", "conn", "key", "last_seq", "name")

    def __init__(self, conn: Connection, key: str, name: str) -> None:
        self.conn = conn
        self.key = key
        self.name = name
        self.last_seq = 0
        #: Live events that arrived while history was being read.
        self.buffer: list[tuple[int, str]] | None = []

    def __call__(self, _topic: str, seq: int, frame: str) -> None:
        if self.buffer is not None:
            self.buffer.append((seq, frame))
            return
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        if self.conn.enqueue(frame):
            metrics.EVENTS_DELIVERED.inc()

    def go_live(self, after: int) -> None:
        self.last_seq = after
        buffered, self.buffer = self.buffer or [], None
        for seq, frame in buffered:
            self(self.key, seq, frame)


def check_topics(conn: Connection, policy: Policy, names: list[str]) -> None:
    problems = []
    for name in names:
        role = topic_role(name)
        if role is None:
            problems.append({"path": name, "msg": f"unknown topic {name!r}"})
        elif not policy.role_at_least(conn.identity.role, role):
            raise PermissionDenied(f"topic {name!r} needs role {role!r}")
    if problems:
        raise InvalidData(problems[0]["msg"], errors=problems)


async def subscribe(
    conn: Connection, broker: Broker, policy: Policy, names: list[str], since: dict[str, int], max_topics: int
) -> dict[str, Any]:
    tenant_id = conn.identity.tenant_id
    if tenant_id is None:
        raise PermissionDenied("this connection has no tenant; reconnect with ?tenant=<slug>")
    check_topics(conn, policy, names)
    result: dict[str, Any] = {}
    # One SUBSCRIBE/UNSUBSCRIBE at a time per connection, so two requests never swap
    # the same topic's listener under each other nor pass the topic limit together.
    async with conn.sub_lock:
        new = [n for n in names if scoped(tenant_id, n) not in conn.subscriptions]
        if len(conn.subscriptions) + len(new) > max_topics:
            raise InvalidData(
                f"too many topics: at most {max_topics} per connection (WS_MAX_TOPICS); unsubscribe some"
            )
        for name in dict.fromkeys(names):
            result[name] = await _subscribe_one(conn, broker, tenant_id, name, since.get(name))
    return {"topics": result}


async def _subscribe_one(
    conn: Connection, broker: Broker, tenant_id: int, name: str, wanted: int | None
) -> dict[str, Any]:
    key = scoped(tenant_id, name)
    old: Subscription | None = conn.subscriptions.get(key)
    if old is not None:
        old.buffer = []  # paused: the new subscription takes over if it succeeds
    sub = Subscription(conn, key, name)
    broker.add_listener(key, sub)
    conn.subscriptions[key] = sub  # registered before awaiting, so a disconnect drops it
    try:
        await broker.wait_subscribed(key)
        hist = await broker.history(key, _CURRENT if wanted is None else wanted)
    except BrokerUnavailable:
        broker.remove_listener(key, sub)
        if old is not None:
            conn.subscriptions[key] = old
            old.go_live(old.last_seq)  # resume without losing what it buffered meanwhile
        else:
            conn.subscriptions.pop(key, None)
        raise Unavailable("the event broker is unavailable; retry the subscription shortly") from None
    if old is not None:
        broker.remove_listener(key, old)
    replayed = 0
    if wanted is not None and hist.recovered:
        last = wanted
        for seq, frame in hist.events:
            if seq > last and conn.enqueue(frame):
                last = seq
                replayed += 1
        sub.go_live(max(last, min(wanted, hist.current_seq)))
        return {"seq": hist.current_seq, "recovered": True, "replayed": replayed}
    # No ``since`` (nothing to recover from) or history no longer covers the gap:
    # the client loads current state and goes on from ``seq``.
    sub.go_live(hist.current_seq)
    return {"seq": hist.current_seq, "recovered": False, "replayed": 0}


async def unsubscribe(conn: Connection, broker: Broker, names: list[str]) -> dict[str, Any]:
    tenant_id = conn.identity.tenant_id
    removed = []
    async with conn.sub_lock:  # after any SUBSCRIBE still in progress, in request order
        for name in names:
            if tenant_id is None:
                break
            key = scoped(tenant_id, name)
            sub = conn.subscriptions.pop(key, None)
            if sub is not None:
                broker.remove_listener(key, sub)
                removed.append(name)
    return {"unsubscribed": removed}


def drop_all(conn: Connection, broker: Broker) -> None:
    for key, sub in list(conn.subscriptions.items()):
        broker.remove_listener(key, sub)
    conn.subscriptions.clear()

"""SUBSCRIBE / UNSUBSCRIBE for one connection, with gap-free recovery.

Switching from history to live without gaps or duplicates: the listener is
attached first and buffers; history is read; the replay is queued; then the
buffer is flushed skipping every seq already sent; from then on events go
straight to the send queue. Each subscription remembers the last seq it sent.

A SUBSCRIBE of several topics is all-or-nothing: every topic is attached and
its history read first, and only then do they all go live; if one fails
(broker unavailable), the others are undone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app import metrics
from app.auth.identity import PAGE_VIEWER
from app.broker.base import Broker, BrokerUnavailable, HistoryResult
from app.errors import InvalidData, PermissionDenied, Unavailable
from app.events import scoped
from app.rbac import Policy, page_topic

if TYPE_CHECKING:
    from app.ws.connection import Connection

#: ``since`` larger than any seq: asks the broker only for the current seq.
_CURRENT = 2**62


class Subscription:
    __slots__ = ("buffer", "conn", "internal", "key", "last_seq", "name")

    def __init__(self, conn: Connection, key: str, name: str, *, internal: bool = False) -> None:
        self.conn = conn
        self.key = key
        self.name = name
        #: Attached by the server for this connection (a probe's ``probe.<id>``), not by
        #: SUBSCRIBE: no role reads it, so a role change never drops it.
        self.internal = internal
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
    if conn.identity.kind == PAGE_VIEWER:
        # An anonymous status-page socket reads its page's topic and nothing else.
        own = page_topic(conn.identity.page_id or 0)
        for name in names:
            if name != own:
                raise PermissionDenied(f"a status page connection may only subscribe to {own!r}")
        return
    problems = []
    for name in names:
        role = policy.topic_role(name)
        if role is None:
            problems.append({"path": name, "msg": f"unknown topic {name!r}"})
        elif not policy.role_at_least(conn.identity.role, role):
            raise PermissionDenied(f"topic {name!r} needs role {role!r}")
    if problems:
        raise InvalidData(problems[0]["msg"], errors=problems)


async def subscribe(
    conn: Connection, broker: Broker, policy: Policy, names: list[str], since: dict[str, int], max_topics: int
) -> dict[str, Any]:
    """Subscribe every topic of one request, or none of them.

    Each topic is prepared in turn (listener attached and buffering, history
    read); only when all are ready are they switched to live. If one fails, the
    ones prepared before it are undone, so the connection's subscriptions are
    exactly what they were before the request.
    """
    tenant_id = conn.identity.tenant_id
    if tenant_id is None:
        raise PermissionDenied("this connection has no tenant; reconnect with ?tenant=<slug>")
    # One SUBSCRIBE/UNSUBSCRIBE/AUTH_REFRESH at a time per connection, so two requests
    # never swap the same topic's listener under each other nor pass the topic limit
    # together, and the role is checked as it stands when the topics are attached.
    async with conn.sub_lock:
        check_topics(conn, policy, names)
        new = [n for n in names if scoped(tenant_id, n) not in conn.subscriptions]
        if len(conn.subscriptions) + len(new) > max_topics:
            raise InvalidData(
                f"too many topics: at most {max_topics} per connection (WS_MAX_TOPICS); unsubscribe some"
            )
        pending: list[_Pending] = []
        try:
            for name in dict.fromkeys(names):
                pending.append(_Pending(conn, broker, tenant_id, name, since.get(name)))
                await pending[-1].prepare()
        except BaseException as exc:
            for step in reversed(pending):
                step.undo()
            if isinstance(exc, BrokerUnavailable):
                raise Unavailable(
                    "the event broker is unavailable; retry the subscription shortly "
                    "(no topic of this request was subscribed)"
                ) from None
            raise
        # Every topic is ready: go live without awaiting in between.
        return {"topics": {step.sub.name: step.commit() for step in pending}}


class _Pending:
    """One topic of a SUBSCRIBE between being attached and going live."""

    __slots__ = ("broker", "conn", "hist", "key", "old", "sub", "wanted")

    def __init__(
        self,
        conn: Connection,
        broker: Broker,
        tenant_id: int,
        name: str,
        wanted: int | None,
        *,
        internal: bool = False,
    ) -> None:
        self.conn = conn
        self.broker = broker
        self.wanted = wanted
        self.key = key = scoped(tenant_id, name)
        self.old: Subscription | None = conn.subscriptions.get(key)
        if self.old is not None:
            self.old.buffer = []  # paused: the new subscription takes over if the request succeeds
        self.sub = Subscription(conn, key, name, internal=internal)
        broker.add_listener(key, self.sub)
        conn.subscriptions[key] = self.sub  # registered before awaiting, so a disconnect drops it
        self.hist: HistoryResult | None = None

    async def prepare(self) -> None:
        await self.broker.wait_subscribed(self.key)
        self.hist = await self.broker.history(self.key, _CURRENT if self.wanted is None else self.wanted)

    def undo(self) -> None:
        """Put the topic back as it was before the request."""
        self.broker.remove_listener(self.key, self.sub)
        if self.conn.subscriptions.get(self.key) is self.sub:
            if self.old is not None:
                self.conn.subscriptions[self.key] = self.old
            else:
                del self.conn.subscriptions[self.key]
        if self.old is not None:
            self.old.go_live(self.old.last_seq)  # resume without losing what it buffered meanwhile

    def commit(self) -> dict[str, Any]:
        hist, sub, wanted = self.hist, self.sub, self.wanted
        assert hist is not None
        if self.old is not None:
            self.broker.remove_listener(self.key, self.old)
        if wanted is not None and hist.recovered:
            last = wanted
            replayed = 0
            for seq, frame in hist.events:
                if seq > last and self.conn.enqueue(frame):
                    last = seq
                    replayed += 1
            sub.go_live(max(last, min(wanted, hist.current_seq)))
            return {"seq": hist.current_seq, "recovered": True, "replayed": replayed}
        # No ``since`` (nothing to recover from) or history no longer covers the gap:
        # the client loads current state and goes on from ``seq``.
        sub.go_live(hist.current_seq)
        return {"seq": hist.current_seq, "recovered": False, "replayed": 0}


async def attach_internal(conn: Connection, broker: Broker, name: str, since: int | None) -> dict[str, Any]:
    """Attach one server-chosen topic (a probe's ``probe.<location id>``) with the same
    gap-free recovery as SUBSCRIBE, without its topic RBAC: the topic has no entry in
    actions.json, so no SUBSCRIBE can reach it, and the handler calling this decided
    that this connection reads it. Answers like one SUBSCRIBE topic."""
    tenant_id = conn.identity.tenant_id
    if tenant_id is None:
        raise PermissionDenied("this connection has no tenant; reconnect with ?tenant=<slug>")
    async with conn.sub_lock:
        step = _Pending(conn, broker, tenant_id, name, since, internal=True)
        try:
            await step.prepare()
        except BaseException as exc:
            step.undo()
            if isinstance(exc, BrokerUnavailable):
                raise Unavailable("the event broker is unavailable; retry shortly") from None
            raise
        return step.commit()


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


async def drop_unpermitted(conn: Connection, broker: Broker, policy: Policy) -> list[str]:
    """Unsubscribe every topic the connection's current role may no longer read.

    Called by ``Connection.apply_identity`` after the identity was swapped (a
    refreshed token's role or a member's new role can be lower); returns the
    dropped topic names, in subscription order.
    """
    dropped = []
    async with conn.sub_lock:  # after any SUBSCRIBE in progress, which checked the old role
        for key, sub in list(conn.subscriptions.items()):
            if sub.internal:
                continue
            role = policy.topic_role(sub.name)
            if role is None or not policy.role_at_least(conn.identity.role, role):
                del conn.subscriptions[key]
                broker.remove_listener(key, sub)
                dropped.append(sub.name)
    return dropped


def drop_all(conn: Connection, broker: Broker) -> None:
    for key, sub in list(conn.subscriptions.items()):
        broker.remove_listener(key, sub)
    conn.subscriptions.clear()

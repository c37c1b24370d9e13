"""One WebSocket connection: bounded send queue, writer task, auth timers, its session.

Responses and events share one queue (so they leave in the order they were
made), bounded by message count (``WS_SEND_QUEUE_MAX``) and bytes
(``WS_SEND_QUEUE_BYTES``). ``enqueue`` never blocks or awaits — a broadcast to
5,000 connections is 5,000 appends — and a connection whose queue overflows is
closed with 4009 without slowing anyone else.

Events and responses are held to the byte bound separately: waiting events
may not exceed it, and neither may waiting responses, except that a response
is always taken while no other response waits. A single answer larger than
the bound is one large answer, not a slow consumer; a client that keeps
asking without reading, or stops reading while events pile up, still is.

A connection is also the :class:`app.session.Session` its requests' handlers
see: its identity, :meth:`Connection.apply_identity` (the one way an identity
is replaced, for AUTH_REFRESH and for a role change from the hub) and the
subscriptions of ``app.ws.subscriptions``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from app import metrics
from app.auth.identity import Identity
from app.protocol import CloseCode, encode_auth_expiring, encode_role_changed
from app.ws import subscriptions as subs

if TYPE_CHECKING:
    from app.broker.base import Broker
    from app.rbac import Policy
    from app.settings import Settings

log = logging.getLogger("watchpost.ws")

_ids = itertools.count(1)
#: Makes connection ids unique across instances: the Redis limiter registers them in one
#: per-user set, where two instances' "c1" would otherwise count as one connection.
_INSTANCE = secrets.token_hex(3)


class Connection:
    # Slots, and nothing made before it is needed: an idle connection (the common case: a
    # dashboard waiting for events) holds no send queue, no writer task, no flush event and
    # one expiry timer (make bench, idle scenario; docs/bench/idle.md).
    __slots__ = (
        "_auth_timer",
        "_broker",
        "_close_hooks",
        "_closing",
        "_deadline_sweep",
        "_flushed",
        "_loop",
        "_policy",
        "_queue",
        "_queued_bytes",
        "_response_bytes",
        "_started",
        "_writer",
        "client_addr",
        "closed",
        "conn_id",
        "draining",
        "identity",
        "in_flight",
        "max_bytes",
        "max_messages",
        "settings",
        "sub_lock",
        "subscriptions",
        "tasks",
        "timed_out",
        "ws",
    )

    def __init__(
        self, ws: WebSocket, identity: Identity, settings: Settings, broker: Broker, policy: Policy
    ) -> None:
        self.ws = ws
        self.identity = identity
        self.settings = settings
        self._broker = broker
        self._policy = policy
        self.conn_id = f"c{next(_ids)}.{_INSTANCE}"
        client = ws.client
        self.client_addr = client.host if client else None
        self.max_messages = settings.ws_send_queue_max
        self.max_bytes = settings.ws_send_queue_bytes
        # Made inside the endpoint's coroutine, so the loop is running. Kept because on
        # Python 3.11 every get_running_loop() (also inside current_task(), Event.wait())
        # is a getpid() system call: ~10 % of server CPU per PING on a VM (py-spy --native).
        self._loop = asyncio.get_running_loop()
        #: (frame, is a response) in sending order; None while nothing waits (made on demand).
        self._queue: deque[tuple[str | bytes, bool]] | None = None
        #: Bytes of the events and of the responses waiting in the queue.
        self._queued_bytes = 0
        self._response_bytes = 0
        #: Resolved when the queue empties; made only while someone waits (wait_flushed).
        self._flushed: asyncio.Future[None] | None = None
        #: The writer runs only while frames wait, and ends when the queue is empty.
        self._writer: asyncio.Task[None] | None = None
        self._started = False
        self.closed = False
        #: Stop taking new requests (graceful drain).
        self.draining = False
        #: Request tasks still running (awaited by drain).
        #: Request tasks still running, with their deadlines (loop time); awaited by drain.
        self.tasks: dict[asyncio.Task[None], float] = {}
        #: Tasks the deadline sweep cancelled: their handler answers TIMEOUT (made on first use).
        self.timed_out: set[asyncio.Task[None]] | None = None
        self._deadline_sweep: asyncio.TimerHandle | None = None
        self.in_flight = asyncio.Semaphore(settings.ws_max_in_flight)
        #: Scoped topic key -> Subscription (see app.ws.subscriptions).
        self.subscriptions: dict[str, Any] = {}
        #: Serialises SUBSCRIBE/UNSUBSCRIBE of this connection (see app.ws.subscriptions).
        self.sub_lock = asyncio.Lock()
        #: The next expiry step: the 904 notice, then the 4010 close (one timer at a time).
        self._auth_timer: asyncio.TimerHandle | None = None
        #: The close started by :meth:`close_soon`; :meth:`finish` lets it send its frame.
        self._closing: asyncio.Task[None] | None = None
        #: Work handlers asked for when the connection ends (:meth:`on_close`), by name.
        self._close_hooks: dict[str, Callable[[], Awaitable[None]]] | None = None

    # ----- sending
    def start(self) -> None:
        self._started = True
        if self._queue:
            self._writer = self._loop.create_task(self._write_loop())
        self.arm_auth_timers()

    def enqueue(self, frame: str | bytes, *, response: bool = False) -> bool:
        """Queue a frame for sending; False (and a 4009 close) if the queue is full.
        ``response``: the answer to one of this client's requests (see the module doc)."""
        if self.closed:
            return False
        size = len(frame)
        if response:
            over = self._response_bytes > 0 and self._response_bytes + size > self.max_bytes
        else:
            over = self._queued_bytes + size > self.max_bytes
        waiting = len(self._queue) if self._queue is not None else 0
        if over or waiting >= self.max_messages:
            metrics.WS_SLOW_CONSUMERS.inc()
            log.warning(
                "closing %s (%s): send queue overflow (%d messages, %d bytes of events, %d of responses)",
                self.conn_id,
                self.identity.username,
                waiting,
                self._queued_bytes,
                self._response_bytes,
            )
            if self._queue is not None:
                self._queue.clear()
            self._queued_bytes = self._response_bytes = 0
            self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer: send queue overflowed")
            return False
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append((frame, response))
        if response:
            self._response_bytes += size
        else:
            self._queued_bytes += size
        if self._writer is None and self._started:
            self._writer = self._loop.create_task(self._write_loop())
        return True

    async def _write_loop(self) -> None:
        """Send until the queue is empty, then end: an idle connection keeps no task, no
        coroutine frame and no wake-up future (make bench, idle scenario). Frames queued
        while it sends are sent by the same run; the next enqueue starts a new one."""
        send = self.ws.send
        try:
            while queue := self._queue:
                frame, response = queue.popleft()
                if response:
                    self._response_bytes -= len(frame)
                else:
                    self._queued_bytes -= len(frame)
                if isinstance(frame, bytes):
                    await send({"type": "websocket.send", "text": frame.decode()})
                else:
                    await send({"type": "websocket.send", "text": frame})
                metrics.WS_SENT.inc()
        except Exception:  # noqa: BLE001 - the peer went away; the reader loop notices
            self.closed = True
        finally:
            # No await between the queue found empty and these: an enqueue either came
            # before (and was sent) or comes after and starts a new writer.
            self._writer = None
            self._queue = None
            flushed, self._flushed = self._flushed, None
            if flushed is not None and not flushed.done():
                flushed.set_result(None)

    async def wait_flushed(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every queued frame was handed to the socket."""
        if not self._queue:
            return
        flushed = self._flushed
        if flushed is None:
            flushed = self._flushed = self._loop.create_future()
        await asyncio.wait({flushed}, timeout=timeout)

    # ----- closing
    def close_soon(self, code: int, reason: str = "") -> None:
        """Close from synchronous code (overflow, timers, revocation)."""
        if self.closed:
            return
        self.closed = True
        self._closing = self._loop.create_task(self._close(code, reason))

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        metrics.WS_CLOSES.labels(code=str(code)).inc()
        self.cancel_auth_timers()
        try:
            await self.ws.close(code=code, reason=reason[:120])
        except Exception:  # noqa: BLE001 - already closed by the peer
            pass

    # ----- request deadlines
    def track(self, task: asyncio.Task[None], timeout: float) -> None:
        """Run ``task`` under the handler deadline.

        One sweep timer per connection (armed only while requests run) instead of an
        ``asyncio.timeout`` per request: a per-request timer leaves a cancelled handle
        in the loop's heap for the whole deadline, which at thousands of requests a
        second costs more than the request (make bench: PING 62 -> ~50 µs). A request
        is stopped at most min(1 s, timeout) after its deadline.
        """
        loop = self._loop
        # The clock starts when the handler starts (see start_deadline): a task cancelled
        # before its first step would never reach the code that answers and frees its slot.
        self.tasks[task] = float("inf")
        task.add_done_callback(self._untrack)
        if self._deadline_sweep is None:
            self._deadline_sweep = loop.call_later(min(1.0, timeout), self._sweep, timeout)

    def start_deadline(self, timeout: float) -> None:
        """Called by the request task itself, inside the code that handles the cancel."""
        task = asyncio.current_task(self._loop)
        if task is not None and task in self.tasks:
            self.tasks[task] = self._loop.time() + timeout

    def _untrack(self, task: asyncio.Task[None]) -> None:
        self.tasks.pop(task, None)
        if self.timed_out is not None:
            self.timed_out.discard(task)
            if not self.timed_out:
                self.timed_out = None

    def was_timed_out(self, task: asyncio.Task[Any]) -> bool:
        """True when the deadline sweep cancelled ``task`` (its handler answers TIMEOUT)."""
        return self.timed_out is not None and task in self.timed_out

    def _sweep(self, timeout: float) -> None:
        self._deadline_sweep = None
        now = asyncio.get_running_loop().time()
        for task, deadline in list(self.tasks.items()):
            if deadline <= now and not self.was_timed_out(task) and not task.done():
                if self.timed_out is None:
                    self.timed_out = set()
                self.timed_out.add(task)
                task.cancel()
        if self.tasks:
            self._deadline_sweep = asyncio.get_running_loop().call_later(
                min(1.0, timeout), self._sweep, timeout
            )

    async def finish(self) -> None:
        """Called once by the endpoint after the reader loop ends."""
        self.closed = True
        if self._deadline_sweep is not None and not self.tasks:
            self._deadline_sweep.cancel()
            self._deadline_sweep = None
        self.cancel_auth_timers()
        if self._closing is not None and not self._closing.done():
            # Returning first would let the server close with 1000 instead of our code, and a
            # slow consumer's close frame waits behind everything it has not read yet: give it
            # WS_CLOSE_GRACE seconds to drain so a client that resumes reading sees 4009, not
            # a reset. Past the grace the connection is aborted.
            await asyncio.wait({self._closing}, timeout=self.settings.ws_close_grace)
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    # ----- token expiry (EVENT_AUTH_EXPIRING, then close 4010)
    def arm_auth_timers(self) -> None:
        self.cancel_auth_timers()
        expires_at = self.identity.expires_at
        if expires_at is None:
            return
        left = expires_at - time.time()
        notice_in = max(0.0, left - self.settings.auth_expiring_notice)
        self._auth_timer = self._loop.call_later(notice_in, self._send_expiring)

    def cancel_auth_timers(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None

    def _send_expiring(self) -> None:
        """The 904 notice; then the one timer left is the 4010 close at the expiry itself."""
        now = time.time()
        expires_at = self.identity.expires_at or now
        self.enqueue(encode_auth_expiring(expires_at, now))
        self._auth_timer = self._loop.call_later(max(0.0, expires_at - now), self._expired)

    def _expired(self) -> None:
        self._auth_timer = None
        self.close_soon(CloseCode.TOKEN_EXPIRED, "token expired")

    # ----- the session its handlers see (app.session.Session)
    def apply_identity(self, identity: Identity, *, announce: bool = False) -> Coroutine[Any, Any, list[str]]:
        """Replace the identity now; the returned coroutine drops the topics it may not read.

        The swap happens before this returns: a request read after it, or the next
        role change from the hub, sees the new role. The expiry timers follow a
        new expiry (a role change keeps the token, and its 904 is not sent twice).
        With ``announce`` (a change nobody on this connection asked for: the
        hub's role change) the client is told with EVENT_ROLE_CHANGED (905) once
        the topics are dropped; AUTH_REFRESH answers with them itself.
        """
        old, self.identity = self.identity, identity
        if identity.expires_at != old.expires_at:
            self.arm_auth_timers()
        return self._settle_identity(announce)

    async def _settle_identity(self, announce: bool) -> list[str]:
        dropped = await subs.drop_unpermitted(self, self._broker, self._policy)
        if announce:
            self.enqueue(encode_role_changed(self.identity.role, dropped))
        return dropped

    async def subscribe(self, topics: list[str], since: dict[str, int]) -> dict[str, Any]:
        return await subs.subscribe(
            self, self._broker, self._policy, topics, since, self.settings.ws_max_topics
        )

    async def unsubscribe(self, topics: list[str]) -> dict[str, Any]:
        return await subs.unsubscribe(self, self._broker, topics)

    async def attach(self, topic: str, since: int | None) -> dict[str, Any]:
        return await subs.attach_internal(self, self._broker, topic, since)

    def on_close(self, name: str, hook: Callable[[], Awaitable[None]]) -> None:
        if self._close_hooks is None:
            self._close_hooks = {}
        self._close_hooks[name] = hook

    async def run_close_hooks(self) -> None:
        """Called once by the endpoint after the connection ended (:meth:`on_close`)."""
        hooks, self._close_hooks = self._close_hooks, None
        for name, hook in (hooks or {}).items():
            try:
                await hook()
            except Exception:
                log.exception("close hook %r of %s failed", name, self.conn_id)

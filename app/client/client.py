"""The asyncio Watchpost client: one WebSocket, many concurrent calls, live subscriptions.

Shape: :meth:`WatchpostClient.connect` opens the socket and checks the
credentials with a PING; one reader task per socket matches answers to calls by
``req_id`` and feeds events to subscriptions; a supervisor task notices the
socket closing, fails every call still waiting with :class:`ConnectionLost`,
and (with ``reconnect=True``) reconnects with full-jitter exponential backoff,
re-authenticates through ``token_provider`` when the server says the token is
bad, and resubscribes every subscription with ``since``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed

from app.client.constants import CloseCode, PkgID
from app.client.errors import (
    AUTH_CLOSE_CODES,
    AuthenticationFailed,
    ConnectionLost,
    PermissionDenied,
    RequestTimeout,
    WatchpostError,
    describe_close,
    error_from_response,
)
from app.client.subscription import Event, Subscription
from app.client.transport import (
    Answer,
    Link,
    Notice,
    Pending,
    ResponseHook,
    full_jitter,
    lost_error,
    open_socket,
    parse_frame,
)

log = logging.getLogger("app.client")

TokenProvider = Callable[[], Awaitable[str]]


class LinkCaller:
    """Calls pinned to one new socket, for an ``on_open`` hook: they go out before the
    socket is handed to other callers (which wait until the hook returns)."""

    def __init__(self, client: WatchpostClient, link: Link) -> None:
        self._client = client
        self._link = link

    async def call(
        self, pkg_id: int, data: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Like :meth:`WatchpostClient.call`, on this socket only (ConnectionLost if it drops)."""
        frame = await self._client._request(int(pkg_id), data, timeout, link=self._link)
        if frame.get("status_code") != 0:
            raise error_from_response(frame)
        return frame.get("data")


#: Runs on every (re)connect instead of the credential-checking PING (see ``on_open``).
OpenHook = Callable[[LinkCaller], Awaitable[None]]
#: Receives events of topics no subscription holds (see ``on_event``).
EventHook = Callable[[Event], None]


@dataclass(frozen=True, slots=True)
class Response:
    """A successful answer: ``data`` plus ``meta`` (pagination) when the server sent it."""

    pkg_id: int
    req_id: str
    data: Any
    meta: dict[str, Any] | None = None


class WatchpostClient:
    """An asyncio client for the ``/web`` endpoint.

    ``token`` authenticates the handshake (``Authorization: Bearer``);
    ``token_provider`` is an async callable returning a fresh token, used for
    the first connect when ``token`` is None, for every reconnect, after the
    server closes with 4001/4010, and when the server announces the token is
    about to expire (904 → AUTH_REFRESH in-band). ``tenant`` selects a tenant
    for users in several. ``request_timeout`` is the default for :meth:`call`.
    With ``reconnect=True`` a dropped socket is reopened in the background with
    full-jitter exponential backoff between ``backoff_min`` and ``backoff_max``
    seconds; calls made meanwhile wait for it (within their timeout).
    ``open_timeout`` bounds each handshake plus its credential check.

    ``on_open`` replaces the credential-checking PING of every (re)connect, for
    identities that may not PING (probe tokens): it gets a :class:`LinkCaller`
    whose calls use the new socket only, and its first answer proves the
    credentials; other calls wait until it returns, and an error it raises fails
    that connect like a refused PING (retried with backoff on reconnects).
    ``on_event`` receives, in frame order from the reader task, every event whose
    topic no subscription holds (topics the server attached on its own, e.g.
    ``probe.<location id>`` after PROBE_HELLO); it must not block.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_provider: TokenProvider | None = None,
        tenant: str | None = None,
        request_timeout: float = 10.0,
        reconnect: bool = True,
        backoff_min: float = 0.5,
        backoff_max: float = 20.0,
        open_timeout: float = 10.0,
        on_open: OpenHook | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        self.url = url
        self.on_open = on_open
        self.on_event = on_event
        #: Budget for the handshake and the credential-checking PING of each (re)connect.
        self.open_timeout = open_timeout
        self.tenant = tenant
        self.request_timeout = request_timeout
        self.reconnect = reconnect
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._token = token
        self._token_provider = token_provider
        self._link: Link | None = None
        self._gen = 0
        #: Set while a verified socket is open; calls wait on it during reconnects.
        self._up = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._subs: list[Subscription] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False
        #: Why the client stopped for good (auth refused, reconnect disabled); raised by later calls.
        self._fatal: WatchpostError | None = None
        #: Number of successful (re)connects; handy for tests and metrics.
        self.connects = 0

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> WatchpostClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while a verified socket is open (False during reconnects and after close)."""
        return self._up.is_set() and self._fatal is None and not self._closing

    @property
    def fatal(self) -> WatchpostError | None:
        """Why the client stopped for good (auth refused, reconnect disabled), else None."""
        return self._fatal

    async def connect(self) -> None:
        """Open the socket and verify the credentials. Raises instead of retrying.

        Raises :class:`AuthenticationFailed` when the server refuses the token
        and :class:`ConnectionLost` when it cannot be reached.
        """
        if self._supervisor is not None:
            raise RuntimeError("this client is already connected; create a new one to reconnect by hand")
        self._closing = False
        self._fatal = None
        if self._token is None and self._token_provider is not None:
            self._token = await self._fresh_token()
        link = await self._open()
        self._supervisor = asyncio.create_task(self._supervise(link), name="watchpost-client-supervisor")

    async def close(self) -> None:
        """Close the socket (1000), end every subscription, fail calls still waiting. Idempotent."""
        self._closing = True
        self._up.clear()
        for sub in list(self._subs):
            sub._stop(None)
        self._subs.clear()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        link, self._link = self._link, None
        if link is not None:
            link.fail_pending(ConnectionLost("the client was closed before the answer arrived"))
            await link.ws.close()
            if link.reader is not None:
                await link.reader

    # -- requests ------------------------------------------------------------

    async def call(
        self,
        pkg_id: int,
        data: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request and return the answer's ``data``.

        Raises the typed error for a non-zero status (see :mod:`app.client.errors`),
        :class:`RequestTimeout` when no answer comes within ``timeout`` (default
        ``request_timeout``) and :class:`ConnectionLost` when the socket drops
        first. Safe to call concurrently.
        """
        return (await self.call_full(pkg_id, data, timeout)).data

    async def call_full(
        self,
        pkg_id: int,
        data: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Like :meth:`call` but returns data and ``meta`` (use it for paginated lists)."""
        frame = await self._request(int(pkg_id), data, timeout)
        if frame.get("status_code") != 0:
            raise error_from_response(frame)
        return Response(int(pkg_id), str(frame.get("req_id")), frame.get("data"), frame.get("meta"))

    async def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(PkgID.PING)
        return result

    async def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(PkgID.WHOAMI)
        return result

    async def refresh(self, token: str | None = None) -> Any:
        """Replace the connection's identity in-band (AUTH_REFRESH); also used for later reconnects.

        With no ``token``, asks ``token_provider`` for one. Raises
        :class:`Unauthenticated` when the server rejects it. A subscription holding
        a topic the new identity may not read (``dropped_topics`` in the answer)
        ends with :class:`PermissionDenied`.
        """
        if token is None:
            token = await self._fresh_token()
        result = await self.call(PkgID.AUTH_REFRESH, {"token": token})
        self._token = token
        self._end_dropped(result, PkgID.AUTH_REFRESH)
        return result

    def _end_dropped(self, result: Any, pkg_id: int) -> None:
        """End every subscription holding a topic the new identity may no longer read.

        The server has already stopped those topics (``dropped_topics`` in the
        AUTH_REFRESH answer or in EVENT_ROLE_CHANGED, sent when an admin changes
        the member's role); the subscription ends with :class:`PermissionDenied`
        so the application learns it, rather than waiting for events that will not come.
        """
        dropped = result.get("dropped_topics") if isinstance(result, dict) else None
        if not isinstance(dropped, list) or not dropped:
            return
        gone = {t for t in dropped if isinstance(t, str)}
        for sub in list(self._subs):
            lost = [t for t in sub.topics if t in gone]
            if lost:
                sub._fail(
                    PermissionDenied(
                        f"this connection's role may no longer read {', '.join(lost)}",
                        data={"dropped_topics": lost},
                        pkg_id=pkg_id,
                    )
                )
                # Its other topics are no longer wanted by this subscription.
                self._spawn(self._release(sub))

    async def _request(
        self,
        pkg_id: int,
        data: dict[str, Any] | None,
        wait: float | None,
        *,
        link: Link | None = None,
        hook: ResponseHook | None = None,
    ) -> dict[str, Any]:
        """Send one frame and wait for its answer. With ``link`` the caller pins one socket
        (connect checks, resubscribes); otherwise the current socket is used and, if it turns
        out to be closed before the frame left, the frame waits for the reconnect instead."""
        timeout = self.request_timeout if wait is None else wait
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {"pkg_id": pkg_id, "req_id": ""}
        if data is not None:
            body["data"] = data
        while True:
            current = link or await self._wait_up(max(0.0, deadline - time.monotonic()))
            req_id = body["req_id"] = str(uuid.uuid4())
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            current.pending[req_id] = Pending(future, hook)
            try:
                try:
                    await current.ws.send(orjson.dumps(body).decode())
                except ConnectionClosed as exc:
                    if link is None:
                        # Never sent, so sending again cannot duplicate an effect.
                        self._mark_down(current)
                        continue
                    rcvd = exc.rcvd
                    raise lost_error(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") from None
                try:
                    return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise RequestTimeout(
                        f"no answer to pkg_id {pkg_id} within {timeout:g} s; it may still take effect",
                        pkg_id=pkg_id,
                        req_id=req_id,
                    ) from None
            finally:
                # Whatever happened, a late answer must find nothing to resolve.
                current.pending.pop(req_id, None)

    def _mark_down(self, link: Link) -> None:
        """``link`` is closed but the supervisor has not noticed yet: stop handing it out."""
        if self._link is link and self._fatal is None:
            self._up.clear()

    async def _wait_up(self, wait: float) -> Link:
        if self._fatal is not None:
            raise self._fatal
        if self._closing or self._supervisor is None:
            raise ConnectionLost("the client is not connected; use `async with WatchpostClient(...)` first")
        if self._link is not None and self._link.ws.close_code is not None:
            self._mark_down(self._link)
        if not self._up.is_set():
            try:
                await asyncio.wait_for(self._up.wait(), wait)
            except TimeoutError:
                raise ConnectionLost(f"the server could not be reached again within {wait:g} s") from None
            if self._fatal is not None:
                raise self._fatal
            if self._closing:
                raise ConnectionLost("the client was closed")
        assert self._link is not None
        return self._link

    # -- subscriptions -------------------------------------------------------

    def subscribe(
        self, topics: Iterable[str], *, since: dict[str, int] | None = None, max_queue: int = 10_000
    ) -> Subscription:
        """Subscribe to ``topics`` and return an async iterator of :class:`Event`/:class:`Resync`.

        The subscription survives reconnects: it is renewed with ``since`` set to
        the last seq received per topic, so events are neither lost nor repeated;
        when the server cannot replay them you get a :class:`Resync` and should
        reload that state. Pass ``since`` to resume from seqs saved earlier.
        Use ``async with`` (or :meth:`Subscription.wait_active`) to wait until
        the server has confirmed it.
        """
        if self._fatal is not None:
            raise self._fatal
        if self._closing or self._supervisor is None:
            raise ConnectionLost("connect() before subscribe()")
        sub = Subscription(self, topics, since=since, max_queue=max_queue)
        self._subs.append(sub)
        if self._link is not None and self._up.is_set():
            self._spawn(self._send_subscribe(sub, self._link))
        return sub

    async def _send_subscribe(self, sub: Subscription, link: Link) -> None:
        data, since = sub._subscribe_request()
        try:
            await self._request(
                PkgID.SUBSCRIBE,
                data,
                None,
                link=link,
                hook=lambda frame: sub._on_subscribe_answer(frame, link.gen, since),
            )
        except RequestTimeout as exc:
            sub._fail(exc)
        except ConnectionLost:
            pass  # the supervisor resubscribes on the next connection

    def _retry_subscribe(self, sub: Subscription, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            if self._link is not None and self._up.is_set() and sub in self._subs:
                await self._send_subscribe(sub, self._link)

        self._spawn(later())

    def _forget(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    async def _release(self, sub: Subscription) -> None:
        self._forget(sub)
        still_used = {t for other in self._subs for t in other.topics}
        topics = [t for t in sub.topics if t not in still_used]
        if topics and self._up.is_set():
            with contextlib.suppress(WatchpostError):
                await self.call(PkgID.UNSUBSCRIBE, {"topics": topics})

    # -- connection management ----------------------------------------------

    async def _fresh_token(self) -> str:
        if self._token_provider is None:
            raise AuthenticationFailed(
                "the token was refused and no token_provider was given to get a new one"
            )
        try:
            token = await self._token_provider()
        except Exception as exc:  # any provider failure means "no token"
            raise AuthenticationFailed(f"token_provider failed: {exc}") from exc
        if not isinstance(token, str) or not token:
            raise AuthenticationFailed("token_provider returned no token")
        return token

    async def _open(self) -> Link:
        """Connect, start the reader and verify the credentials with a PING; raise on failure."""
        ws = await open_socket(self.url, self._token, self.tenant, self.open_timeout)
        self._gen += 1
        link = Link(ws, self._gen)
        link.reader = asyncio.create_task(self._read(link), name="watchpost-client-reader")
        try:
            if self.on_open is not None:
                await self.on_open(LinkCaller(self, link))
            else:
                answer = await self._request(PkgID.PING, None, self.open_timeout, link=link)
                if answer.get("status_code") != 0:
                    raise error_from_response(answer)
        except BaseException:
            # Also on cancellation (close() during a reconnect): never leave a socket behind.
            await ws.close()
            await link.reader
            raise
        self._link = link
        self.connects += 1
        self._up.set()
        for sub in list(self._subs):
            self._spawn(self._send_subscribe(sub, link))
        return link

    async def _read(self, link: Link) -> None:
        """Route every frame of one socket until it closes, then fail its pending calls."""
        try:
            async for raw in link.ws:
                self._route(link, parse_frame(raw))
        except ConnectionClosed:
            pass
        finally:
            link.fail_pending(link.lost())

    def _route(self, link: Link, item: Answer | Event | Notice | None) -> None:
        if isinstance(item, Answer):
            pending = link.pending.pop(item.req_id, None)
            if pending is None:
                log.debug("dropping an answer nobody waits for (timed out?): req_id=%s", item.req_id)
                return
            if pending.hook is not None:
                pending.hook(item.frame)
            if not pending.future.done():
                pending.future.set_result(item.frame)
        elif isinstance(item, Event):
            held = False
            for sub in self._subs:
                if item.topic in sub.topics:
                    held = True
                    sub._deliver(item, link.gen)
            if not held and self.on_event is not None:
                self.on_event(item)
        elif item is not None:
            if item.pkg_id == PkgID.EVENT_AUTH_EXPIRING:
                self._spawn(self._refresh_in_band(item.frame.get("data")))
            elif item.pkg_id == PkgID.EVENT_ROLE_CHANGED:
                log.info("the server changed this connection's role: %s", item.frame.get("data"))
                self._end_dropped(item.frame.get("data"), PkgID.EVENT_ROLE_CHANGED)
            elif item.frame.get("status_code") not in (None, 0):
                log.warning(
                    "the server rejected a frame it could not attribute: %s", error_from_response(item.frame)
                )

    async def _refresh_in_band(self, info: Any) -> None:
        if self._token_provider is None:
            log.warning("the server says the token expires soon (%s) but no token_provider is set", info)
            return
        try:
            await self.refresh()
        except WatchpostError as exc:
            # The server will close with 4010 later; the reconnect path asks the provider again.
            log.warning("in-band token refresh failed: %s", exc)
        else:
            log.info("token refreshed in-band")

    async def _supervise(self, link: Link) -> None:
        """Watch the socket; on a drop, reconnect or stop for good (then wake everybody up)."""
        while True:
            assert link.reader is not None
            # asyncio.wait, not await: cancelling the supervisor must not cancel the reader.
            await asyncio.wait({link.reader})
            self._up.clear()
            if self._closing:
                return
            code = link.ws.close_code
            log.info("connection lost: %s", describe_close(code, link.ws.close_reason or ""))
            lost = lost_error(code, link.ws.close_reason or "")
            if code == CloseCode.NOT_A_MEMBER or (code in AUTH_CLOSE_CODES and self._token_provider is None):
                self._stop_for_good(lost)
                return
            if not self.reconnect:
                self._stop_for_good(lost)
                return
            # A connection that lived a while resets the backoff; one that died at once does not.
            stable = time.monotonic() - link.opened_at >= self.backoff_max
            try:
                link = await self._reconnect(first_attempt=0 if stable else 1)
            except WatchpostError as exc:
                self._stop_for_good(exc)
                return

    async def _reconnect(self, first_attempt: int) -> Link:
        """Reopen the socket with backoff. Raises only when the credentials are hopeless:
        4003, or an auth close without a token_provider, or twice in a row with fresh tokens."""
        attempt = first_attempt
        auth_failures = 0
        while True:
            delay = full_jitter(attempt, self.backoff_min, self.backoff_max)
            log.info("reconnecting in %.2f s (attempt %d)", delay, attempt + 1)
            await asyncio.sleep(delay)
            attempt += 1
            fresh = False
            if self._token_provider is not None:
                try:
                    self._token, fresh = await self._fresh_token(), True
                except AuthenticationFailed as exc:
                    # Often the same outage (the login endpoint is down too): try the token we have.
                    log.warning("%s; trying the current token", exc)
            try:
                return await self._open()
            except AuthenticationFailed as exc:
                auth_failures += 1 if fresh else 0
                if (
                    exc.close_code == CloseCode.NOT_A_MEMBER
                    or self._token_provider is None
                    or auth_failures >= 2
                ):
                    raise
                log.warning("reconnect refused (%s); fetching a new token", exc)
            except WatchpostError as exc:
                log.info("reconnect failed: %s", exc)

    def _stop_for_good(self, exc: WatchpostError) -> None:
        log.warning("the client stopped: %s", exc)
        self._fatal = exc
        for sub in list(self._subs):
            sub._fail(exc)
        self._subs.clear()
        # Wake calls waiting for a reconnect; they see _fatal and raise it.
        self._up.set()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

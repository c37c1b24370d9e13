"""The /web endpoint: handshake and authentication, then the read loop.

The read loop only decodes, rate-limits and starts a task per request (up to
``WS_MAX_IN_FLIGHT`` at once; beyond that it stops reading, which pushes back on
the client through TCP). Each task runs the router under the handler deadline
and queues exactly one response.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from app import metrics
from app.auth.errors import AuthError, IdentityUnavailable, NotAMember
from app.context import Context, Services
from app.errors import Unavailable
from app.protocol import (
    BEARER_SUBPROTOCOL_PREFIX,
    SUBPROTOCOL,
    CloseCode,
    FrameError,
    Request,
    RSPCode,
    decode_request,
    encode_response,
)
from app.ws.connection import Connection
from app.ws.page_viewer import NO_SUCH_PAGE, connection_slots, page_viewer
from app.ws.subscriptions import drop_all

log = logging.getLogger("watchpost.ws")


def _credentials(ws: WebSocket) -> tuple[str | None, str | None]:
    """(token, subprotocol to echo). Header, then ``bearer.`` subprotocol, then ?token=."""
    offered: list[str] = list(ws.scope.get("subprotocols") or [])
    echo = SUBPROTOCOL if SUBPROTOCOL in offered else None
    auth = ws.headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip(), echo
    for proto in offered:
        if proto.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return proto[len(BEARER_SUBPROTOCOL_PREFIX) :], echo
    return ws.query_params.get("token"), echo


def _address(ws: WebSocket) -> str:
    """The peer as uvicorn's handshake line wrote it (``host:port``), or ``-``."""
    client = ws.scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


async def web_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """The /web endpoint as a bare ASGI app (``create_app`` routes sockets here directly)."""
    await websocket_endpoint(WebSocket(scope, receive=receive, send=send))


async def websocket_endpoint(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    settings = services.settings
    token, subprotocol = _credentials(ws)
    if services.hub.draining:
        log.info("refused code=%d reason=server is draining addr=%s", CloseCode.TRY_AGAIN_LATER, _address(ws))
        await ws.accept(subprotocol=subprotocol)
        await ws.close(code=CloseCode.TRY_AGAIN_LATER, reason="server is draining; reconnect elsewhere")
        return
    close_code, reason = 0, ""
    identity = None
    page_slug = ws.query_params.get("status_page")
    try:
        if page_slug is not None:
            client = ws.client
            identity = await page_viewer(services, page_slug, client.host if client else None)
            close_code, reason = CloseCode.AUTH_FAILED, NO_SUCH_PAGE
        else:
            identity = await services.authenticator.authenticate(token or "", ws.query_params.get("tenant"))
    except NotAMember as exc:
        close_code, reason = CloseCode.NOT_A_MEMBER, str(exc)
    except (IdentityUnavailable, Unavailable) as exc:
        close_code, reason = CloseCode.TRY_AGAIN_LATER, f"authentication unavailable: {exc}"
    except AuthError as exc:
        close_code, reason = CloseCode.AUTH_FAILED, str(exc)
    if identity is None:
        metrics.WS_CONNECTIONS.labels(status="rejected_auth").inc()
        metrics.AUTH_ATTEMPTS.labels(status="failure").inc()
        log.info("refused code=%d reason=%s addr=%s", close_code, reason[:120], _address(ws))
        await ws.accept(subprotocol=subprotocol)
        await ws.close(code=close_code, reason=reason[:120])
        return
    metrics.AUTH_ATTEMPTS.labels(status="success").inc()
    conn = Connection(ws, identity, settings, services.broker, services.policy)
    limiter = services.limiter
    slots = connection_slots(identity, settings)
    refused = await _acquire(services, slots, conn.conn_id) if settings.rate_limit_enabled else None
    if refused is not None:
        metrics.WS_CONNECTIONS.labels(status="rejected_limit").inc()
        metrics.RATE_LIMIT_HITS.labels(limit_type="connections").inc()
        log.info(
            "refused code=%d reason=%s user=%s addr=%s",
            CloseCode.TOO_MANY_CONNECTIONS,
            refused,
            identity.username,
            _address(ws),
        )
        await ws.accept(subprotocol=subprotocol)
        await ws.close(code=CloseCode.TOO_MANY_CONNECTIONS, reason=refused)
        return
    metrics.WS_CONNECTIONS.labels(status="accepted").inc()
    await ws.accept(subprotocol=subprotocol)
    services.hub.add(conn)
    conn.start()
    if services.hub.draining:  # the drain began during this handshake and did not see it
        conn.draining = True
        conn.close_soon(CloseCode.GOING_AWAY, "server shutting down; reconnect")
    log.info(
        "connected %s user=%s tenant=%s kind=%s addr=%s",
        conn.conn_id,
        identity.username,
        identity.tenant_slug,
        identity.kind,
        _address(ws),
    )
    try:
        await _read_loop(conn, services)
    finally:
        services.hub.remove(conn)
        drop_all(conn, services.broker)
        await conn.finish()
        await conn.run_close_hooks()
        if settings.rate_limit_enabled:
            try:
                for key, _limit in slots:
                    await limiter.release_connection(key, conn.conn_id)
            except Exception:  # noqa: BLE001 - limits are best effort on the way out
                log.warning("could not release connection slot for %s", conn.conn_id)
        log.info("disconnected %s", conn.conn_id)


async def _acquire(services: Services, slots: list[tuple[str, int | None]], conn_id: str) -> str | None:
    """Take every slot, or none of them; the refusal's reason when one is full."""
    taken: list[str] = []
    for key, limit in slots:
        if not await services.limiter.acquire_connection(key, conn_id, limit):
            for done in taken:
                await services.limiter.release_connection(done, conn_id)
            if limit is None:
                most = services.settings.ws_max_connections_per_user
                return f"too many connections (at most {most} per user)"
            scope = "this page" if key.startswith("spv:") else "one address"
            return f"too many status page connections (at most {limit} for {scope})"
        taken.append(key)
    return None


#: Frames a client may have answered 7 without pausing before it is closed with 1008,
#: provided they keep coming after the first answer's retry_after_ms (at least
#: LIMITED_PATIENCE_S): a client that pipelined a burst before seeing its first 7 (or
#: met a fail-closed limiter during a Redis outage) is not flooding; one still sending
#: after it was told to wait is, and answering it costs us work.
LIMITED_FRAMES_BEFORE_CLOSE = 100
LIMITED_PATIENCE_S = 1.0


class _LimitedStreak:
    """Frames answered 7 on one connection without a pause, and since when.

    Frames let through in between (a token refilled) do not end the streak: a flood
    meets one every 60 / WS_MESSAGE_RATE_LIMIT seconds. A pause longer than the
    patience does: the client backed off.
    """

    __slots__ = ("count", "last", "patience", "since")

    def __init__(self) -> None:
        self.count = 0
        self.since = self.last = self.patience = 0.0

    def flooding(self, now: float, retry_ms: int) -> bool:
        if self.count == 0 or now - self.last > self.patience:
            self.count = 0
            self.since = now
            self.patience = max(retry_ms / 1000, LIMITED_PATIENCE_S)
        self.count += 1
        self.last = now
        return self.count > LIMITED_FRAMES_BEFORE_CLOSE and now - self.since > self.patience


async def _read_loop(conn: Connection, services: Services) -> None:
    settings = services.settings
    receive = conn.ws.receive
    limiter = services.limiter
    rate_limit = settings.rate_limit_enabled
    max_frame = settings.ws_max_frame_bytes
    max_depth = settings.ws_max_json_depth
    loop = asyncio.get_running_loop()
    handler_timeout = settings.ws_handler_timeout
    streak = _LimitedStreak()
    while True:
        message = await receive()
        mtype = message["type"]
        if mtype == "websocket.disconnect":
            return
        metrics.WS_RECEIVED.inc()
        frame = message.get("text")
        if frame is None:
            frame = message.get("bytes") or b""
        if len(frame) > max_frame:
            # uvicorn enforces ws_max_size first; this guards other servers.
            await conn.close(CloseCode.MESSAGE_TOO_BIG, f"frame larger than {max_frame} bytes")
            return
        # Every frame counts, malformed or not: answering a bad frame costs as much as
        # a PING, so a flood of garbage must meet the same limit as a flood of requests.
        retry = await limiter.hit_message(conn.identity.limit_key) if rate_limit else None
        try:
            req = decode_request(frame, max_depth)
        except FrameError as exc:
            if retry is not None:
                if await _limited(conn, exc.pkg_id, exc.req_id, retry, streak, loop.time()):
                    return
                continue
            conn.enqueue(exc.to_response(), response=True)
            continue
        if conn.closed:
            return
        if retry is not None:
            if await _limited(conn, req.pkg_id, req.req_id, retry, streak, loop.time()):
                return
            continue
        if conn.draining:
            conn.enqueue(
                encode_response(
                    req.pkg_id, req.req_id, RSPCode.UNAVAILABLE, {"msg": "server is shutting down; reconnect"}
                ),
                response=True,
            )
            continue
        await conn.in_flight.acquire()
        conn.track(loop.create_task(_handle(conn, services, req)), handler_timeout)


async def _limited(
    conn: Connection, pkg_id: int | None, req_id: str | None, retry: int, streak: _LimitedStreak, now: float
) -> bool:
    """Answer one rate-limited frame; True when the connection was closed for flooding."""
    metrics.RATE_LIMIT_HITS.labels(limit_type="messages").inc()
    if streak.flooding(now, retry):
        log.warning(
            "closing %s (%s): %d frames in a row while rate limited",
            conn.conn_id,
            conn.identity.username,
            streak.count,
        )
        await conn.wait_flushed(1.0)  # the 7 answers already queued go out before the close
        await conn.close(
            CloseCode.POLICY_VIOLATION,
            f"kept sending while rate limited ({streak.count} frames); back off and reconnect",
        )
        return True
    conn.enqueue(
        encode_response(
            pkg_id,
            req_id,
            RSPCode.RATE_LIMITED,
            {"msg": f"message rate limit exceeded; retry in {retry} ms", "retry_after_ms": retry},
        ),
        response=True,
    )
    return False


async def _handle(conn: Connection, services: Services, req: Request) -> None:
    ctx = Context(
        services=services,
        identity=conn.identity,
        pkg_id=req.pkg_id,
        req_id=req.req_id,
        session=conn,
        client_addr=conn.client_addr,
    )
    started = time.perf_counter()
    try:
        conn.start_deadline(services.settings.ws_handler_timeout)
        response = await services.router.dispatch(req, ctx)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or not conn.was_timed_out(task):
            raise
        task.uncancel()  # our deadline sweep cancelled it: answer, do not die
        limit = services.settings.ws_handler_timeout
        response = encode_response(
            req.pkg_id,
            req.req_id,
            RSPCode.TIMEOUT,
            {"msg": f"the request took longer than {limit:g} s and was stopped; retry or narrow it"},
        )
    except Exception:
        log.exception("dispatch failed (req_id=%s)", req.req_id)
        response = encode_response(req.pkg_id, req.req_id, RSPCode.ERROR, {"msg": "internal error"})
    finally:
        conn.in_flight.release()
    conn.enqueue(response, response=True)
    settings = services.settings
    mode = settings.log_requests
    if mode == "off":
        return
    elapsed = time.perf_counter() - started
    status = _status_code(response)
    if (
        mode == "all"
        or status != 0
        or (settings.log_slow_request_ms and elapsed * 1000 >= settings.log_slow_request_ms)
        or log.isEnabledFor(logging.DEBUG)
    ):
        _log_request(conn, req, status, elapsed)


def _log_request(conn: Connection, req: Request, status: int | None, elapsed: float) -> None:
    """One line per request with the fields operators search by (JSON logs get them as keys).

    Which requests: ``LOG_REQUESTS`` (default ``errors``: every answer that is not
    OK and every request slower than ``LOG_SLOW_REQUEST_MS``; ``all`` with
    ``LOG_LEVEL=DEBUG`` too). A log record costs about as much server CPU as a
    whole PING round trip, so logging every success is opt-in.
    """
    ms = round(elapsed * 1000, 3)
    ident = conn.identity
    log.info(
        "request conn=%s user=%s tenant=%s pkg_id=%s req_id=%s status_code=%s ms=%.2f",
        conn.conn_id,
        ident.username,
        ident.tenant_slug,
        req.pkg_id,
        req.req_id,
        status,
        ms,
        extra={
            "conn_id": conn.conn_id,
            "user": ident.username,
            "tenant": ident.tenant_slug,
            "pkg_id": req.pkg_id,
            "req_id": req.req_id,
            "status_code": status,
            "duration_ms": ms,
        },
    )


def _status_code(response: bytes) -> int | None:
    """The status of an encoded response without decoding it again."""
    at = response.find(b'"status_code":')
    if at < 0:
        return None
    start = at + len(b'"status_code":')
    end = start
    while end < len(response) and 48 <= response[end] <= 57:
        end += 1
    return int(response[start:end]) if end > start else None

"""One socket of the client: opening it, classifying frames, failing what waits on it.

Frame classification is a pure function (text in, :class:`Answer`,
:class:`Event` or :class:`Notice` out), so the client's reader only routes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from app.client.constants import SUBPROTOCOL
from app.client.errors import AUTH_CLOSE_CODES, AuthenticationFailed, ConnectionLost, describe_close
from app.client.subscription import Event

log = logging.getLogger("app.client")

#: Answers can be large (a page of monitors with history); the server limits what it accepts, not us.
MAX_FRAME = 16 * 1024 * 1024

ResponseHook = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class Pending:
    """A call waiting for its answer."""

    future: asyncio.Future[dict[str, Any]]
    #: Runs synchronously in the reader, in frame order (subscriptions need that).
    hook: ResponseHook | None = None


@dataclass(slots=True)
class Link:
    """One open socket and what belongs to it."""

    ws: ClientConnection
    #: Counts sockets of one client, so subscriptions can tell which connection an event came on.
    gen: int
    reader: asyncio.Task[None] | None = None
    pending: dict[str, Pending] = field(default_factory=dict)
    opened_at: float = field(default_factory=time.monotonic)

    def fail_pending(self, exc: ConnectionLost) -> None:
        """Fail every call still waiting on this socket with ``exc``."""
        pending, self.pending = self.pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(exc)
                entry.future.exception()  # mark retrieved: a cancelled caller must not log a warning

    def lost(self) -> ConnectionLost:
        """The error for calls that were waiting when this socket closed."""
        return lost_error(self.ws.close_code, self.ws.close_reason or "")


@dataclass(frozen=True, slots=True)
class Answer:
    """A response to one of our requests."""

    req_id: str
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Notice:
    """An unsolicited frame without a topic (e.g. EVENT_AUTH_EXPIRING, or an unattributable error)."""

    pkg_id: int | None
    frame: dict[str, Any]


def parse_frame(raw: str | bytes) -> Answer | Event | Notice | None:
    """Classify one server frame; None for frames that are not JSON objects (logged)."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("ignoring a frame that is not JSON: %.80r", raw)
        return None
    if not isinstance(msg, dict):
        log.warning("ignoring a frame that is not a JSON object: %.80r", raw)
        return None
    req_id, pkg_id = msg.get("req_id"), msg.get("pkg_id")
    if isinstance(req_id, str):
        return Answer(req_id, msg)
    topic, seq = msg.get("topic"), msg.get("seq")
    if isinstance(topic, str) and isinstance(seq, int) and isinstance(pkg_id, int):
        return Event(topic, seq, pkg_id, msg.get("data"))
    return Notice(pkg_id if isinstance(pkg_id, int) else None, msg)


def lost_error(code: int | None, reason: str) -> ConnectionLost:
    """:class:`AuthenticationFailed` for the auth close codes, else :class:`ConnectionLost`."""
    text = describe_close(code, reason)
    if code in AUTH_CLOSE_CODES:
        return AuthenticationFailed(text, close_code=code, close_reason=reason)
    return ConnectionLost(text, close_code=code, close_reason=reason)


def full_jitter(attempt: int, low: float, high: float) -> float:
    """Delay before reconnect ``attempt`` (0-based): uniform in [0, min(high, low * 2**attempt)]."""
    return random.uniform(0, min(high, low * (2 ** min(attempt, 30))))


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


async def open_socket(
    url: str, token: str | None, tenant: str | None, open_timeout: float
) -> ClientConnection:
    """Open the WebSocket (token in the Authorization header); map failures to client errors.

    The server accepts bad credentials and then closes with 4001/4003, so a
    socket returned here is not yet known to be authenticated.
    """
    target = with_query(url, tenant=tenant) if tenant else url
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return await connect(
            target,
            additional_headers=headers,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            compression=None,  # the server has permessage-deflate off; it costs memory per socket
            open_timeout=open_timeout,
            close_timeout=5,
            max_size=MAX_FRAME,
            proxy=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise AuthenticationFailed(f"the server refused the handshake with HTTP {status}") from exc
        raise ConnectionLost(f"the server refused the WebSocket handshake with HTTP {status}") from exc
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise ConnectionLost(f"cannot connect to {url}: {exc or type(exc).__name__}") from exc

"""A lean WebSocket client connection for load generation, on websockets' sans-I/O protocol.

Why not ``websockets.asyncio.client``: on the bench's single client CPU its
per-message futures and tasks cap a load generator below what the bare echo
server can serve, so the reference would measure the client. Here an
``asyncio.Protocol`` feeds bytes to ``websockets.client.ClientProtocol`` (the
same handshake, framing, masking and close handling) and hands each text
message to a plain callback, which may answer at once with :meth:`send`: no
task, future or queue per message.

Setup steps (login checks, SUBSCRIBE) use :meth:`request`, which waits for one
reply; the hot paths replace :attr:`BenchConnection.on_message`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Any, cast

import orjson
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

#: Receives the payload of each complete text message (UTF-8 bytes, not decoded).
MessageHandler = Callable[[bytes], None]


class HandshakeFailed(Exception):
    """The server refused the WebSocket handshake (wrong URL, auth, limit); the message says how."""


class BenchConnection(asyncio.Protocol):
    """One client WebSocket; open with :func:`connect`, close with :meth:`close`."""

    def __init__(self, url: str, headers: dict[str, str] | None, subprotocols: Sequence[str] | None) -> None:
        self.url = url
        self._headers = headers or {}
        self.protocol = ClientProtocol(
            parse_uri(url),
            subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols else None,
            max_size=None,
        )
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        #: Called with each text message; replaced by scenario code on hot paths.
        self.on_message: MessageHandler = self._deliver_to_waiter
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._fragments: list[bytes] = []

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass but has its API.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Small frames must leave at once; Nagle would hold them for the peer's ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = self.protocol.connect()
        for name, value in self._headers.items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                self._on_frame(event)
            elif isinstance(event, Response):
                self._on_response(event)
        self._flush()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(
                HandshakeFailed(f"connection to {self.url} lost during handshake: {exc!r}")
            )
        if not self.closed.done():
            self.closed.set_result(None)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"connection closed ({self.close_code})"))

    # --- websocket events
    def _on_response(self, response: Response) -> None:
        if self.protocol.handshake_exc is not None:
            self.opened.set_exception(
                HandshakeFailed(f"handshake with {self.url} failed: {response.status_code}")
            )
        elif not self.opened.done():
            self.opened.set_result(None)

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.TEXT:
            if frame.fin:
                self.on_message(bytes(frame.data))
            else:
                self._fragments = [bytes(frame.data)]
        elif frame.opcode is Opcode.CONT and self._fragments:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                self.on_message(data)
        # PING (answered by the protocol), PONG, CLOSE and BINARY need nothing here.

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
        if self.protocol.close_expected() and self.protocol.state is State.CLOSED:
            self.transport.close()

    # --- API
    @property
    def close_code(self) -> int | None:
        return self.protocol.close_code

    @property
    def is_open(self) -> bool:
        return self.protocol.state is State.OPEN

    def send(self, text: bytes) -> None:
        """Send one text message (already UTF-8 JSON) now; no-op once the connection is closing."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_text(text)
            self._flush()

    async def request(
        self, pkg_id: int, data: dict[str, Any] | None = None, *, wait_s: float = 30.0
    ) -> dict[str, Any]:
        """Send one request and return its reply envelope; for setup steps (the default handler only)."""
        req_id = str(uuid.uuid4())
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[req_id] = waiter
        try:
            self.send(orjson.dumps({"pkg_id": pkg_id, "req_id": req_id, "data": data or {}}))
            return await asyncio.wait_for(waiter, wait_s)
        finally:
            self._waiters.pop(req_id, None)

    def _deliver_to_waiter(self, payload: bytes) -> None:
        message = orjson.loads(payload)
        req_id = message.get("req_id") if isinstance(message, dict) else None
        waiter = self._waiters.get(req_id) if isinstance(req_id, str) else None
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    async def close(self, wait_s: float = 5.0) -> None:
        """Close with 1000 and wait for the server's close (at most ``wait_s`` seconds)."""
        if self.transport is None:
            return
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), wait_s)
        self.transport.close()


async def connect(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    subprotocols: Sequence[str] | None = None,
    open_s: float = 60.0,
) -> BenchConnection:
    """Open one connection to a ``ws://`` loopback URL; raises :class:`HandshakeFailed` on refusal."""
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    connection = BenchConnection(url, headers, subprotocols)
    async with asyncio.timeout(open_s):
        await loop.create_connection(lambda: connection, uri.host, uri.port)
        await connection.opened
    return connection

"""Real loopback servers for the dns and websocket check kinds.

    with DnsTarget() as dns:              # UDP responder on 127.0.0.1 serving a dnspython zone
        dns.port                          # resolver_port for the monitor
        dns.silent = True                 # drop queries from now on (the check must time out)

    with WsTarget() as ws:                # websockets server; per path behaviour
        ws.url("/echo")                   # echoes each message
        ws.url("/status")                 # answers every message with the JSON of ws.status
        ws.url("/deny")                   # refuses the handshake with HTTP 403
        ws.url("/close")                  # accepts, then closes with 1011 before answering
        ws.url("/silent")                 # accepts and never answers
        ws.seen_headers                   # handshake headers of the last connection

Both run their own asyncio loop in a daemon thread (see tests/targets.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any, Self

import dns.message
import dns.rcode
import dns.rdatatype
import dns.zone
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from tests.targets import _LoopThread

HEALTH = Subprotocol("health.v1")

ZONE = """
$ORIGIN watchpost.test.
$TTL 60
@       IN SOA ns1 hostmaster 1 3600 600 86400 60
@       IN NS  ns1
ns1     IN A   127.0.0.1
api     IN A   192.0.2.10
api     IN A   192.0.2.11
v6      IN AAAA 2001:db8::1
www     IN CNAME api
@       IN MX  10 mail
mail    IN A   192.0.2.25
@       IN TXT "v=spf1 -all"
_sip._tcp IN SRV 10 5 5060 sip
sip     IN A   192.0.2.40
"""


class _DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, target: DnsTarget) -> None:
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.target.queries += 1
        if self.target.silent or self.transport is None:
            return
        self.transport.sendto(self.target.answer(data), addr)


class DnsTarget:
    """An authoritative UDP server for ``watchpost.test.`` built from :data:`ZONE`."""

    def __init__(self) -> None:
        self.zone = dns.zone.from_text(ZONE, relativize=False)
        self.silent = False
        self.queries = 0
        self.port = 0
        self._loop: _LoopThread | None = None
        self._transport: asyncio.DatagramTransport | None = None

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name, rtype = question.name, question.rdtype
        assert self.zone.origin is not None
        if not name.is_subdomain(self.zone.origin):
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        node = self.zone.get_node(name)
        if node is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()
        rdataset = node.get_rdataset(dns.rdataclass.IN, rtype)
        if rdataset is not None:
            rrset = response.find_rrset(response.answer, name, dns.rdataclass.IN, rtype, create=True)
            rrset.update(rdataset)  # type: ignore[no-untyped-call]
        return response.to_wire()

    def start(self) -> Self:
        self._loop = _LoopThread()

        async def _start() -> asyncio.DatagramTransport:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _DnsProtocol(self), sock=sock
            )
            return transport

        self._transport = self._loop.run(_start())
        self.port = int(self._transport.get_extra_info("sockname")[1])
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        transport = self._transport

        async def _close() -> None:
            if transport is not None:
                transport.close()

        self._loop.run(_close())
        self._loop.stop()
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WsTarget:
    """A WebSocket server whose behaviour depends on the request path (see the module doc)."""

    def __init__(self) -> None:
        self.status: Any = {"status": "UP", "queue": {"depth": 3}}
        self.seen_headers: Headers | None = None
        self.seen_subprotocol: str | None = None
        self.connections = 0
        self.port = 0
        self._loop: _LoopThread | None = None
        self._server: Server | None = None

    def url(self, path: str = "/echo") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.seen_headers = request.headers
        if request.path == "/deny":
            return connection.respond(403, "forbidden\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.seen_subprotocol = ws.subprotocol
        path = ws.request.path if ws.request is not None else "/"
        if path == "/close":
            await ws.close(1011, "overloaded")
            return
        if path == "/silent":
            await asyncio.sleep(3600)
            return
        async for message in ws:
            if path == "/status":
                await ws.send(json.dumps(self.status))
            else:
                await ws.send(message)

    def start(self) -> Self:
        self._loop = _LoopThread()

        async def _start() -> Server:
            return await serve(
                self._handle,
                "127.0.0.1",
                0,
                process_request=self._process_request,
                subprotocols=[HEALTH],
                select_subprotocol=lambda conn, offered: HEALTH if HEALTH in offered else None,
            )

        self._server = self._loop.run(_start())
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        server = self._server

        async def _close() -> None:
            if server is not None:
                server.close(close_connections=False)

        self._loop.run(_close())
        self._loop.stop()
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

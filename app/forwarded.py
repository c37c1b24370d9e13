"""The client address of a request or WebSocket: the peer, or what a trusted proxy says.

``X-Forwarded-For`` is believed only when the TCP peer is in ``FORWARDED_ALLOW_IPS``
(default: nobody). Anyone else could write any address there, bypass the per-address
login limits and forge the ``client_addr`` of audit rows. uvicorn's own proxy-header
handling is turned off (``app.__main__``) because it trusts 127.0.0.1 by default.

Behind a chain of trusted proxies the client is the right-most address that is not
itself a trusted proxy: every proxy appends the peer it saw, so entries left of the
first untrusted one were written by the client and prove nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Hops looked at, from the right; a longer header is a client padding it.
MAX_HOPS = 16


def parse_address(raw: str) -> Address | None:
    """An IP address from one X-Forwarded-For entry (``1.2.3.4``, ``1.2.3.4:5``, ``[::1]:5``)."""
    text = raw.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """The address to act on: ``peer`` unless it is a trusted proxy naming someone else."""
    if peer is None or not forwarded_for or not trusted:
        return peer
    peer_ip = parse_address(peer)
    if peer_ip is None or not is_trusted(peer_ip, trusted):
        return peer
    client = peer
    for entry in reversed(forwarded_for.split(",")[-MAX_HOPS:]):
        hop = parse_address(entry)
        if hop is None:
            break  # garbage from the client side of the chain: keep the last address a proxy vouched for
        client = str(hop)
        if not is_trusted(hop, trusted):
            break
    return client


class ForwardedMiddleware:
    """Rewrites ``scope["client"]`` (and the scheme) from a trusted proxy's headers."""

    def __init__(self, app: ASGIApp, trusted: Sequence[Network] = ()) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.trusted:
            self._rewrite(scope)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> None:
        client = scope.get("client")
        peer = client[0] if client else None
        peer_ip = parse_address(peer) if peer else None
        if peer_ip is None or not is_trusted(peer_ip, self.trusted):
            return
        forwarded_for: list[str] = []
        proto = None
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").strip().lower()
        address = client_address(peer, ",".join(forwarded_for), self.trusted)
        if address is not None and address != peer:
            scope["client"] = (address, 0)
        if proto in ("http", "https"):
            scope["scheme"] = proto if scope["type"] == "http" else proto.replace("http", "ws")

"""Async Python client for Watchpost's ``/web`` WebSocket endpoint.

    from app.client import WatchpostClient, Event, Resync, NotFound, PkgID

    async with WatchpostClient("ws://127.0.0.1:8000/web", token) as client:
        print(await client.call(PkgID.WHOAMI))
        async with client.subscribe(["monitors"]) as events:
            async for item in events:
                if isinstance(item, Resync):
                    ...  # reload the state of item.topic, then keep iterating
                else:
                    print(item.topic, item.seq, item.data)

``python -m app.client --help`` is a small CLI on top of it.

The package imports nothing from the server: its wire constants
(:mod:`app.client.constants`) are generated from app/protocol.py by
``make ws-docs``.
"""

from app.client.client import EventHook, LinkCaller, OpenHook, Response, TokenProvider, WatchpostClient
from app.client.constants import CloseCode, PkgID, RSPCode
from app.client.errors import (
    AuthenticationFailed,
    Conflict,
    ConnectionLost,
    InvalidData,
    NotFound,
    PermissionDenied,
    RateLimited,
    RequestTimeout,
    ServerError,
    Timeout,
    Unauthenticated,
    Unavailable,
    UnknownPkgId,
    WatchpostError,
    error_from_response,
)
from app.client.subscription import Event, Resync, Subscription
from app.client.transport import full_jitter

__all__ = [
    "AuthenticationFailed",
    "CloseCode",
    "Conflict",
    "ConnectionLost",
    "Event",
    "EventHook",
    "InvalidData",
    "LinkCaller",
    "NotFound",
    "OpenHook",
    "PermissionDenied",
    "PkgID",
    "RSPCode",
    "RateLimited",
    "RequestTimeout",
    "Response",
    "Resync",
    "ServerError",
    "Subscription",
    "Timeout",
    "TokenProvider",
    "Unauthenticated",
    "Unavailable",
    "UnknownPkgId",
    "WatchpostClient",
    "WatchpostError",
    "error_from_response",
    "full_jitter",
]

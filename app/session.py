"""What a handler sees of the connection a request came on.

Handlers never touch the socket layer (docs/architecture.md, "Handlers know no
socket"): the few packages that act on their own connection — WHOAMI,
AUTH_REFRESH, SUBSCRIBE, UNSUBSCRIBE, PROBE_HELLO — go through this interface, which
``app.ws.connection.Connection`` implements. ``Context.session`` is ``None``
where a request has no connection, and those packages answer 2 INVALID_DATA.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from app.auth.identity import Identity


class Session(Protocol):
    @property
    def identity(self) -> Identity:
        """Who the connection acts as now (a role change may replace it during a request)."""
        ...

    def apply_identity(self, identity: Identity) -> Awaitable[list[str]]:
        """Make ``identity`` the connection's own (a refreshed credential, a new role).

        The identity is replaced before this returns, so every request read after
        it is checked against the new role; awaiting the result unsubscribes the
        topics that role may no longer read and gives their names, in
        subscription order.
        """
        ...

    async def subscribe(self, topics: list[str], since: dict[str, int]) -> dict[str, Any]:
        """Subscribe every topic or none (SUBSCRIBE's answer); ``since`` replays what was missed."""
        ...

    async def unsubscribe(self, topics: list[str]) -> dict[str, Any]:
        """Stop the topics (UNSUBSCRIBE's answer: the names that were subscribed)."""
        ...

    async def attach(self, topic: str, since: int | None) -> dict[str, Any]:
        """Attach one topic the server chose for this connection (a probe's
        ``probe.<location id>``), with SUBSCRIBE's gap-free recovery but without its topic
        RBAC: the caller decided the connection reads it. Answers ``{"seq", "recovered",
        "replayed"}``; a second call for the same topic replaces the first."""
        ...

    def on_close(self, name: str, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` once when the connection ends (closed by either side or dropped),
        after its subscriptions are gone; a later hook of the same ``name`` replaces it."""
        ...

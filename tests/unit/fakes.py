"""Stand-ins for the database session and the services object, for pure router tests.

Only what sits *below* the router is faked: the real PackageRouter, Context, Policy,
schemas and error tree run unchanged. The fakes record what they were given so a
test can say which audit rows were written and which events were published.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from app.auth.identity import Identity
from app.context import Context, Services
from app.protocol import Request
from app.rbac import Policy
from app.routing import PackageRouter


class FakeSession:
    """One database session: what was added, and whether it was committed or rolled back."""

    def __init__(self) -> None:
        self.added: list[Any] = []
        self.committed = False
        self.rolled_back = False

    def add(self, row: Any) -> None:
        self.added.append(row)

    async def commit(self) -> None:
        self.committed = True

    async def rollback(self) -> None:
        self.rolled_back = True


class FakeDatabase:
    def __init__(self) -> None:
        self.sessions: list[FakeSession] = []

    @asynccontextmanager
    async def session(self) -> AsyncIterator[FakeSession]:
        session = FakeSession()
        self.sessions.append(session)
        yield session

    def committed_rows(self) -> list[Any]:
        """Rows that reached the database: those of committed sessions only."""
        return [row for s in self.sessions if s.committed for row in s.added]


class FakeEvents:
    def __init__(self) -> None:
        self.published: list[tuple[int, str, int, Any]] = []

    async def publish(self, tenant_id: int, topic: str, pkg_id: int, data: Any) -> None:
        self.published.append((tenant_id, topic, pkg_id, data))


@dataclass
class FakeServices:
    """The part of ``Services`` that the router and ``Context`` touch."""

    router: PackageRouter
    db: FakeDatabase = field(default_factory=FakeDatabase)
    events: FakeEvents = field(default_factory=FakeEvents)
    settings: Any = None


def identity(role: str | None, *, tenant_id: int | None = 7) -> Identity:
    return Identity(
        user_id=42,
        username="ada",
        subject="42",
        tenant_id=tenant_id if role is not None else None,
        tenant_slug="acme" if role is not None else None,
        role=role,
    )


def router_with(policy: Policy, router: PackageRouter) -> FakeServices:
    router.policy = policy
    return FakeServices(router=router)


def context(services: FakeServices, req: Request, who: Identity) -> Context:
    return Context(
        services=cast(Services, services),
        identity=who,
        pkg_id=req.pkg_id,
        req_id=req.req_id,
        client_addr="203.0.113.9",
    )

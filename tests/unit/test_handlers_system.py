"""The session packages (SUBSCRIBE, UNSUBSCRIBE, AUTH_REFRESH) through the real router, with a fake session.

Handlers see a connection only as ``app.session.Session``; here a small fake of that
interface stands in for the socket, and everything else is the app's own: the
router from ``create_app`` with actions.json's roles, the packages' schemas and
the handlers. Nothing here opens a socket or a database connection.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from app import create_app
from app.auth.identity import Identity
from app.context import Context, Services
from app.protocol import PkgID, Request, RSPCode
from app.session import Session
from app.settings import Settings

VIEWER = Identity(user_id=7, username="ann", subject="7", tenant_id=3, tenant_slug="acme", role="viewer")


class FakeSession:
    """Records what a handler asked of its connection and answers like a connection would."""

    def __init__(self, identity: Identity) -> None:
        self._identity = identity
        self.calls: list[tuple[Any, ...]] = []

    @property
    def identity(self) -> Identity:
        return self._identity

    async def apply_identity(self, identity: Identity) -> list[str]:
        self.calls.append(("apply_identity", identity))
        self._identity = identity
        return []

    async def subscribe(self, topics: list[str], since: dict[str, int]) -> dict[str, Any]:
        self.calls.append(("subscribe", topics, since))
        return {"topics": {name: {"seq": 41, "recovered": name in since, "replayed": 0} for name in topics}}

    async def unsubscribe(self, topics: list[str]) -> dict[str, Any]:
        self.calls.append(("unsubscribe", topics))
        return {"unsubscribed": topics[:1]}


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    app = create_app(
        Settings.from_env(
            {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", "JWT_SECRET": "s" * 40}
        )
    )
    services: Services = app.state.services
    yield services
    await services.db.close()


async def _dispatch(
    services: Services, session: Session | None, pkg_id: PkgID, data: dict[str, Any]
) -> dict[str, Any]:
    ctx = Context(
        services=services, identity=VIEWER, pkg_id=pkg_id, req_id=str(uuid.uuid4()), session=session
    )
    frame = await services.router.dispatch(Request(pkg_id=pkg_id, req_id=ctx.req_id, data=data), ctx)
    answer: dict[str, Any] = orjson.loads(frame)
    return answer


async def test_subscribe_asks_the_session_for_the_topics_and_answers_with_its_result(
    services: Services,
) -> None:
    session = FakeSession(VIEWER)
    answer = await _dispatch(
        services, session, PkgID.SUBSCRIBE, {"topics": ["monitors", "incidents"], "since": {"monitors": 12}}
    )
    assert session.calls == [("subscribe", ["monitors", "incidents"], {"monitors": 12})]
    assert answer["status_code"] == RSPCode.OK
    assert answer["data"]["topics"]["monitors"] == {"seq": 41, "recovered": True, "replayed": 0}


async def test_subscribe_data_the_schema_refuses_never_reaches_the_session(services: Services) -> None:
    session = FakeSession(VIEWER)
    answer = await _dispatch(services, session, PkgID.SUBSCRIBE, {"topics": []})
    assert answer["status_code"] == RSPCode.INVALID_DATA
    assert session.calls == []


async def test_unsubscribe_asks_the_session(services: Services) -> None:
    session = FakeSession(VIEWER)
    answer = await _dispatch(services, session, PkgID.UNSUBSCRIBE, {"topics": ["monitors", "gone"]})
    assert session.calls == [("unsubscribe", ["monitors", "gone"])]
    assert answer["data"] == {"unsubscribed": ["monitors"]}


@pytest.mark.parametrize(
    ("pkg_id", "data"),
    [
        (PkgID.SUBSCRIBE, {"topics": ["monitors"]}),
        (PkgID.UNSUBSCRIBE, {"topics": ["monitors"]}),
        (PkgID.AUTH_REFRESH, {"token": "x"}),
    ],
)
async def test_without_a_session_the_connection_packages_say_so(
    services: Services, pkg_id: PkgID, data: dict[str, Any]
) -> None:
    answer = await _dispatch(services, None, pkg_id, data)
    assert answer["status_code"] == RSPCode.INVALID_DATA
    assert answer["data"]["msg"] == f"{pkg_id.name} needs a connection"


async def test_a_refused_refresh_leaves_the_session_as_it_was(services: Services) -> None:
    session = FakeSession(VIEWER)
    answer = await _dispatch(services, session, PkgID.AUTH_REFRESH, {"token": "not a token"})
    assert answer["status_code"] == RSPCode.UNAUTHENTICATED
    assert "the connection keeps its current token" in answer["data"]["msg"]
    assert session.calls == [] and session.identity is VIEWER

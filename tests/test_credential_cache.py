"""Handshakes reuse what the credential check read; control messages end that at once.

In-process, on real PostgreSQL and Redis: the server's own Authenticator and Hub
share a CredentialCache as ``create_app`` wires them, the hub listens on the
control topic of a real Redis broker, and another broker (another instance)
publishes the control messages. Statements sent to PostgreSQL are counted with
a SQLAlchemy event, so "no database read" is measured, not inferred. The same
revocations over real sockets are tests/test_realtime_auth.py, test_tenancy.py
and test_control.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlmodel import col

from app import control
from app.auth.authenticator import Authenticator
from app.auth.credential_cache import CredentialCache
from app.auth.errors import InvalidToken, NotAMember
from app.auth.local import LocalAuth
from app.auth.passwords import hash_secret, new_secret
from app.broker.redis import RedisBroker
from app.control import MemberRoleChanged, RevokeMembership, RevokeSession, RevokeToken
from app.events import CONTROL_TOPIC
from app.models.base import utcnow
from app.models.tenant import Membership, Tenant
from app.models.token import ApiToken
from app.models.user import User
from app.rbac import load_policy
from app.settings import Settings
from app.storage.db import Database
from app.ws.hub import Hub
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import migrate


@dataclass
class Instance:
    db: Database
    local: LocalAuth
    auth: Authenticator
    cache: CredentialCache
    #: Another instance's broker: what it publishes reaches this one only through Redis.
    other: RedisBroker
    statements: list[str]

    async def reads(self, call: Callable[[], Awaitable[Any]]) -> tuple[Any, int]:
        """``call``'s result and how many statements it sent to PostgreSQL."""
        before = len(self.statements)
        result = await call()
        return result, len(self.statements) - before

    #: Set by a control-topic listener registered after the hub's, so the hub has applied the message.
    applied: asyncio.Event

    async def publish(self, message: control.ControlMessage) -> None:
        """Publish from the other instance and wait until this one's hub has applied it."""
        self.applied.clear()
        assert await control.publish(self.other, message)
        async with asyncio.timeout(10):
            await self.applied.wait()


@pytest.fixture
async def instance(pg_url: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Instance]:
    await asyncio.to_thread(migrate, pg_url)
    settings = Settings(database_url=pg_url, jwt_secret="k" * 48, auth_cache_ttl=30)
    db = Database(pg_url)
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    for engine in {db.engine, db.read_engine}:
        event.listen(engine.sync_engine, "before_cursor_execute", count)
    policy = load_policy(None)
    cache = CredentialCache(settings.auth_cache_ttl)
    local = LocalAuth(settings, db, settings.jwt_secret)
    broker = RedisBroker(redis_url, prefix=redis_prefix)
    other = RedisBroker(redis_url, prefix=redis_prefix)
    await broker.start()
    await other.start()
    hub = Hub(broker, policy, cache)
    hub.start()
    applied = asyncio.Event()

    def after_hub(_topic: str, _seq: int, _frame: str) -> None:
        applied.set()

    broker.add_listener(CONTROL_TOPIC, after_hub)
    await broker.wait_subscribed(CONTROL_TOPIC)
    auth = Authenticator(db, local, policy, cache=cache)
    try:
        yield Instance(db, local, auth, cache, other, statements, applied)
    finally:
        broker.remove_listener(CONTROL_TOPIC, after_hub)
        hub.stop()
        await other.close()
        await broker.close()
        await db.close()


async def _ids(db: Database, username: str, slug: str) -> tuple[int, int]:
    async with db.session() as s:
        user = (await s.execute(select(User).where(col(User.username) == username))).scalar_one()
        tenant = (await s.execute(select(Tenant).where(col(Tenant.slug) == slug))).scalar_one()
        assert user.id is not None and tenant.id is not None
        return user.id, tenant.id


async def _set_role(db: Database, user_id: int, tenant_id: int, role: str) -> None:
    async with db.session() as s:
        await s.execute(
            update(Membership)
            .where(col(Membership.user_id) == user_id, col(Membership.tenant_id) == tenant_id)
            .values(role=role)
        )
        await s.commit()


async def test_a_local_session_is_read_once_and_forgotten_when_it_is_revoked(instance: Instance) -> None:
    slug = unique("t")
    name = await acreate_user(instance.db.url, {slug: "editor"})
    tokens, _ = await instance.local.login(name, PASSWORD)

    first, reads = await instance.reads(lambda: instance.auth.authenticate(tokens.access_token, slug))
    assert first.role == "editor" and reads > 0
    again, reads = await instance.reads(lambda: instance.auth.authenticate(tokens.access_token, slug))
    assert again == first and reads == 0
    # Another access token of the same session (a /refresh) is checked once, then reused too.
    refreshed = await instance.local.refresh(tokens.refresh_token)
    other, reads = await instance.reads(lambda: instance.auth.authenticate(refreshed.access_token, slug))
    assert other.session_id == first.session_id and reads > 0
    _, reads = await instance.reads(lambda: instance.auth.authenticate(refreshed.access_token, slug))
    assert reads == 0

    # /logout revokes the session in the database, then announces it.
    assert await instance.local.logout(refreshed.refresh_token) is not None
    await instance.publish(RevokeSession(str(first.session_id)))
    for token in (tokens.access_token, refreshed.access_token):
        with pytest.raises(InvalidToken, match="logged out"):
            await instance.auth.authenticate(token, slug)


async def test_a_role_change_and_a_removal_are_read_again_at_once(instance: Instance) -> None:
    slug = unique("t")
    name = await acreate_user(instance.db.url, {slug: "editor"})
    user_id, tenant_id = await _ids(instance.db, name, slug)
    tokens, _ = await instance.local.login(name, PASSWORD)
    await instance.auth.authenticate(tokens.access_token, slug)

    await _set_role(instance.db, user_id, tenant_id, "viewer")
    await instance.publish(MemberRoleChanged(user_id, tenant_id, "viewer"))
    changed, reads = await instance.reads(lambda: instance.auth.authenticate(tokens.access_token, slug))
    assert changed.role == "viewer" and reads > 0

    async with instance.db.session() as s:
        member = (
            await s.execute(
                select(Membership).where(
                    col(Membership.user_id) == user_id, col(Membership.tenant_id) == tenant_id
                )
            )
        ).scalar_one()
        await s.delete(member)
        await s.commit()
    await instance.publish(RevokeMembership(user_id, tenant_id))
    with pytest.raises(Exception, match="not a member"):
        await instance.auth.authenticate(tokens.access_token, slug)


async def test_an_api_token_is_read_once_and_forgotten_when_it_is_revoked(instance: Instance) -> None:
    slug = unique("t")
    name = await acreate_user(instance.db.url, {slug: "admin"})
    user_id, tenant_id = await _ids(instance.db, name, slug)
    secret = new_secret("wpt_")
    async with instance.db.session() as s:
        token = ApiToken(
            tenant_id=tenant_id,
            user_id=user_id,
            name="ci",
            role="editor",
            token_hash=hash_secret(secret),
            prefix=secret[:10],
        )
        s.add(token)
        await s.commit()
        assert token.id is not None

    first, reads = await instance.reads(lambda: instance.auth.authenticate(secret, None))
    assert first.kind == "api" and first.role == "editor" and reads > 0
    again, reads = await instance.reads(lambda: instance.auth.authenticate(secret, None))
    assert again == first and reads == 0
    # AUTH_REFRESH promises the current role: it reads the database even when cached.
    _, reads = await instance.reads(lambda: instance.auth.authenticate(secret, None, fresh=True))
    assert reads > 0

    # TOKEN_REVOKE: the row first, then the control message.
    async with instance.db.session() as s:
        await s.execute(update(ApiToken).where(col(ApiToken.id) == token.id).values(revoked_at=utcnow()))
        await s.commit()
    await instance.publish(RevokeToken(token.id))
    with pytest.raises(InvalidToken, match="revoked"):
        await instance.auth.authenticate(secret, None)


async def test_a_cached_local_token_is_not_served_past_its_expiry(instance: Instance) -> None:
    slug = unique("t")
    name = await acreate_user(instance.db.url, {slug: "viewer"})
    tokens, user = await instance.local.login(name, PASSWORD)
    session_id = (await instance.auth.authenticate(tokens.access_token, slug)).session_id
    assert session_id is not None
    short, _ = instance.local.issue_access(user, session_id, ttl=1)
    _, reads = await instance.reads(lambda: instance.auth.authenticate(short, slug))
    assert reads > 0
    _, reads = await instance.reads(lambda: instance.auth.authenticate(short, slug))
    assert reads == 0
    await asyncio.sleep(1.2)
    # Past its exp the entry is gone: the token is checked again (and read again, or refused
    # once the verifier's 5 s leeway is over), never answered from the cache.
    _, reads = await instance.reads(lambda: instance.auth.authenticate(short, slug))
    assert reads > 0


async def test_an_uncached_local_handshake_is_one_statement_and_concurrent_ones_share_it(
    instance: Instance,
) -> None:
    """The miss path: session, user and membership in one statement on the read pool, and a
    storm of the same new credential (tabs reconnecting together) reads it once."""
    slug, other = unique("t"), unique("t")
    name = await acreate_user(instance.db.url, {slug: "editor", other: "viewer"})
    tokens, _ = await instance.local.login(name, PASSWORD)

    first, reads = await instance.reads(lambda: instance.auth.authenticate(tokens.access_token, slug))
    assert (first.tenant_slug, first.role, reads) == (slug, "editor", 1)
    # No tenant asked for: the first membership, still one statement.
    default, reads = await instance.reads(lambda: instance.auth.authenticate(tokens.access_token, None))
    assert (default.tenant_slug, default.role, reads) == (slug, "editor", 1)

    async def storm() -> list[Any]:
        return await asyncio.gather(
            *(instance.auth.authenticate(tokens.access_token, other) for _ in range(20))
        )

    together, reads = await instance.reads(storm)
    assert reads == 1, f"20 concurrent handshakes of one new credential read {reads} times"
    assert {(i.tenant_slug, i.role) for i in together} == {(other, "viewer")}
    assert len({id(i) for i in together}) == 20, "each handshake gets its own copy of the identity"

    # A refusal reaches every handshake that waited on the read, and is not cached.
    stranger = unique("t")
    await acreate_user(instance.db.url, {stranger: "viewer"})
    refused = await asyncio.gather(
        *(instance.auth.authenticate(tokens.access_token, stranger) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, NotAMember) for r in refused), refused


async def test_a_platform_administrator_outside_the_tenant_still_gets_the_owner_role(
    instance: Instance,
) -> None:
    slug = unique("t")
    await acreate_user(instance.db.url, {slug: "viewer"})  # makes the tenant
    admin = await acreate_user(instance.db.url, {}, platform_admin=True)
    tokens, _ = await instance.local.login(admin, PASSWORD)
    ident = await instance.auth.authenticate(tokens.access_token, slug)
    assert (ident.tenant_slug, ident.role, ident.is_platform_admin) == (slug, "owner", True)
    bare = await instance.auth.authenticate(tokens.access_token, None)
    assert (bare.tenant_id, bare.role) == (None, None)

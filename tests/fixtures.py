"""Test data written straight to the database the server uses (users cannot be created over
the socket; this is set-up, not a stand-in for server code)."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import select

from app.auth.passwords import hash_password
from app.models.tenant import Membership, Tenant
from app.models.user import User
from app.storage.db import Database

PASSWORD = "user-test-password"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _create_user(
    database_url: str, username: str, memberships: dict[str, str], platform_admin: bool
) -> int:
    db = Database(database_url)
    try:
        async with db.session() as s:
            user = User(
                username=username, password_hash=hash_password(PASSWORD), is_platform_admin=platform_admin
            )
            s.add(user)
            await s.flush()
            for slug, role in memberships.items():
                tenant = (await s.execute(select(Tenant).where(Tenant.slug == slug))).scalar_one_or_none()
                if tenant is None:
                    tenant = Tenant(slug=slug, name=slug.title())
                    s.add(tenant)
                    await s.flush()
                s.add(Membership(tenant_id=tenant.id, user_id=user.id, role=role))  # type: ignore[arg-type]
            await s.commit()
            assert user.id is not None
            return user.id
    finally:
        await db.close()


def create_user(
    database_url: str,
    memberships: dict[str, str],
    *,
    platform_admin: bool = False,
    username: str | None = None,
) -> str:
    """Create a user with roles per tenant slug (tenants created as needed); returns the username."""
    name = username or unique("user")
    asyncio.run(_create_user(database_url, name, memberships, platform_admin))
    return name


async def acreate_user(
    database_url: str,
    memberships: dict[str, str],
    *,
    platform_admin: bool = False,
    username: str | None = None,
) -> str:
    """``create_user`` for async tests."""
    name = username or unique("user")
    await _create_user(database_url, name, memberships, platform_admin)
    return name


async def aset_role(database_url: str, username: str, slug: str, role: str) -> None:
    """Change a membership straight in the database: a change no live socket is told about
    (made with SQL, or while the broker was down), which AUTH_REFRESH must still pick up."""
    db = Database(database_url)
    try:
        async with db.session() as s:
            member = (
                await s.execute(
                    select(Membership)
                    .join(User, User.id == Membership.user_id)  # type: ignore[arg-type]
                    .join(Tenant, Tenant.id == Membership.tenant_id)  # type: ignore[arg-type]
                    .where(User.username == username, Tenant.slug == slug)
                )
            ).scalar_one()
            member.role = role
            await s.commit()
    finally:
        await db.close()

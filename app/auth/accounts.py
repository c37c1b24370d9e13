"""Creating a local user with a role in a tenant.

One function for the two places that do it outside the protocol: the first
start (``app.bootstrap``: the admin, owner of ``default``) and the
``create-user`` command (``app.cli``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.passwords import hash_password
from app.models.tenant import Membership, Tenant
from app.models.user import User


async def add_local_user(
    session: AsyncSession,
    *,
    username: str,
    password: str,
    tenant_slug: str,
    role: str,
    platform_admin: bool = False,
    tenant_name: str | None = None,
) -> User:
    """Add the user, the tenant if it does not exist yet (named ``tenant_name``, default
    the slug) and the membership. Flushes; the caller commits (and handles a race lost
    on the unique username or slug as ``IntegrityError``)."""
    tenant = (
        await session.execute(select(Tenant).where(col(Tenant.slug) == tenant_slug))
    ).scalar_one_or_none()
    if tenant is None:
        tenant = Tenant(slug=tenant_slug, name=tenant_name or tenant_slug)
        session.add(tenant)
    user = User(username=username, password_hash=hash_password(password), is_platform_admin=platform_admin)
    session.add(user)
    await session.flush()
    session.add(Membership(tenant_id=tenant.id, user_id=user.id, role=role))  # type: ignore[arg-type]
    await session.flush()
    return user

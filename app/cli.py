"""Operator commands that touch the database (``python -m app create-user``)."""

from __future__ import annotations

import sys

from sqlalchemy import select
from sqlmodel import col

from app.auth.passwords import hash_password
from app.models.tenant import Membership, Tenant
from app.models.user import User
from app.rbac import load_policy
from app.settings import Settings
from app.storage.db import Database


async def create_user(username: str, password: str, tenant_slug: str, role: str, platform_admin: bool) -> int:
    settings = Settings.from_env()
    policy = load_policy(settings.actions_path)
    if role not in policy.roles:
        print(f"unknown role {role!r}; one of {', '.join(policy.roles)}", file=sys.stderr)
        return 2
    db = Database(settings.database_url)
    try:
        async with db.session() as s:
            if (await s.execute(select(User).where(col(User.username) == username))).scalar_one_or_none():
                print(f"user {username!r} exists", file=sys.stderr)
                return 1
            tenant = (
                await s.execute(select(Tenant).where(col(Tenant.slug) == tenant_slug))
            ).scalar_one_or_none()
            if tenant is None:
                tenant = Tenant(slug=tenant_slug, name=tenant_slug)
                s.add(tenant)
            user = User(
                username=username, password_hash=hash_password(password), is_platform_admin=platform_admin
            )
            s.add(user)
            await s.flush()
            s.add(Membership(tenant_id=tenant.id, user_id=user.id, role=role))  # type: ignore[arg-type]
            await s.commit()
        print(f"created {username!r} as {role} of {tenant_slug!r}")
        return 0
    finally:
        await db.close()

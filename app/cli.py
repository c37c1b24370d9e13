"""Operator commands that touch the database (``python -m app create-user``)."""

from __future__ import annotations

import sys

from sqlalchemy import select
from sqlmodel import col

from app.auth.accounts import add_local_user
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
            await add_local_user(
                s,
                username=username,
                password=password,
                tenant_slug=tenant_slug,
                role=role,
                platform_admin=platform_admin,
            )
            await s.commit()
        print(f"created {username!r} as {role} of {tenant_slug!r}")
        return 0
    finally:
        await db.close()

"""First start: create the admin user and the ``default`` tenant."""

from __future__ import annotations

import logging
import secrets
import sys

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.auth.accounts import add_local_user
from app.context import Services
from app.models.user import User

log = logging.getLogger("watchpost.bootstrap")


async def bootstrap_admin(services: Services) -> None:
    """If there are no users: admin (platform admin, owner of ``default``) from
    ADMIN_USERNAME / ADMIN_PASSWORD, or a generated password printed once."""
    settings = services.settings
    async with services.db.session() as s:
        if (await s.execute(select(func.count()).select_from(User))).scalar_one() > 0:
            return
        password = settings.admin_password or secrets.token_urlsafe(12)
        try:
            await add_local_user(
                s,
                username=settings.admin_username,
                password=password,
                tenant_slug="default",
                tenant_name="Default",
                role=services.policy.roles[-1],
                platform_admin=True,
            )
            await s.commit()
        except IntegrityError:  # another instance bootstrapped first
            await s.rollback()
            return
    if not settings.admin_password:
        # Printed once, on the first start only; not logged (logs are kept).
        print(
            f"\n  Watchpost admin created: username={settings.admin_username} password={password}\n"
            "  (set ADMIN_PASSWORD to choose it; this is shown only once)\n",
            file=sys.stderr,
            flush=True,
        )
    log.info("created admin user %r and tenant 'default'", settings.admin_username)

"""Per-tenant quotas on monitors, alert channels and API tokens.

The limits come from QUOTA_MONITORS, QUOTA_CHANNELS and QUOTA_API_TOKENS; a
platform administrator can set another limit for one tenant (TENANT_UPDATE,
stored on the tenant row, NULL = the setting). Creating beyond the limit is
CONFLICT (5): the tenant is in a state where the create is not allowed, and
retrying will not help until something is deleted or the limit is raised.

:func:`reserve` must run inside the creating transaction, before the insert.
It first writes the tenant row (a no-op update), which serialises every
create of the tenant on that row: on PostgreSQL a row lock held to commit, on
SQLite the database write lock. Two concurrent creates therefore cannot both
count N-1 and both insert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, NotFound
from app.models.base import utcnow
from app.models.channel import Channel
from app.models.monitor import Monitor
from app.models.tenant import Tenant
from app.models.token import ApiToken
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Resource:
    #: Key on the wire (TENANT_GET ``quotas``, TENANT_UPDATE ``quotas``) and in error data.
    name: str
    #: How the error message counts it ("monitors", "active API tokens").
    noun: str
    #: Settings attribute and Tenant override column (same name).
    field: str
    #: Environment variable, named in errors and docs.
    setting: str
    #: What the user can do to get under the quota.
    remedy: str


RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        Resource("monitors", "monitors", "quota_monitors", "QUOTA_MONITORS", "delete some"),
        Resource("channels", "alert channels", "quota_channels", "QUOTA_CHANNELS", "delete some"),
        Resource("api_tokens", "active API tokens", "quota_api_tokens", "QUOTA_API_TOKENS", "revoke some"),
    )
}


def limit(tenant: Tenant, settings: Settings, resource: str) -> int:
    field = RESOURCES[resource].field
    override = getattr(tenant, field)
    return int(getattr(settings, field) if override is None else override)


async def usage(session: AsyncSession, tenant_id: int, resource: str) -> int:
    """How many of ``resource`` count against the quota. Revoked and expired tokens do not:
    they can never be used again, and TOKEN_LIST keeps them for the record."""
    if resource == "monitors":
        stmt = select(func.count()).where(col(Monitor.tenant_id) == tenant_id)
    elif resource == "channels":
        stmt = select(func.count()).where(col(Channel.tenant_id) == tenant_id)
    else:
        stmt = select(func.count()).where(
            col(ApiToken.tenant_id) == tenant_id,
            col(ApiToken.revoked_at).is_(None),
            or_(col(ApiToken.expires_at).is_(None), col(ApiToken.expires_at) > utcnow()),
        )
    return int((await session.execute(stmt)).scalar_one())


async def summary(session: AsyncSession, tenant: Tenant, settings: Settings) -> dict[str, Any]:
    """TENANT_GET's ``quotas``: per resource the limit in force, the override and the usage."""
    assert tenant.id is not None
    return {
        name: {
            "limit": limit(tenant, settings, name),
            "override": getattr(tenant, r.field),
            "used": await usage(session, tenant.id, name),
            "setting": r.setting,
        }
        for name, r in RESOURCES.items()
    }


async def hold(session: AsyncSession, tenant_id: int) -> None:
    """Hold the tenant row until the transaction ends: every create of the tenant waits."""
    # A real write, not SELECT … FOR UPDATE: SQLite has no row locks, but a write takes its
    # database lock, and on PostgreSQL it is a row lock that does not block foreign-key checks.
    await session.execute(
        update(Tenant)
        .where(col(Tenant.id) == tenant_id)
        .values(name=Tenant.name)
        .execution_options(synchronize_session=False)
    )


async def reserve(
    session: AsyncSession, tenant_id: int, settings: Settings, resource: str, count: int = 1
) -> None:
    """Raise Conflict when the tenant has no room for ``count`` more ``resource``; otherwise hold
    the tenant row until the transaction ends, so the inserts that follow cannot overshoot."""
    await hold(session, tenant_id)
    tenant = await session.get(Tenant, tenant_id, populate_existing=True)
    if tenant is None:
        raise NotFound("the tenant no longer exists")
    quota = limit(tenant, settings, resource)
    used = await usage(session, tenant_id, resource)
    if used + count > quota:
        r = RESOURCES[resource]
        who = (
            "set for this tenant by a platform administrator"
            if getattr(tenant, r.field) is not None
            else r.setting
        )
        adding = f" and this request adds {count}" if count > 1 else ""
        raise Conflict(
            f"tenant {tenant.slug} has {used} {r.noun}{adding}, its quota ({who} = {quota}); "
            f"{r.remedy} or ask a platform administrator to raise it",
            resource=resource,
            quota=quota,
            used=used,
            setting=r.setting,
        )

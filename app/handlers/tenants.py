"""Tenants 710–713 and members 720–723.

TENANT_CREATE is for platform administrators, who become the new tenant's
owner. Members are managed by the tenant's admins; only an owner may grant or
take away the owner role, and the last owner cannot be removed or demoted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app import control, quotas
from app.alerting import schedule
from app.context import Context
from app.control import MemberRoleChanged, RevokeMembership
from app.errors import Conflict, InvalidData, NotFound, PermissionDenied
from app.models.base import iso, utcnow
from app.models.tenant import Membership, Tenant
from app.models.user import User
from app.protocol import PkgID, Request
from app.routing import ID, MAX_ID, PackageRouter, obj
from app.storage.pagination import PAGE_SCHEMA, Page, paginate

router = PackageRouter()

_SLUG = {"type": "string", "maxLength": 63, "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_ROLE = {"type": "string", "minLength": 1, "maxLength": 32}
#: A quota override; null goes back to the setting.
_QUOTA = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_ID}


def tenant_json(t: Tenant, role: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": t.id,
        "slug": t.slug,
        "name": t.name,
        "timezone": t.timezone or "UTC",
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
    }
    if role is not None:
        out["role"] = role
    return out


def member_json(m: Membership, u: User) -> dict[str, Any]:
    return {"user_id": u.id, "username": u.username, "role": m.role, "created_at": iso(m.created_at)}


@router.package(
    PkgID.TENANT_CREATE,
    schema=obj({"slug": _SLUG, "name": _NAME}, ["slug", "name"]),
    audit=True,
    response_example={"id": 2, "slug": "acme", "name": "Acme", "role": "owner"},
)
async def tenant_create(req: Request, ctx: Context) -> dict[str, Any]:
    """Create a tenant (platform administrators only); the creator becomes its owner."""
    if not ctx.identity.is_platform_admin:
        raise PermissionDenied("only platform administrators may create tenants")
    owner = ctx.services.policy.roles[-1]
    tenant = Tenant(slug=req.data["slug"], name=req.data["name"])
    try:
        async with ctx.tx() as s:
            s.add(tenant)
            await s.flush()
            s.add(Membership(tenant_id=tenant.id, user_id=ctx.identity.user_id, role=owner))  # type: ignore[arg-type]
            ctx.audit_target = str(tenant.id)
    except IntegrityError:
        raise Conflict(f"tenant slug {tenant.slug!r} is taken") from None
    return tenant_json(tenant, owner)


@router.package(
    PkgID.TENANT_LIST,
    schema=obj(PAGE_SCHEMA),
    response_example=[{"id": 1, "slug": "default", "role": "owner"}],
)
async def tenant_list(req: Request, ctx: Context) -> Page:
    """Tenants this user belongs to (all tenants for platform administrators)."""
    async with ctx.services.db.session() as s:
        if ctx.identity.is_platform_admin:
            stmt = select(Tenant).order_by(col(Tenant.id))
            rows, meta = await paginate(s, stmt, req.data)
            roles = dict(
                (
                    await s.execute(
                        select(col(Membership.tenant_id), col(Membership.role)).where(
                            col(Membership.user_id) == ctx.identity.user_id
                        )
                    )
                )
                .tuples()
                .all()
            )
            return Page([tenant_json(t, roles.get(t.id, ctx.services.policy.roles[-1])) for t in rows], meta)
        stmt2 = (
            select(Tenant, col(Membership.role))
            .join(Membership, col(Membership.tenant_id) == col(Tenant.id))
            .where(col(Membership.user_id) == ctx.identity.user_id)
            .order_by(col(Tenant.id))
        )
        page, per_page = int(req.data.get("page", 1)), int(req.data.get("per_page", 20))
        total = (await s.execute(select(func.count()).select_from(stmt2.subquery()))).scalar_one()
        pairs = (await s.execute(stmt2.offset((page - 1) * per_page).limit(per_page))).all()
    meta = {"page": page, "per_page": per_page, "total": total, "pages": (total + per_page - 1) // per_page}
    return Page([tenant_json(t, role) for t, role in pairs], meta)


async def _visible_tenant(s: AsyncSession, ctx: Context, tenant_id: int) -> Tenant:
    tenant = await s.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id}")
    if ctx.identity.is_platform_admin or tenant_id == ctx.identity.tenant_id:
        return tenant
    member = (
        await s.execute(
            select(col(Membership.id)).where(
                col(Membership.tenant_id) == tenant_id, col(Membership.user_id) == ctx.identity.user_id
            )
        )
    ).first()
    if member is None:
        raise NotFound(f"no tenant {tenant_id}")
    return tenant


@router.package(
    PkgID.TENANT_GET,
    schema=obj({"id": ID}),
    response_example={
        "id": 1,
        "slug": "default",
        "quotas": {"monitors": {"limit": 10000, "override": None, "used": 12, "setting": "QUOTA_MONITORS"}},
    },
)
async def tenant_get(req: Request, ctx: Context) -> dict[str, Any]:
    """One tenant (default: the connection's) with its quotas: limit in force, override, usage."""
    tenant_id = req.data.get("id") or ctx.tenant_id
    async with ctx.services.db.session() as s:
        tenant = await _visible_tenant(s, ctx, tenant_id)
        return {**tenant_json(tenant), "quotas": await quotas.summary(s, tenant, ctx.settings)}


@router.package(
    PkgID.TENANT_UPDATE,
    schema=obj(
        {
            "id": ID,
            "name": _NAME,
            "timezone": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
            "quotas": obj({name: _QUOTA for name in quotas.RESOURCES}),
        }
    ),
    audit=True,
    response_example={
        "id": 1,
        "name": "Renamed",
        "quotas": {"monitors": {"limit": 50000, "override": 50000}},
    },
)
async def tenant_update(req: Request, ctx: Context) -> dict[str, Any]:
    """Rename a tenant or set its ``timezone`` (IANA name; alert messages show times in it;
    null: UTC) (admins; default: the connection's) or, for platform administrators only,
    set its quotas (``{"monitors": 50000}``; null returns to the QUOTA_* setting)."""
    data = req.data
    if "name" not in data and "timezone" not in data and not data.get("quotas"):
        raise InvalidData(
            "nothing to change: send name, timezone and/or quotas",
            errors=[{"path": "data", "msg": "no change"}],
        )
    if data.get("timezone") is not None and not schedule.valid_timezone(data["timezone"]):
        raise InvalidData(
            "timezone: not an IANA timezone name (like Europe/Berlin)",
            errors=[{"path": "timezone", "msg": "not an IANA timezone name (like Europe/Berlin)"}],
        )
    tenant_id = data.get("id") or ctx.tenant_id
    if not ctx.identity.is_platform_admin:
        if tenant_id != ctx.tenant_id:
            raise PermissionDenied("only platform administrators may update another tenant")
        if "quotas" in data:
            raise PermissionDenied(
                "only platform administrators may change a tenant's quotas; ask one to raise them"
            )
    ctx.audit_target = str(tenant_id)
    async with ctx.tx() as s:
        tenant = await s.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id}")
        if "name" in data:
            tenant.name = data["name"]
        if "timezone" in data:
            tenant.timezone = data["timezone"]
        for name, value in (data.get("quotas") or {}).items():
            setattr(tenant, quotas.RESOURCES[name].field, value)
        tenant.updated_at = utcnow()
        await s.flush()
        summary = await quotas.summary(s, tenant, ctx.settings)
    return {**tenant_json(tenant), "quotas": summary}


@router.package(
    PkgID.MEMBER_LIST,
    schema=obj(PAGE_SCHEMA),
    response_example=[{"user_id": 1, "username": "admin", "role": "owner"}],
)
async def member_list(req: Request, ctx: Context) -> Page:
    """Members of the connection's tenant, oldest first."""
    async with ctx.services.db.session() as s:
        stmt = (
            select(Membership, User)
            .join(User, col(User.id) == col(Membership.user_id))
            .where(col(Membership.tenant_id) == ctx.tenant_id)
            .order_by(col(Membership.id))
        )
        page, per_page = int(req.data.get("page", 1)), int(req.data.get("per_page", 20))
        total = (
            await s.execute(select(func.count()).where(col(Membership.tenant_id) == ctx.tenant_id))
        ).scalar_one()
        rows = (await s.execute(stmt.offset((page - 1) * per_page).limit(per_page))).all()
    meta = {"page": page, "per_page": per_page, "total": total, "pages": (total + per_page - 1) // per_page}
    return Page([member_json(m, u) for m, u in rows], meta)


def _check_grant(ctx: Context, role: str) -> None:
    policy = ctx.services.policy
    if role not in policy.roles:
        raise InvalidData(
            f"unknown role {role!r}; one of {list(policy.roles)}",
            errors=[{"path": "role", "msg": "unknown role"}],
        )
    if policy.rank(role) > policy.rank(ctx.identity.role):
        raise PermissionDenied(f"you cannot grant role {role!r}, above your own {ctx.identity.role!r}")


async def _owners(s: AsyncSession, ctx: Context) -> int:
    owner = ctx.services.policy.roles[-1]
    return int(
        (
            await s.execute(
                select(func.count()).where(
                    col(Membership.tenant_id) == ctx.tenant_id, col(Membership.role) == owner
                )
            )
        ).scalar_one()
    )


async def _member(s: AsyncSession, ctx: Context, user_id: int) -> Membership:
    m = (
        await s.execute(
            select(Membership).where(
                col(Membership.tenant_id) == ctx.tenant_id, col(Membership.user_id) == user_id
            )
        )
    ).scalar_one_or_none()
    if m is None:
        raise NotFound(f"user {user_id} is not a member of this tenant")
    return m


@router.package(
    PkgID.MEMBER_ADD,
    schema=obj(
        {"username": {"type": "string", "minLength": 1, "maxLength": 150}, "role": _ROLE},
        ["username", "role"],
    ),
    audit=True,
    response_example={"user_id": 2, "username": "alice", "role": "editor"},
)
async def member_add(req: Request, ctx: Context) -> dict[str, Any]:
    """Add an existing user to this tenant with a role."""
    _check_grant(ctx, req.data["role"])
    try:
        async with ctx.tx() as s:
            user = (
                await s.execute(select(User).where(col(User.username) == req.data["username"]))
            ).scalar_one_or_none()
            if user is None:
                raise NotFound(
                    f"no user {req.data['username']!r}; create it first (python -m app create-user)"
                )
            m = Membership(tenant_id=ctx.tenant_id, user_id=user.id, role=req.data["role"])  # type: ignore[arg-type]
            s.add(m)
            await s.flush()
            ctx.audit_target = str(user.id)
    except IntegrityError:
        raise Conflict(f"{req.data['username']!r} is already a member of this tenant") from None
    return member_json(m, user)


@router.package(
    PkgID.MEMBER_UPDATE,
    schema=obj({"user_id": ID, "role": _ROLE}, ["user_id", "role"]),
    audit=True,
    response_example={"user_id": 2, "username": "alice", "role": "admin"},
)
async def member_update(req: Request, ctx: Context) -> dict[str, Any]:
    """Change a member's role; their live connections to this tenant take it at once (EVENT_ROLE_CHANGED)."""
    _check_grant(ctx, req.data["role"])
    owner = ctx.services.policy.roles[-1]
    ctx.audit_target = str(req.data["user_id"])
    async with ctx.tx() as s:
        m = await _member(s, ctx, req.data["user_id"])
        if m.role == owner and ctx.identity.role != owner:
            raise PermissionDenied("only an owner may change an owner's role")
        if m.role == owner and req.data["role"] != owner and await _owners(s, ctx) <= 1:
            raise Conflict("the tenant's last owner cannot be demoted; make someone else owner first")
        changed = m.role != req.data["role"]
        m.role = req.data["role"]
        user = await s.get(User, m.user_id)
        assert user is not None
    if changed:
        await control.publish(
            ctx.services.broker, MemberRoleChanged(req.data["user_id"], ctx.tenant_id, req.data["role"])
        )
    return member_json(m, user)


@router.package(
    PkgID.MEMBER_REMOVE,
    schema=obj({"user_id": ID}, ["user_id"]),
    audit=True,
    response_example={"user_id": 2, "removed": True},
)
async def member_remove(req: Request, ctx: Context) -> dict[str, Any]:
    """Remove a member; their live connections to this tenant are closed."""
    owner = ctx.services.policy.roles[-1]
    ctx.audit_target = str(req.data["user_id"])
    async with ctx.tx() as s:
        m = await _member(s, ctx, req.data["user_id"])
        if m.role == owner and ctx.identity.role != owner:
            raise PermissionDenied("only an owner may remove an owner")
        if m.role == owner and await _owners(s, ctx) <= 1:
            raise Conflict("the tenant's last owner cannot be removed")
        await s.delete(m)
    await control.publish(ctx.services.broker, RevokeMembership(req.data["user_id"], ctx.tenant_id))
    return {"user_id": req.data["user_id"], "removed": True}

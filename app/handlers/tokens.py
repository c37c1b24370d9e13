"""API tokens 700–702. The secret is shown once; only its SHA-256 is stored."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from app import control, quotas
from app.auth.passwords import hash_secret, new_secret
from app.client_time import parse_time
from app.context import Context
from app.control import RevokeToken
from app.errors import Conflict, InvalidData, NotFound, PermissionDenied
from app.models.base import iso, utcnow
from app.models.token import ApiToken
from app.models.user import User
from app.protocol import PkgID, Request
from app.routing import ID, PackageRouter, obj
from app.storage.pagination import PAGE_SCHEMA, Page, paginate

router = PackageRouter()

_ROLE = {"type": "string", "minLength": 1, "maxLength": 32}


def token_json(tok: ApiToken, creator: str | None = None) -> dict[str, Any]:
    return {
        "id": tok.id,
        "name": tok.name,
        "role": tok.role,
        "prefix": tok.prefix,
        "created_by": creator,
        "created_at": iso(tok.created_at),
        "expires_at": iso(tok.expires_at),
        "revoked_at": iso(tok.revoked_at),
        "last_used_at": iso(tok.last_used_at),
    }


@router.package(
    PkgID.TOKEN_CREATE,
    schema=obj(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "role": _ROLE,
            "expires_at": {"type": ["string", "null"], "maxLength": 40},
        },
        ["name", "role"],
    ),
    audit=True,
    response_example={"id": 1, "name": "ci", "role": "viewer", "token": "wpt_…", "expires_at": None},
)
async def token_create(req: Request, ctx: Context) -> dict[str, Any]:
    """Create an API token for this tenant; the secret is in the answer and nowhere else."""
    policy = ctx.services.policy
    role = req.data["role"]
    if role not in policy.roles:
        raise InvalidData(
            f"unknown role {role!r}; one of {list(policy.roles)}",
            errors=[{"path": "role", "msg": "unknown role"}],
        )
    if policy.rank(role) > policy.rank(ctx.identity.role):
        raise PermissionDenied(f"a token cannot carry role {role!r}, above your own {ctx.identity.role!r}")
    expires_at = None
    if req.data.get("expires_at"):
        expires_at = parse_time(req.data["expires_at"], "expires_at")
        if expires_at <= utcnow():
            raise InvalidData(
                "expires_at must be in the future", errors=[{"path": "expires_at", "msg": "in the past"}]
            )
    secret = new_secret("wpt_")
    tok = ApiToken(
        tenant_id=ctx.tenant_id,
        user_id=ctx.identity.user_id,
        name=req.data["name"],
        role=role,
        token_hash=hash_secret(secret),
        prefix=secret[:10],
        expires_at=expires_at,
    )
    try:
        async with ctx.tx() as s:
            await quotas.reserve(s, ctx.tenant_id, ctx.settings, "api_tokens")
            s.add(tok)
            await s.flush()
            ctx.audit_target = str(tok.id)
    except IntegrityError:
        raise Conflict(f"a token named {tok.name!r} already exists in this tenant") from None
    return {**token_json(tok, ctx.identity.username), "token": secret}


@router.package(
    PkgID.TOKEN_LIST,
    schema=obj({**PAGE_SCHEMA, "include_revoked": {"type": "boolean"}}),
    response_example=[{"id": 1, "name": "ci", "role": "viewer", "prefix": "wpt_AbCdEf"}],
)
async def token_list(req: Request, ctx: Context) -> Page:
    """This tenant's tokens (never their secrets), newest first."""
    stmt = select(ApiToken).where(col(ApiToken.tenant_id) == ctx.tenant_id).order_by(col(ApiToken.id).desc())
    if not req.data.get("include_revoked", True):
        stmt = stmt.where(col(ApiToken.revoked_at).is_(None))
    async with ctx.services.db.session() as s:
        rows, meta = await paginate(s, stmt, req.data)
        users = {
            u.id: u.username
            for u in (
                await s.execute(select(User).where(col(User.id).in_({r.user_id for r in rows})))
            ).scalars()
        }
    return Page([token_json(r, users.get(r.user_id)) for r in rows], meta)


@router.package(
    PkgID.TOKEN_REVOKE,
    schema=obj({"id": ID}, ["id"]),
    audit=True,
    response_example={"id": 1, "revoked_at": "2026-11-22T10:00:00.000Z"},
)
async def token_revoke(req: Request, ctx: Context) -> dict[str, Any]:
    """Revoke a token: new connections are refused and live ones are closed (4001) on every instance."""
    ctx.audit_target = str(req.data["id"])
    async with ctx.tx() as s:
        tok = await s.get(ApiToken, req.data["id"])
        if tok is None or tok.tenant_id != ctx.tenant_id:
            raise NotFound(f"no token {req.data['id']} in this tenant")
        if tok.revoked_at is None:
            tok.revoked_at = utcnow()
    assert tok.id is not None
    await control.publish(ctx.services.broker, RevokeToken(tok.id))
    return {"id": tok.id, "revoked_at": iso(tok.revoked_at)}

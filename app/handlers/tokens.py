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
from app.models.probe import LOCAL, LOCATION_PATTERN, Location
from app.models.token import ApiToken
from app.models.user import User
from app.protocol import PkgID, Request
from app.rbac import PROBE
from app.routing import ID, PackageRouter, obj
from app.storage.pagination import PAGE_SCHEMA, Page, paginate

router = PackageRouter()

_ROLE = {"type": "string", "minLength": 1, "maxLength": 32}


def token_json(tok: ApiToken, creator: str | None = None, location: str | None = None) -> dict[str, Any]:
    return {
        "id": tok.id,
        "name": tok.name,
        "role": tok.role,
        "location": location,
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
            "location": {"type": "string", "maxLength": 64, "pattern": LOCATION_PATTERN},
        },
        ["name", "role"],
    ),
    audit=True,
    response_example={"id": 1, "name": "ci", "role": "viewer", "token": "wpt_…", "expires_at": None},
)
async def token_create(req: Request, ctx: Context) -> dict[str, Any]:
    """Create an API token for this tenant; the secret is in the answer and nowhere else.

    Role ``probe`` (docs/probes.md) needs ``location``, the place its probe checks from
    (created on first use); the token may call the probe packages and nothing else.
    """
    policy = ctx.services.policy
    role = req.data["role"]
    location = req.data.get("location")
    if role != PROBE and role not in policy.roles:
        raise InvalidData(
            f"unknown role {role!r}; one of {[*policy.roles, PROBE]}",
            errors=[{"path": "role", "msg": "unknown role"}],
        )
    if role == PROBE and location is None:
        raise InvalidData(
            "a probe token needs the location its probe checks from",
            errors=[{"path": "location", "msg": "required for role 'probe'"}],
        )
    if role != PROBE and location is not None:
        raise InvalidData(
            "only a probe token has a location",
            errors=[{"path": "location", "msg": "only with role 'probe'"}],
        )
    if location == LOCAL:
        raise InvalidData(
            f"{LOCAL!r} is the server's own collector; name the probe's location otherwise",
            errors=[{"path": "location", "msg": "reserved"}],
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
            if location is not None:
                tok.location_id = await _location_id(s, ctx.tenant_id, location)
            s.add(tok)
            await s.flush()
            ctx.audit_target = str(tok.id)
    except IntegrityError:
        raise Conflict(f"a token named {tok.name!r} already exists in this tenant") from None
    return {**token_json(tok, ctx.identity.username, location), "token": secret}


async def _location_id(s: Any, tenant_id: int, name: str) -> int:
    """The id of the tenant's location ``name``, created if it is new."""
    found = await s.scalar(
        select(col(Location.id)).where(col(Location.tenant_id) == tenant_id, col(Location.name) == name)
    )
    if found is not None:
        return int(found)
    loc = Location(tenant_id=tenant_id, name=name)
    s.add(loc)
    await s.flush()
    assert loc.id is not None
    return loc.id


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
        wanted = {r.location_id for r in rows if r.location_id is not None}
        places = {}
        if wanted:
            places = {
                loc.id: loc.name
                for loc in (await s.execute(select(Location).where(col(Location.id).in_(wanted)))).scalars()
            }
    return Page(
        [
            token_json(r, users.get(r.user_id), places.get(r.location_id) if r.location_id else None)
            for r in rows
        ],
        meta,
    )


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

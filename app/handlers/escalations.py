"""Escalation policies 420–423: who hears about an incident, and when, until someone acknowledges.

A policy is a list of steps (``after`` minutes since the incident opened, the
``channels`` to notify then) and ``repeat_every`` minutes to re-notify the last
step's channels until the incident is acknowledged or resolved. A monitor names
its policy in ``escalation_policy``; monitors that name none use the tenant's
``default`` policy. The schedule itself runs in ``app.alerting.escalation``.

Every query is scoped to the connection's tenant; another tenant's policy (or
channel) answers exactly like a missing one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.alerting.channels import unknown_channel_ids
from app.context import Context
from app.errors import Conflict, InvalidData, NotFound
from app.models.base import iso, utcnow
from app.models.escalation import EscalationPolicy
from app.models.monitor import Monitor
from app.protocol import PkgID, Request
from app.routing import ID, PackageRouter, obj
from app.storage.pagination import PAGE_SCHEMA, Page, paginate

router = PackageRouter()

#: A week, in minutes: the longest wait before a step and the longest repeat period.
MAX_MINUTES = 7 * 24 * 60
MAX_STEPS = 10
#: Policies one tenant may keep (each is read when its monitors' incidents open).
MAX_POLICIES = 100

STEP_SCHEMA = obj(
    {
        # Minutes since the incident opened; fractions are allowed (0.5 = 30 s).
        "after": {"type": "number", "minimum": 0, "maximum": MAX_MINUTES},
        "channels": {"type": "array", "minItems": 1, "maxItems": 20, "items": ID},
    },
    ["after", "channels"],
)
POLICY_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "steps": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS, "items": STEP_SCHEMA},
    "repeat_every": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_MINUTES},
    "default": {"type": "boolean"},
}

_EXAMPLE = {
    "id": 1,
    "name": "on-call",
    "steps": [{"after": 0, "channels": [1]}, {"after": 15, "channels": [2, 3]}],
    "repeat_every": 30,
    "default": False,
    "monitors": [4, 7],
}


def policy_json(policy: EscalationPolicy, monitors: list[int] | None = None) -> dict[str, Any]:
    return {
        "id": policy.id,
        "name": policy.name,
        "steps": [{"after": s["after"], "channels": list(s["channels"])} for s in policy.steps],
        "repeat_every": policy.repeat_every,
        "default": policy.is_default,
        "monitors": monitors or [],
        "created_at": iso(policy.created_at),
        "updated_at": iso(policy.updated_at),
    }


async def _load(session: AsyncSession, ctx: Context, policy_id: int) -> EscalationPolicy:
    policy = await session.get(EscalationPolicy, policy_id)
    if policy is None or policy.tenant_id != ctx.tenant_id:
        raise NotFound(f"no escalation policy {policy_id} in this tenant")
    return policy


async def _validate_steps(session: AsyncSession, ctx: Context, steps: list[dict[str, Any]]) -> None:
    errors = []
    for i in range(1, len(steps)):
        if steps[i]["after"] < steps[i - 1]["after"]:
            errors.append(
                {
                    "path": f"steps.{i}.after",
                    "msg": "steps must be in order: after is below the previous step's",
                }
            )
    for i, step in enumerate(steps):
        if len(set(step["channels"])) != len(step["channels"]):
            errors.append({"path": f"steps.{i}.channels", "msg": "a channel is listed twice"})
        unknown = await unknown_channel_ids(session, ctx.tenant_id, step["channels"])
        if unknown:
            errors.append({"path": f"steps.{i}.channels", "msg": f"unknown channel ids {unknown}"})
    if errors:
        raise InvalidData(
            f"invalid escalation policy: {errors[0]['path']}: {errors[0]['msg']}", errors=errors
        )


async def _make_default(session: AsyncSession, ctx: Context, policy: EscalationPolicy) -> None:
    """One default per tenant: this one, and no other."""
    await session.execute(
        update(EscalationPolicy)
        .where(
            col(EscalationPolicy.tenant_id) == ctx.tenant_id,
            col(EscalationPolicy.is_default).is_(True),
            col(EscalationPolicy.id) != policy.id,
        )
        .values(is_default=False)
        .execution_options(synchronize_session=False)
    )


async def _users(session: AsyncSession, ctx: Context, policy_ids: list[int]) -> dict[int, list[int]]:
    """policy id -> ids of the tenant's monitors that name it."""
    if not policy_ids:
        return {}
    rows = await session.execute(
        select(col(Monitor.escalation_policy), col(Monitor.id))
        .where(col(Monitor.tenant_id) == ctx.tenant_id, col(Monitor.escalation_policy).in_(policy_ids))
        .order_by(col(Monitor.id))
    )
    found: dict[int, list[int]] = {}
    for pid, mid in rows.all():
        found.setdefault(int(pid or 0), []).append(int(mid or 0))
    return found


def _conflict(name: str) -> Conflict:
    return Conflict(f"an escalation policy named {name!r} already exists in this tenant; pick another name")


@router.package(
    PkgID.ESCALATION_CREATE,
    schema=obj(dict(POLICY_FIELDS), ["name", "steps"]),
    audit=True,
    response_example=_EXAMPLE,
)
async def escalation_create(req: Request, ctx: Context) -> dict[str, Any]:
    """Create an escalation policy; ``default: true`` makes it the tenant's default."""
    data = req.data
    try:
        async with ctx.tx() as s:
            count = await s.scalar(
                select(func.count())
                .select_from(EscalationPolicy)
                .where(col(EscalationPolicy.tenant_id) == ctx.tenant_id)
            )
            if (count or 0) >= MAX_POLICIES:
                raise InvalidData(
                    f"this tenant has {MAX_POLICIES} escalation policies, the most it may keep; "
                    "delete or reuse one"
                )
            await _validate_steps(s, ctx, data["steps"])
            policy = EscalationPolicy(
                tenant_id=ctx.tenant_id,
                name=data["name"],
                steps=[{"after": st["after"], "channels": st["channels"]} for st in data["steps"]],
                repeat_every=data.get("repeat_every"),
                is_default=bool(data.get("default", False)),
            )
            s.add(policy)
            await s.flush()
            ctx.audit_target = str(policy.id)
            if policy.is_default:
                await _make_default(s, ctx, policy)
    except IntegrityError:
        raise _conflict(data["name"]) from None
    return policy_json(policy)


@router.package(
    PkgID.ESCALATION_LIST,
    schema=obj({**PAGE_SCHEMA}),
    response_example=[_EXAMPLE],
)
async def escalation_list(req: Request, ctx: Context) -> Page:
    """This tenant's escalation policies in id order, each with the monitors that name it."""
    stmt = (
        select(EscalationPolicy)
        .where(col(EscalationPolicy.tenant_id) == ctx.tenant_id)
        .order_by(col(EscalationPolicy.id))
    )
    async with ctx.services.db.session() as s:
        rows, meta = await paginate(s, stmt, req.data)
        users = await _users(s, ctx, [int(r.id or 0) for r in rows])
    return Page([policy_json(r, users.get(int(r.id or 0))) for r in rows], meta)


@router.package(
    PkgID.ESCALATION_UPDATE,
    schema=obj({"id": ID, **POLICY_FIELDS}, ["id"]),
    audit=True,
    response_example=_EXAMPLE,
)
async def escalation_update(req: Request, ctx: Context) -> dict[str, Any]:
    """Change a policy. Incidents already escalating keep the steps they started with."""
    data = req.data
    ctx.audit_target = str(data["id"])
    try:
        async with ctx.tx() as s:
            policy = await _load(s, ctx, data["id"])
            if "steps" in data:
                await _validate_steps(s, ctx, data["steps"])
                policy.steps = [{"after": st["after"], "channels": st["channels"]} for st in data["steps"]]
            if "name" in data:
                policy.name = data["name"]
            if "repeat_every" in data:
                policy.repeat_every = data["repeat_every"]
            if "default" in data:
                policy.is_default = bool(data["default"])
            policy.updated_at = utcnow()
            await s.flush()
            if policy.is_default:
                await _make_default(s, ctx, policy)
            users = await _users(s, ctx, [data["id"]])
    except IntegrityError:
        raise _conflict(str(data.get("name"))) from None
    return policy_json(policy, users.get(data["id"]))


@router.package(
    PkgID.ESCALATION_DELETE,
    schema=obj({"id": ID}, ["id"]),
    audit=True,
    response_example={"id": 1, "deleted": True, "unlinked_monitors": [4, 7]},
)
async def escalation_delete(req: Request, ctx: Context) -> dict[str, Any]:
    """Delete a policy; monitors that named it fall back to the tenant's default."""
    policy_id = req.data["id"]
    ctx.audit_target = str(policy_id)
    async with ctx.tx() as s:
        policy = await _load(s, ctx, policy_id)
        users = (await _users(s, ctx, [policy_id])).get(policy_id, [])
        if users:
            await s.execute(
                update(Monitor)
                .where(col(Monitor.tenant_id) == ctx.tenant_id, col(Monitor.escalation_policy) == policy_id)
                .values(escalation_policy=None)
                .execution_options(synchronize_session=False)
            )
        await s.delete(policy)
    return {"id": policy_id, "deleted": True, "unlinked_monitors": users}

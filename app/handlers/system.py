"""Session and system packages 1–6: PING, WHOAMI, AUTH_REFRESH, SUBSCRIBE, UNSUBSCRIBE, SERVER_INFO."""

from __future__ import annotations

import time
from typing import Any

from app import __version__
from app.auth.errors import AuthError
from app.context import Context
from app.errors import InvalidData, Unauthenticated
from app.protocol import PROTOCOL_VERSION, SUBPROTOCOL, PkgID, Request
from app.routing import PackageRouter, obj

router = PackageRouter()
#: A topic's seq (Redis stream ids are 64-bit).
_SEQ = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}

_TOPIC = {"type": "string", "minLength": 1, "maxLength": 64}
#: Topic lists and ``since`` maps hold at most WS_MAX_TOPICS' default; the handler applies
#: the configured value, the schema keeps a rejection's cost small.
_MAX_TOPICS = 100


@router.package(PkgID.PING, response_example={"pong": True, "server_time": 1764000000.0})
async def ping(req: Request, ctx: Context) -> dict[str, Any]:
    """Liveness round trip; data is ignored."""
    return {"pong": True, "server_time": time.time()}


@router.package(
    PkgID.WHOAMI,
    schema=obj({}),
    response_example={
        "user": "admin",
        "tenant": "default",
        "roles": ["owner"],
        "platform_admin": True,
        "packages": [1, 2, 3, 4, 5, 6, 100],
    },
)
async def whoami(req: Request, ctx: Context) -> dict[str, Any]:
    """Who this connection acts as, and which packages its role may call.

    ``packages`` is the router's own answer (actions.json) for this role, so a
    client can show only what it may use without knowing the role rules.
    """
    ident = ctx.identity
    policy = ctx.services.policy
    return {
        "user": ident.username,
        "user_id": ident.user_id,
        "tenant": ident.tenant_slug,
        "tenant_id": ident.tenant_id,
        "roles": [ident.role] if ident.role else [],
        "platform_admin": ident.is_platform_admin,
        "auth": ident.kind,
        "expires_at": ident.expires_at,
        "packages": policy.allowed_packages(ident.role, ctx.services.router.specs),
    }


@router.package(
    PkgID.AUTH_REFRESH,
    schema=obj({"token": {"type": "string", "minLength": 1, "maxLength": 8192}}, ["token"]),
    response_example={
        "expires_at": 1764000900.0,
        "expires_in": 900.0,
        "roles": ["viewer"],
        "dropped_topics": [],
    },
)
async def auth_refresh(req: Request, ctx: Context) -> dict[str, Any]:
    """Replace the connection's credential with a fresh token for the same subject.

    The connection takes the member's current role (read when the token is
    checked); topics that role may no longer read are unsubscribed at once and
    listed in ``dropped_topics`` (``[]`` when none).
    """
    session = ctx.session
    if session is None:
        raise InvalidData("AUTH_REFRESH needs a connection")
    old = session.identity
    try:
        new = await ctx.services.authenticator.authenticate(req.data["token"], old.tenant_slug, fresh=True)
    except AuthError as exc:
        raise Unauthenticated(f"refresh refused: {exc}; the connection keeps its current token") from None
    if new.user_id != old.user_id or new.tenant_id != old.tenant_id:
        raise Unauthenticated(
            "refresh refused: the token is for another user; the connection keeps its current token"
        )
    dropped = await session.apply_identity(new)
    left = None if new.expires_at is None else round(new.expires_at - time.time(), 3)
    return {
        "expires_at": new.expires_at,
        "expires_in": left,
        "roles": [new.role] if new.role else [],
        "dropped_topics": dropped,
    }


@router.package(
    PkgID.SUBSCRIBE,
    schema=obj(
        {
            "topics": {"type": "array", "items": _TOPIC, "minItems": 1, "maxItems": _MAX_TOPICS},
            "since": {
                "type": "object",
                "maxProperties": _MAX_TOPICS,
                "propertyNames": _TOPIC,
                "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            },
        },
        ["topics"],
    ),
    response_example={"topics": {"monitors": {"seq": 1207, "recovered": True, "replayed": 3}}},
)
async def subscribe(req: Request, ctx: Context) -> dict[str, Any]:
    """Receive events of tenant topics; ``since`` replays what was missed."""
    if ctx.session is None:
        raise InvalidData("SUBSCRIBE needs a connection")
    return await ctx.session.subscribe(list(req.data["topics"]), dict(req.data.get("since") or {}))


@router.package(
    PkgID.UNSUBSCRIBE,
    schema=obj(
        {"topics": {"type": "array", "items": _TOPIC, "minItems": 1, "maxItems": _MAX_TOPICS}}, ["topics"]
    ),
    response_example={"unsubscribed": ["monitors"]},
)
async def unsubscribe(req: Request, ctx: Context) -> dict[str, Any]:
    """Stop receiving topics."""
    if ctx.session is None:
        raise InvalidData("UNSUBSCRIBE needs a connection")
    return await ctx.session.unsubscribe(list(req.data["topics"]))


@router.package(
    PkgID.SERVER_INFO,
    schema=obj({}),
    response_example={"version": "0.1.0", "protocol": 1, "packages": [{"pkg_id": 1, "name": "PING"}]},
)
async def server_info(req: Request, ctx: Context) -> dict[str, Any]:
    """Version, protocol and every registered package."""
    specs = ctx.services.router.specs
    return {
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "subprotocol": SUBPROTOCOL,
        "packages": [{"pkg_id": pid, "name": specs[pid].name} for pid in sorted(specs)],
        "limits": {
            "max_frame_bytes": ctx.settings.ws_max_frame_bytes,
            "max_in_flight": ctx.settings.ws_max_in_flight,
            "handler_timeout": ctx.settings.ws_handler_timeout,
            "max_topics": ctx.settings.ws_max_topics,
        },
    }

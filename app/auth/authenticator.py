"""Turn a bearer credential plus an optional tenant slug into an :class:`Identity`.

Used at the WebSocket handshake, by AUTH_REFRESH, and by HTTP routes that need
a user. Three kinds of credential:

- ``wpt_…`` API tokens: looked up by SHA-256; bound to one tenant; their role is
  capped at the creator's current role in that tenant.
- local JWTs (``iss == "watchpost"``), checked with the server key and their
  session (a logged-out session is refused);
- Keycloak JWTs, verified locally against the realm's JWKS (``app.auth.keycloak.provider``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import jwt
from sqlalchemy import Executable, and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.credential_cache import CredentialCache
from app.auth.errors import InvalidToken, NotAMember, TokenExpired
from app.auth.identity import Identity
from app.auth.local import ISSUER, LocalAuth
from app.auth.passwords import hash_secret
from app.models.base import utcnow
from app.models.probe import Location
from app.models.tenant import Membership, Tenant
from app.models.token import ApiToken
from app.models.user import AuthSession, User
from app.rbac import Policy
from app.storage.db import Database

API_TOKEN_PREFIX = "wpt_"
#: JWTs (base64url and dots) and API tokens are printable ASCII without spaces.
_NOT_TOKEN_CHAR = re.compile(r"[^\x21-\x7e]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Longest tenant slug the database holds.
_SLUG_MAX = 64


class ExternalVerifier(Protocol):
    """What the Keycloak mode plugs in: verify a JWT and return the user to act as."""

    async def identify(self, session: AsyncSession, token: str) -> tuple[User, str | None, float | None]:
        """Verify ``token`` and upsert its user; returns (user, session id, expiry)."""
        ...


class Authenticator:
    def __init__(
        self,
        db: Database,
        local: LocalAuth,
        policy: Policy,
        external: ExternalVerifier | None = None,
        cache: CredentialCache | None = None,
    ) -> None:
        self.db = db
        self.local = local
        self.policy = policy
        self.external = external
        #: Local sessions and API tokens already resolved (Keycloak tokens are not cached:
        #: their sessions end at the identity provider, which sends no control message first).
        self.cache = cache if cache is not None else CredentialCache(0)
        #: Database reads under way, by credential key, with the cache generation they began
        #: in: a reconnect storm brings the same credential many times at once (tabs, agents
        #: sharing an API token), and all but the first wait for its read instead of repeating it.
        self._reading: dict[tuple[str | None, ...], tuple[int, asyncio.Future[Identity]]] = {}

    async def authenticate(self, token: str, tenant_slug: str | None, *, fresh: bool = False) -> Identity:
        """Raises InvalidToken / TokenExpired (close 4001) or NotAMember (close 4003).

        ``fresh`` reads the database even when the credential is cached (and caches what
        it read): AUTH_REFRESH promises the member's current role, including a change no
        control message announced.
        """
        if not token:
            raise InvalidToken("no credential: send 'Authorization: Bearer <token>'")
        # Checked before any lookup: a NUL reaching PostgreSQL is a server error, not a 4xxx.
        if _NOT_TOKEN_CHAR.search(token):
            raise InvalidToken("the token contains characters no token has (controls, spaces, non-ASCII)")
        if tenant_slug is not None and (len(tenant_slug) > _SLUG_MAX or _CONTROL.search(tenant_slug)):
            raise NotAMember(
                f"?tenant= must be a tenant slug: at most {_SLUG_MAX} characters, no control characters"
            )
        if token.startswith(API_TOKEN_PREFIX):
            return await self._api_token(token, tenant_slug, fresh)
        # A local JWT this instance checked before: its signature cannot have changed, and
        # the entry dies with the token's expiry, so it is neither decoded nor verified again.
        key = ("local", hash_secret(token), tenant_slug)
        cached = self._cached(key, fresh)
        if cached is not None:
            return cached
        if _issuer(token) == ISSUER:
            claims = self.local.verify(token)
            return await self._once(key, fresh, lambda: self._local(key, claims, tenant_slug))
        if self.external is None:
            raise InvalidToken("invalid token: unknown issuer")
        async with self.db.session() as s:
            user, session_id, expires_at = await self.external.identify(s, token)
            tenant, role = await self._tenant_and_role(s, user, tenant_slug)
            return _identity(user, tenant, role, "keycloak", session_id, expires_at)

    async def _once(
        self, key: tuple[str | None, ...], fresh: bool, read: Callable[[], Awaitable[Identity]]
    ) -> Identity:
        """``read()``, or the result of the same read already under way for ``key``.

        Joined only when no control message arrived since that read began (its answer may
        predate a revocation) and not for ``fresh`` reads. Every caller gets its own copy,
        and a refusal is raised to each of them."""
        generation = self.cache.generation
        under_way = self._reading.get(key)
        if not fresh and under_way is not None and under_way[0] == generation:
            try:
                return dataclasses.replace(await asyncio.shield(under_way[1]))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not under_way[1].cancelled() or (task is not None and task.cancelling()):
                    raise
                # The first reader's handshake went away mid-read: read for ourselves.
        done: asyncio.Future[Identity] = asyncio.get_running_loop().create_future()
        if not fresh:
            self._reading[key] = (generation, done)
        try:
            identity = await read()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                done.cancel()
            else:
                done.set_exception(exc)
                done.exception()  # retrieved: nobody may be waiting
            raise
        else:
            done.set_result(identity)
            return identity
        finally:
            if self._reading.get(key, (0, None))[1] is done:
                del self._reading[key]

    def _cached(self, key: tuple[str | None, ...], fresh: bool) -> Identity | None:
        if fresh:
            # What the fresh read finds replaces the entry, and a refusal must not leave it behind.
            self.cache.discard(key)
            return None
        return self.cache.get(key)

    async def _local(
        self, key: tuple[str | None, ...], claims: dict[str, Any], tenant_slug: str | None
    ) -> Identity:
        """A local JWT whose signature and expiry were checked: its session, user and membership."""
        session_id, expires_at = str(claims["sid"]), float(claims["exp"])
        generation = self.cache.generation
        try:
            sid, user_id = int(session_id), int(claims["sub"])
        except ValueError:
            raise InvalidToken("the session was logged out; log in again") from None
        # Session, user and membership in one autocommit statement on the read pool (no
        # pre-ping, no BEGIN/ROLLBACK): this runs on every uncached handshake.
        params = {"sid": sid, "slug": tenant_slug} if tenant_slug else {"sid": sid}
        row = await self.db.read_first(_local_read(bool(tenant_slug)), params)
        if row is None or row.revoked_at is not None or row.session_expires_at <= utcnow():
            raise InvalidToken("the session was logged out; log in again")
        if row.user_id != user_id or not row.is_active:
            raise InvalidToken("the user no longer exists")
        if row.tenant_id is not None:
            tenant_id, slug, role = row.tenant_id, row.tenant_slug, row.role
        elif row.is_platform_admin:
            # Platform administrators manage every tenant as its owner (rare: the long way).
            async with self.db.session() as s:
                user = await s.get(User, user_id)
                if user is None:
                    raise InvalidToken("the user no longer exists")
                tenant, role = await self._tenant_and_role(s, user, tenant_slug)
            tenant_id, slug = (tenant.id, tenant.slug) if tenant else (None, None)
        elif tenant_slug:
            raise NotAMember(f"not a member of tenant {tenant_slug!a}")
        else:
            raise NotAMember("the user is not a member of any tenant")
        identity = Identity(
            user_id=user_id,
            username=row.username,
            subject=row.external_subject or str(user_id),
            tenant_id=tenant_id,
            tenant_slug=slug,
            role=role,
            is_platform_admin=row.is_platform_admin,
            kind="local",
            session_id=session_id,
            expires_at=expires_at,
        )
        self.cache.put(key, identity, min(expires_at, row.session_expires_at.timestamp()), generation)
        return identity

    async def _tenant_and_role(
        self, s: AsyncSession, user: User, slug: str | None
    ) -> tuple[Tenant | None, str | None]:
        stmt = (
            select(Tenant, col(Membership.role))
            .join(Membership, col(Membership.tenant_id) == col(Tenant.id))
            .where(col(Membership.user_id) == user.id)
            .order_by(col(Membership.id))
        )
        if slug:
            row = (await s.execute(stmt.where(col(Tenant.slug) == slug))).first()
            if row is not None:
                return row[0], row[1]
            if user.is_platform_admin:
                # Platform administrators manage every tenant as its owner.
                tenant = (
                    await s.execute(select(Tenant).where(col(Tenant.slug) == slug))
                ).scalar_one_or_none()
                if tenant is not None:
                    return tenant, self.policy.roles[-1]
            raise NotAMember(f"not a member of tenant {slug!a}")
        row = (await s.execute(stmt.limit(1))).first()
        if row is not None:
            return row[0], row[1]
        if user.is_platform_admin:
            return None, None
        raise NotAMember("the user is not a member of any tenant")

    async def _api_token(self, token: str, tenant_slug: str | None, fresh: bool) -> Identity:
        token_hash = hash_secret(token)
        key = ("api", token_hash, tenant_slug)
        cached = self._cached(key, fresh)
        if cached is not None:
            return cached
        return await self._once(key, fresh, lambda: self._read_api_token(key, token_hash, tenant_slug))

    async def _read_api_token(
        self, key: tuple[str | None, ...], token_hash: str, tenant_slug: str | None
    ) -> Identity:
        generation = self.cache.generation
        async with self.db.session() as s:
            row = (
                await s.execute(
                    select(ApiToken, Tenant, User)
                    .join(Tenant, col(Tenant.id) == col(ApiToken.tenant_id))
                    .join(User, col(User.id) == col(ApiToken.user_id))
                    .where(col(ApiToken.token_hash) == token_hash)
                )
            ).first()
            if row is None:
                raise InvalidToken("unknown API token")
            api, tenant, user = row
            if api.revoked_at is not None:
                raise InvalidToken("the API token was revoked")
            if api.expires_at is not None and api.expires_at <= utcnow():
                raise TokenExpired("the API token has expired")
            if tenant_slug and tenant_slug != tenant.slug:
                raise NotAMember(f"this API token belongs to tenant {tenant.slug!r}, not {tenant_slug!a}")
            creator_role = (
                await s.execute(
                    select(col(Membership.role)).where(
                        col(Membership.tenant_id) == tenant.id, col(Membership.user_id) == user.id
                    )
                )
            ).scalar_one_or_none()
            if creator_role is None and user.is_platform_admin:
                creator_role = self.policy.roles[-1]
            if creator_role is None or not user.is_active:
                raise InvalidToken("the API token's creator is no longer a member of its tenant")
            role = self.policy.api_token_role(api.role, creator_role)
            location = None
            if api.location_id is not None:
                place = select(col(Location.name)).where(col(Location.id) == api.location_id)
                location = await s.scalar(place)
            # Written when the token is read from the database: at most once per cache TTL
            # per instance while the token keeps connecting.
            api.last_used_at = utcnow()
            await s.commit()
            identity = Identity(
                user_id=user.id,  # type: ignore[arg-type]
                username=user.username,
                subject=user.external_subject or str(user.id),
                tenant_id=tenant.id,
                tenant_slug=tenant.slug,
                role=role,
                is_platform_admin=False,
                kind="api",
                token_id=api.id,
                token_name=api.name,
                token_role=api.role,
                expires_at=api.expires_at.timestamp() if api.expires_at else None,
                location_id=api.location_id,
                location=location,
            )
        self.cache.put(key, identity, identity.expires_at, generation)
        return identity


def _identity(
    user: User,
    tenant: Tenant | None,
    role: str | None,
    kind: str,
    session_id: str | None,
    expires_at: float | None,
) -> Identity:
    return Identity(
        user_id=user.id,  # type: ignore[arg-type]
        username=user.username,
        subject=user.external_subject or str(user.id),
        tenant_id=tenant.id if tenant else None,
        tenant_slug=tenant.slug if tenant else None,
        role=role,
        is_platform_admin=user.is_platform_admin,
        kind=kind,
        session_id=session_id,
        expires_at=expires_at,
    )


@functools.cache
def _local_read(by_slug: bool) -> Executable:
    """One row: the session (``:sid``), its user and the user's membership in the tenant
    ``:slug`` (``by_slug``) or their first one; the membership columns are NULL when there is
    none. Built once per shape: composing the statement cost more than running it."""
    member = col(Membership.user_id) == col(User.id)
    if by_slug:
        member = and_(
            member,
            col(Membership.tenant_id)
            == select(col(Tenant.id)).where(col(Tenant.slug) == bindparam("slug")).scalar_subquery(),
        )
    return (
        select(
            col(AuthSession.revoked_at),
            col(AuthSession.expires_at).label("session_expires_at"),
            col(User.id).label("user_id"),
            col(User.username),
            col(User.external_subject),
            col(User.is_active),
            col(User.is_platform_admin),
            col(Tenant.id).label("tenant_id"),
            col(Tenant.slug).label("tenant_slug"),
            col(Membership.role),
        )
        .select_from(AuthSession)
        .join(User, col(User.id) == col(AuthSession.user_id))
        .outerjoin(Membership, member)
        .outerjoin(Tenant, col(Tenant.id) == col(Membership.tenant_id))
        .where(col(AuthSession.id) == bindparam("sid"))
        .order_by(col(Membership.id))
        .limit(1)
    )


def _issuer(token: str) -> str | None:
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidToken("invalid token: not a JWT") from None
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else None


def seconds_left(identity: Identity) -> float | None:
    return None if identity.expires_at is None else identity.expires_at - time.time()

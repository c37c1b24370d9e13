"""Keycloak tokens → Watchpost users: the ``ExternalVerifier`` the authenticator plugs in.

A verified token's ``sub`` is the user's key (``users.external_subject``). The
first time a subject connects, a user row is created with the token's
``preferred_username`` and memberships are seeded from its ``/tenants/<slug>/<role>``
groups (tenants that do not exist are skipped — only platform administrators create
tenants). From then on the memberships table is the source of truth: MEMBER_ADD,
MEMBER_UPDATE and MEMBER_REMOVE decide, and later group changes in Keycloak do not
touch them. The platform-administrator flag and the username follow every token.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.errors import InvalidToken
from app.auth.keycloak.provider import KeycloakClaims, KeycloakProvider
from app.models.tenant import Membership, Tenant
from app.models.user import User

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

_USERNAME_MAX = 150
_REVOKED_TTL = 24 * 3600.0
_REVOKED_MAX = 100_000


class KeycloakIdentity:
    """Verify Keycloak access tokens and upsert their users; one per app."""

    def __init__(self, provider: KeycloakProvider) -> None:
        self.provider = provider
        #: Latest access token seen per Keycloak session id, for the session watch's
        #: introspection of live connections; pruned to live sessions by the watch.
        self.session_tokens: dict[str, str] = {}
        #: Sessions known to be over (our /logout, or found dead by the session watch),
        #: with the monotonic time they ended: their still-unexpired tokens are refused.
        self._revoked: dict[str, float] = {}

    async def identify(self, session: AsyncSession, token: str) -> tuple[User, str | None, float | None]:
        """Verify ``token`` (locally; JWKS refreshed on an unknown key) and return its user,
        Keycloak session id and expiry. Raises the ``AuthError`` tree."""
        claims = await self.provider.verify_async(token)
        if claims.session_id is not None and claims.session_id in self._revoked:
            raise InvalidToken("the session was logged out; log in again")
        user = await upsert_user(session, claims)
        if claims.session_id:
            self.session_tokens[claims.session_id] = token
        return user, claims.session_id, claims.expires_at

    def revoke_session(self, session_id: str) -> None:
        """Refuse this session's tokens from now on (they may not have expired yet)."""
        now = time.monotonic()
        self._revoked[session_id] = now
        self.session_tokens.pop(session_id, None)
        # Tokens outlive their session by at most the access token lifespan (minutes);
        # a day of memory is ample, and the cap bounds a flood of logouts.
        if len(self._revoked) > _REVOKED_MAX or next(iter(self._revoked.values())) < now - _REVOKED_TTL:
            cutoff = now - _REVOKED_TTL
            kept = [(sid, at) for sid, at in self._revoked.items() if at >= cutoff]
            self._revoked = dict(kept[-_REVOKED_MAX:])

    def learn_revocation(self, session_id: str) -> bool:
        """Record a session revoked on any instance; True when it was not known to be revoked yet."""
        if session_id in self._revoked:
            return False
        self.revoke_session(session_id)
        return True

    def forget_sessions_except(self, live: Iterable[str]) -> None:
        keep = set(live)
        for sid in [sid for sid in self.session_tokens if sid not in keep]:
            del self.session_tokens[sid]


async def upsert_user(s: AsyncSession, claims: KeycloakClaims) -> User:
    """The user for ``claims.subject``, created (with seeded memberships) on first sight.

    Commits. Raises ``InvalidToken`` when the user was deactivated in Watchpost.
    """
    user = await _by_subject(s, claims.subject)
    if user is None:
        user = User(
            username=await _free_username(s, claims.username, claims.subject),
            external_subject=claims.subject,
            is_platform_admin=claims.is_platform_admin,
        )
        s.add(user)
        try:
            await s.flush()
            await _seed_memberships(s, user, claims.tenant_roles)
            await s.commit()
            log.info("first sign-in of Keycloak user %s (sub=%s)", user.username, claims.subject)
            return user
        except IntegrityError:
            # A concurrent handshake of the same subject created it first.
            await s.rollback()
            user = await _by_subject(s, claims.subject)
            if user is None:
                raise
    if not user.is_active:
        raise InvalidToken("this user is deactivated in Watchpost; ask an administrator")
    changed = False
    if user.is_platform_admin != claims.is_platform_admin:
        user.is_platform_admin = claims.is_platform_admin
        changed = True
    if user.username != claims.username[:_USERNAME_MAX] and not user.username.startswith(
        claims.username + "~"
    ):
        wanted = claims.username[:_USERNAME_MAX]
        if await _username_owner(s, wanted) is None:
            user.username = wanted
            changed = True
    if changed:
        await s.commit()
    return user


async def _by_subject(s: AsyncSession, subject: str) -> User | None:
    return (await s.execute(select(User).where(col(User.external_subject) == subject))).scalar_one_or_none()


async def _username_owner(s: AsyncSession, username: str) -> int | None:
    return (await s.execute(select(col(User.id)).where(col(User.username) == username))).scalar_one_or_none()


async def _free_username(s: AsyncSession, wanted: str, subject: str) -> str:
    """``wanted``, or ``wanted~<sub prefix>`` when a local or other user already has it.

    Never links to an existing row by name: a Keycloak user called "admin" must
    not become the local administrator.
    """
    name = wanted[:_USERNAME_MAX]
    if await _username_owner(s, name) is None:
        return name
    alt = f"{wanted[: _USERNAME_MAX - 10]}~{subject[:8]}"
    log.warning("username %r is taken; Keycloak subject %s becomes %r", wanted, subject, alt)
    return alt


async def _seed_memberships(s: AsyncSession, user: User, tenant_roles: dict[str, str]) -> None:
    if not tenant_roles:
        return
    stmt = select(col(Tenant.id), col(Tenant.slug)).where(col(Tenant.slug).in_(tenant_roles))
    rows = (await s.execute(stmt)).all()
    found = {slug: tenant_id for tenant_id, slug in rows}
    for slug, role in sorted(tenant_roles.items()):
        tenant_id = found.get(slug)
        if tenant_id is None:
            log.info("Keycloak group for unknown tenant %r ignored for %s", slug, user.username)
            continue
        s.add(Membership(tenant_id=tenant_id, user_id=user.id, role=role))  # type: ignore[arg-type]
    await s.flush()

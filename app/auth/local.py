"""Local users: argon2 passwords, server-signed HS256 access JWTs, refresh sessions.

An access token carries ``sid``, the id of the :class:`AuthSession` its login
created; /logout revokes that session, so its tokens cannot open new
connections or refresh, and live connections end at the latest when the access
token expires (``ACCESS_TOKEN_TTL``, default 15 min) — sooner on this server:
logout broadcasts a revocation that closes them at once on every instance.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from app.auth.errors import InvalidCredentials, InvalidToken, TokenExpired
from app.auth.passwords import hash_secret, new_secret, verify_password
from app.models.base import utcnow
from app.models.user import AuthSession, ServerKey, User
from app.settings import Settings
from app.storage.db import Database

ISSUER = "watchpost"
ALGORITHM = "HS256"


@dataclass(slots=True)
class TokenSet:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    token_type: str = "Bearer"

    def as_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_in": self.expires_in,
            "refresh_expires_in": self.refresh_expires_in,
            "token_type": self.token_type,
        }


async def load_or_create_secret(db: Database, configured: str | None) -> str:
    """The HS256 key: JWT_SECRET if set, else one generated once and kept in the database
    so every instance and every restart agree."""
    if configured:
        return configured
    async with db.session() as s:
        row = await s.get(ServerKey, "jwt_secret")
        if row is not None:
            return row.value
        s.add(ServerKey(name="jwt_secret", value=secrets.token_urlsafe(48)))
        try:
            await s.commit()
        except IntegrityError:  # another instance won the race
            await s.rollback()
        row = await s.get(ServerKey, "jwt_secret")
        assert row is not None
        return row.value


class LocalAuth:
    """Local users' tokens. The signing key comes from JWT_SECRET or the database, so it is
    read in the app's lifespan (:meth:`load_key`), not at construction."""

    def __init__(self, settings: Settings, db: Database, secret: str | None = None) -> None:
        self.settings = settings
        self.db = db
        self._key = secret

    async def load_key(self) -> None:
        """Use JWT_SECRET, or the key stored in the database (created on the first start)."""
        self._key = await load_or_create_secret(self.db, self.settings.jwt_secret)

    @property
    def _secret(self) -> str:
        # An empty HS256 key would sign tokens anyone can forge: refuse instead.
        if not self._key:
            raise RuntimeError("LocalAuth has no signing key; call load_key() at start-up")
        return self._key

    def issue_access(self, user: User, session_id: int | str, ttl: int | None = None) -> tuple[str, int]:
        ttl = ttl or self.settings.access_token_ttl
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": str(user.id),
            "username": user.username,
            "sid": str(session_id),
            "iat": now,
            "exp": now + ttl,
            "typ": "access",
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), ttl

    def verify(self, token: str) -> dict[str, Any]:
        """Check signature, issuer and expiry; returns the claims. No I/O."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "sub", "sid", "iss"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("the token has expired; log in again or refresh") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        if claims.get("typ") != "access":
            raise InvalidToken("not an access token")
        return claims

    async def login(self, username: str, password: str) -> tuple[TokenSet, User]:
        async with self.db.session() as s:
            user = (await s.execute(select(User).where(col(User.username) == username))).scalar_one_or_none()
            ok = verify_password(user.password_hash if user else None, password)
            if user is None or not ok or not user.is_active:
                raise InvalidCredentials("wrong username or password")
            tokens = await self._new_session(s, user)
            await s.commit()
            return tokens, user

    async def _new_session(self, s: Any, user: User) -> TokenSet:
        refresh = new_secret("wpr_")
        session = AuthSession(
            user_id=user.id,  # type: ignore[arg-type]
            refresh_hash=hash_secret(refresh),
            expires_at=utcnow() + timedelta(seconds=self.settings.refresh_token_ttl),
        )
        s.add(session)
        await s.flush()
        access, ttl = self.issue_access(user, session.id)  # type: ignore[arg-type]
        return TokenSet(access, refresh, ttl, self.settings.refresh_token_ttl)

    async def refresh(self, refresh_token: str) -> TokenSet:
        """Rotate: the old refresh token stops working, a new pair is returned."""
        async with self.db.session() as s:
            row = (
                await s.execute(
                    select(AuthSession).where(col(AuthSession.refresh_hash) == hash_secret(refresh_token))
                )
            ).scalar_one_or_none()
            if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
                raise InvalidCredentials("the refresh token is invalid, expired or revoked; log in again")
            user = await s.get(User, row.user_id)
            if user is None or not user.is_active:
                raise InvalidCredentials("the user no longer exists")
            refresh = new_secret("wpr_")
            row.refresh_hash = hash_secret(refresh)
            row.expires_at = utcnow() + timedelta(seconds=self.settings.refresh_token_ttl)
            access, ttl = self.issue_access(user, row.id)  # type: ignore[arg-type]
            await s.commit()
            return TokenSet(access, refresh, ttl, self.settings.refresh_token_ttl)

    async def logout(self, refresh_token: str) -> int | None:
        """Revoke the session; returns its id (None when unknown) so live sockets can be closed."""
        async with self.db.session() as s:
            row = (
                await s.execute(
                    select(AuthSession).where(col(AuthSession.refresh_hash) == hash_secret(refresh_token))
                )
            ).scalar_one_or_none()
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                await s.commit()
            return row.id

    async def session_active(self, session_id: str) -> bool:
        try:
            sid = int(session_id)
        except ValueError:
            return False
        async with self.db.session() as s:
            row = await s.get(AuthSession, sid)
            return row is not None and row.revoked_at is None and row.expires_at > utcnow()

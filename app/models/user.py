from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from app.models.base import utcnow


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=150, unique=True, index=True)
    #: argon2 hash; None for users that only sign in through Keycloak.
    password_hash: str | None = Field(default=None, max_length=255)
    #: Keycloak ``sub`` for users known through the IdP.
    external_subject: str | None = Field(default=None, max_length=255, unique=True)
    is_platform_admin: bool = Field(default=False)
    is_active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow)


class AuthSession(SQLModel, table=True):
    """A local login: the refresh token's hash; revoking it ends the session."""

    __tablename__ = "auth_sessions"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    refresh_hash: str = Field(max_length=64, unique=True)
    expires_at: datetime
    revoked_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ServerKey(SQLModel, table=True):
    """Server-wide secrets generated on first start (e.g. the local JWT key)."""

    __tablename__ = "server_keys"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=255)

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import utcnow


class ApiToken(SQLModel, table=True):
    """An API token (``wpt_…``). Only the SHA-256 of the secret is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_api_token_tenant_name"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=100)
    role: str = Field(max_length=32)
    #: The location a ``probe`` token checks from (None for every other role).
    location_id: int | None = Field(default=None, foreign_key="locations.id", ondelete="CASCADE")
    token_hash: str = Field(max_length=64, unique=True)
    #: First characters of the secret, shown in lists so people can tell tokens apart.
    prefix: str = Field(max_length=16)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import utcnow


class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=64, unique=True, index=True)
    name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    #: Per-tenant overrides of QUOTA_MONITORS / QUOTA_CHANNELS / QUOTA_API_TOKENS, set by a
    #: platform administrator; None follows the setting (app.quotas).
    quota_monitors: int | None = None
    quota_channels: int | None = None
    #: IANA timezone alert messages show times in (None: UTC).
    timezone: str | None = Field(default=None, max_length=64)
    quota_api_tokens: int | None = None


class Membership(SQLModel, table=True):
    """A user's role in one tenant; the source of truth for RBAC."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("tenant_id", "user_id", name="uq_membership_tenant_user"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    role: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow)

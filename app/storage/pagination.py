"""Offset pagination helpers shared by list handlers (``meta``: docs/protocol.md, "Response")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

PAGE_SCHEMA: dict[str, Any] = {
    "page": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1, "default": 1},
    "per_page": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20},
}


@dataclass(slots=True)
class Page:
    """What a list handler returns: the router puts ``meta`` beside ``data``.
    ``items`` is the list, or an object holding it beside figures about the
    whole list (STATUS_SUMMARY: ``monitors`` and the tenant's ``counts``)."""

    items: list[Any] | dict[str, Any]
    meta: dict[str, Any]


async def paginate(
    session: AsyncSession, stmt: Select[Any], data: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Run ``stmt`` (which must already have a deterministic ORDER BY) for one page."""
    page = int(data.get("page", 1))
    per_page = int(data.get("per_page", 20))
    total = (
        await session.execute(select(func.count()).select_from(stmt.order_by(None).subquery()))
    ).scalar_one()
    rows = (await session.execute(stmt.offset((page - 1) * per_page).limit(per_page))).scalars().all()
    pages = (total + per_page - 1) // per_page
    return list(rows), {"page": page, "per_page": per_page, "total": total, "pages": pages}

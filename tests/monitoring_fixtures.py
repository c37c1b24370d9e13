"""Helpers shared by the monitoring tests: a migrated database with a tenant,
and monitors inserted directly (the collector tests need no server)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from app.models.base import utcnow
from app.models.monitor import Monitor
from app.models.tenant import Tenant
from app.storage import migrate
from app.storage.db import Database


async def migrated_db(url: str) -> Database:
    await asyncio.to_thread(migrate.upgrade, url)
    return Database(url)


async def add_tenant(db: Database, slug: str = "acme") -> int:
    async with db.session() as s:
        tenant = Tenant(slug=slug, name=slug.title())
        s.add(tenant)
        await s.commit()
        assert tenant.id is not None
        return tenant.id


async def add_monitor(db: Database, tenant_id: int, **fields: Any) -> Monitor:
    fields.setdefault("name", f"m-{utcnow().timestamp()}")
    fields.setdefault("kind", "http")
    now: datetime = fields.pop("now", utcnow())
    fields.setdefault("next_check_at", now)
    async with db.session() as s:
        monitor = Monitor(tenant_id=tenant_id, **fields)
        s.add(monitor)
        await s.commit()
        return monitor


async def load_monitor(db: Database, monitor_id: int) -> Monitor:
    async with db.session() as s:
        monitor = await s.get(Monitor, monitor_id)
        assert monitor is not None
        return monitor


async def eventually(
    condition: Callable[[], Awaitable[bool]], within: float = 20.0, interval: float = 0.1, what: str = ""
) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if await condition():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for: {what or condition}")
        await asyncio.sleep(interval)

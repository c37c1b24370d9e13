"""Many monitors written straight into the database in one statement (set-up only: creating
10,000 over the socket would take minutes and hit the per-user message limit)."""

from __future__ import annotations

from sqlalchemy import insert, select

from app.bench.summary import STATES, monitor_rows
from app.models.monitor import Monitor
from app.models.tenant import Tenant
from app.storage.db import Database


def expected_counts(count: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in range(count):
        counts[STATES[i % len(STATES)]] = counts.get(STATES[i % len(STATES)], 0) + 1
    return counts


async def add_monitors(database_url: str, slug: str, count: int) -> list[int]:
    """Insert ``count`` tcp monitors into tenant ``slug``, scheduled far in the future so the
    collector leaves them alone; returns their ids in id order."""
    db = Database(database_url)
    try:
        async with db.session() as s:
            tenant_id = (await s.execute(select(Tenant.id).where(Tenant.slug == slug))).scalar_one()
            await s.execute(insert(Monitor), monitor_rows(tenant_id, 0, count))
            await s.commit()
            found = await s.execute(
                select(Monitor.id).where(Monitor.tenant_id == tenant_id).order_by(Monitor.id)
            )
            return [int(i) for i in found.scalars().all()]
    finally:
        await db.close()

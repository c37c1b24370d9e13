"""Many monitors written straight into the database in one statement (set-up only: creating
10,000 over the socket would take minutes and hit the per-user message limit)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select

from app.models.monitor import Monitor
from app.models.tenant import Tenant
from app.storage.db import Database

#: One in twenty down, paused and pending each, the rest up: counts are easy to check.
STATES = ["up"] * 17 + ["down", "paused", "pending"]


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
            # One model for the defaults, then plain dicts: building 10,000 model objects takes seconds.
            template = Monitor(
                tenant_id=tenant_id,
                name="template",
                kind="tcp",
                port=22,
                interval=3600,
                timeout=5,
                next_check_at=datetime(2100, 1, 1, tzinfo=UTC),
            ).model_dump(exclude={"id"})
            rows = [
                {
                    **template,
                    "name": f"node-{i:05d}",
                    "host": f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}",
                    "state": STATES[i % len(STATES)],
                    "last_latency_ms": float(i % 97),
                }
                for i in range(count)
            ]
            await s.execute(insert(Monitor), rows)
            await s.commit()
            found = await s.execute(
                select(Monitor.id).where(Monitor.tenant_id == tenant_id).order_by(Monitor.id)
            )
            return [int(i) for i in found.scalars().all()]
    finally:
        await db.close()

"""The ``summary`` bench scenario: STATUS_SUMMARY of a tenant with 10,000 and 50,000 monitors.

One Watchpost instance (PostgreSQL + Redis). The monitors are inserted straight
into the database (creating them over the socket would take minutes and meet the
per-user message limit), as TCP monitors due far in the future so the collector,
which the bench keeps off anyway, would leave them alone. For each size a fresh
connection pages through STATUS_SUMMARY until ``has_more`` is false; the row
records the time to the first page (what a dashboard shows first), the time to
the last, the pages and bytes received, the server CPU, and whether every monitor
of the tenant arrived exactly once with the connection still open (a 4009 close
was the failure at 10,000 before paging).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlmodel import col

from app.bench.targets import Environment
from app.bench.watchpost import WatchpostTarget
from app.models.monitor import Monitor
from app.models.tenant import Tenant
from app.protocol import PkgID
from app.storage.db import Database

#: Monitor counts by plan name (the smoke plan only proves the scenario runs).
SIZES = {"full": (10_000, 50_000), "quick": (10_000, 50_000), "smoke": (50,)}
#: One in twenty down, paused and pending each, the rest up (as the tests' bulk set-up).
STATES = ["up"] * 17 + ["down", "paused", "pending"]
#: The issue's target for the dashboard: first rows within 2 s of login at 10,000 monitors.
FIRST_PAGE_TARGET_MS = 2000.0


def monitor_rows(tenant_id: int, start: int, count: int) -> list[dict[str, Any]]:
    """Rows for one bulk insert of tcp monitors numbered ``start``.. (states by STATES), scheduled
    far in the future so the collector leaves them alone. The tests' bulk set-up uses it too."""
    # One model for the defaults, then plain dicts: 50,000 model objects take seconds.
    template = Monitor(
        tenant_id=tenant_id,
        name="template",
        kind="tcp",
        port=22,
        interval=3600,
        timeout=5,
        next_check_at=datetime(2100, 1, 1, tzinfo=UTC),
    ).model_dump(exclude={"id"})
    return [
        {
            **template,
            "name": f"node-{i:05d}",
            "host": f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}",
            "state": STATES[i % len(STATES)],
            "last_latency_ms": float(i % 97),
        }
        for i in range(start, start + count)
    ]


async def add_monitors(database_url: str, start: int, count: int) -> None:
    """Insert monitors numbered ``start``..``start + count - 1`` into the bench tenant."""
    db = Database(database_url)
    try:
        async with db.session() as s:
            found = await s.execute(select(col(Tenant.id)).order_by(col(Tenant.id)).limit(1))
            tenant_id = found.scalar_one()
            if tenant_id is None:
                raise RuntimeError("the bench tenant was not created")
            await s.execute(insert(Monitor), monitor_rows(tenant_id, start, count))
            await s.commit()
    finally:
        await db.close()


async def read_summary(target: WatchpostTarget, expected: int) -> dict[str, Any]:
    """Page through STATUS_SUMMARY on a new connection; one result row."""
    (ws,) = await target.open(1, "listen")
    try:
        cpu0, wall0 = target.cpu_seconds(), time.perf_counter()
        first_ms: float | None = None
        pages, size, total = 0, 0, None
        seen: list[int] = []
        data: dict[str, Any] = {}
        while True:
            reply = await ws.request(PkgID.STATUS_SUMMARY, data, wait_s=60.0)
            if reply.get("status_code") != 0:
                raise RuntimeError(f"STATUS_SUMMARY page {pages + 1} failed: {reply}")
            if first_ms is None:
                first_ms = (time.perf_counter() - wall0) * 1000
            pages += 1
            # The server encodes with orjson too: re-encoding gives the size it sent, within a few bytes.
            size += len(orjson.dumps(reply))
            seen.extend(int(m["id"]) for m in reply["data"]["monitors"])
            total = reply["data"].get("total", total)  # the first page carries the totals
            meta = reply.get("meta") or {}
            if not meta.get("has_more"):
                break
            data = {"cursor": meta["next_cursor"]}
        wall = time.perf_counter() - wall0
        cpu = target.cpu_seconds() - cpu0
        open_after = ws.is_open
    finally:
        await ws.close()
    return {
        "monitors": expected,
        "total_reported": total,
        "received": len(seen),
        "distinct": len(set(seen)),
        "pages": pages,
        "bytes": size,
        "bytes_per_monitor": round(size / len(seen), 1) if seen else None,
        "first_page_ms": round(first_ms or 0.0, 1),
        "complete_ms": round(wall * 1000, 1),
        "server_cpu_ms": round(cpu * 1000, 1),
        "open_after": open_after,
    }


async def summary(env: Environment, plan_name: str, say: Any) -> dict[str, Any]:
    """Grow one tenant through each size and read its STATUS_SUMMARY at each."""
    target = WatchpostTarget(env)
    rows: list[dict[str, Any]] = []
    await target.start(1)
    try:
        # The target starts with one push monitor of its own; the tenant holds it too.
        have = 1
        for size in SIZES[plan_name]:
            t0 = time.perf_counter()
            await add_monitors(target.database.url, have - 1, size - have)
            have = size
            say(f"  inserted up to {size} monitors in {time.perf_counter() - t0:.1f} s")
            row = await read_summary(target, size)
            rows.append(row)
            say(
                f"  watchpost STATUS_SUMMARY at {size}: {row['received']} rows in {row['pages']} pages, "
                f"{row['bytes'] / 2**20:.2f} MiB, first page {row['first_page_ms']:.0f} ms, "
                f"complete {row['complete_ms']:.0f} ms, server CPU {row['server_cpu_ms']:.0f} ms"
            )
    finally:
        await target.stop()
    return {"watchpost": rows, "watchpost_settings": target.settings()}


def evaluate(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A verdict per size: every monitor exactly once, connection open, first page within 2 s."""
    checks = []
    for row in result["watchpost"]:
        complete = (
            row["received"] == row["distinct"] == row["monitors"] == row["total_reported"]
            and row["open_after"]
        )
        checks.append(
            {
                "target": f"STATUS_SUMMARY at {row['monitors']} monitors",
                "wanted": f"every monitor once, connection open, first page <= {FIRST_PAGE_TARGET_MS:.0f} ms",
                "measured": (
                    f"{row['distinct']}/{row['monitors']} in {row['pages']} pages, "
                    f"first {row['first_page_ms']} ms, all {row['complete_ms']} ms"
                ),
                "met": complete and row["first_page_ms"] <= FIRST_PAGE_TARGET_MS,
                "detail": f"{row['bytes']} bytes; still open: {row['open_after']}",
            }
        )
    return checks


def markdown_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## summary (STATUS_SUMMARY, paged, one connection)",
        "",
        "| monitors | received | pages | MiB | bytes/monitor | first page ms | complete ms | server CPU ms "
        "| open after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["watchpost"]:
        lines.append(
            f"| {r['monitors']} | {r['received']} | {r['pages']} | {r['bytes'] / 2**20:.2f} "
            f"| {r['bytes_per_monitor']} | {r['first_page_ms']} | {r['complete_ms']} | {r['server_cpu_ms']} "
            f"| {r['open_after']} |"
        )
    return lines

"""The ``collector`` bench scenario: N HTTP monitors at a fixed interval against a local target.

One Watchpost process (PostgreSQL + Redis, collector on) checks ``N`` HTTP
monitors every ``interval`` seconds against :mod:`app.bench.http_target`, which
runs in its own process and answers at once. After a warm-up (one interval, then
until every monitor has had its first check, which is a state change, then one
more interval so a late first round's backlog is cleared), for
``duration`` seconds the scenario measures:

- checks/s arriving at the target, against the ``N / interval`` that are due;
- the server's CPU share (CPU seconds / wall seconds; 1.0 is one core) and its CPU
  time per check (CPU seconds / checks), which a busy machine disturbs much less;
- due-to-run lag: each arrival at the target against its monitor's due time.
  Due times keep a fixed cadence (first due + k x interval), so the lag of an
  arrival is its offset past the latest due time not after it;
- recorded latency error: the latency_ms Watchpost stored for checks of the
  window minus the target's own answer time (median of what the target measured);
- monitors not checked at all in the window (must be 0 when duration >= interval).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, insert, select
from sqlmodel import col

from app.bench.servers import ServerProcess, free_port, python_module, scrubbed_env
from app.bench.stats import summarize_ns
from app.bench.targets import Environment
from app.bench.watchpost import WatchpostTarget
from app.models.check import CheckResult
from app.models.monitor import Monitor
from app.models.tenant import Tenant
from app.storage.db import Database


class CollectorTarget(WatchpostTarget):
    """Watchpost with its collector on (the other scenarios keep it off)."""

    name = "watchpost"

    def server_env(self, port: int) -> dict[str, str]:
        env = super().server_env(port)
        env["COLLECTOR_ENABLED"] = "true"
        return env


async def _stats(client: httpx.AsyncClient, port: int) -> list[tuple[str, float, float]]:
    reply = await client.get(f"http://127.0.0.1:{port}/__stats")
    reply.raise_for_status()
    return [(str(p), float(a), float(t)) for p, a, t in reply.json()]


async def _add_monitors(db: Database, count: int, interval: int, port: int) -> dict[int, float]:
    """Insert ``count`` HTTP monitors, first due spread over one interval; returns id -> first due."""
    async with db.session() as s:
        tenant_id = (await s.execute(select(col(Tenant.id)).order_by(col(Tenant.id)).limit(1))).scalar_one()
        start = datetime.now(UTC) + timedelta(seconds=1)
        rows = []
        for number in range(count):
            rows.append(
                {
                    "tenant_id": tenant_id,
                    "name": f"bench collector {number}",
                    "kind": "http",
                    "url": f"http://127.0.0.1:{port}/m/{number}",
                    "interval": interval,
                    "timeout": 5.0,
                    "next_check_at": start + timedelta(seconds=random.uniform(0, interval)),
                }
            )
        await s.execute(insert(Monitor), rows)
        await s.commit()
        got = await s.execute(
            select(col(Monitor.url), col(Monitor.next_check_at)).where(col(Monitor.kind) == "http")
        )
        return {
            int(str(url).rsplit("/", 1)[1]): due.replace(tzinfo=UTC).timestamp() for url, due in got.all()
        }


async def _warm_up(db: Database, interval: int) -> float:
    """Wait one interval, then until every monitor has had its first check (at most five
    more intervals), then one more interval; returns the seconds waited.

    A first check is a state change (pending -> up) and takes the slower per-row path
    with incidents, groups and alerting; the window measures the steady state after it.
    """
    started = time.monotonic()
    await asyncio.sleep(1 + interval)
    deadline = started + 6 * interval
    while time.monotonic() < deadline:
        async with db.session() as s:
            unchecked = (
                await s.execute(
                    select(func.count())
                    .select_from(Monitor)
                    .where(
                        col(Monitor.name).startswith("bench collector "),  # not the bench's own monitor
                        col(Monitor.last_checked_at).is_(None),
                    )
                )
            ).scalar_one()
        if not unchecked:
            # One more interval: a first round that ran late leaves a backlog, and the
            # window should measure the steady state, not the catching up.
            await asyncio.sleep(interval)
            break
        await asyncio.sleep(1)
    return round(time.monotonic() - started, 1)


async def run_collector(
    env: Environment, monitors: int, interval: int, duration_s: float, say: Any
) -> dict[str, Any]:
    """One row: ``monitors`` HTTP monitors at ``interval`` s measured for ``duration_s`` s."""
    port = free_port()
    target_log = env.log_dir / f"http-target-{port}.log"
    http_target = ServerProcess(
        f"http-target-{port}",
        python_module("app.bench.http_target", "--port", str(port)),
        scrubbed_env(),
        env.cpus.client_cpus,
        target_log,
    )
    server = CollectorTarget(env)
    try:
        await server.start(1)
        db = Database(server.database.url)
        async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
            for _ in range(100):
                try:
                    await _stats(client, port)
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            first_due = await _add_monitors(db, monitors, interval, port)
            warmup = await _warm_up(db, interval)
            await _stats(client, port)
            cpu0, wall0, started = server.cpu_seconds(), time.monotonic(), datetime.now(UTC)
            await asyncio.sleep(duration_s)
            hits = await _stats(client, port)
            cpu = server.cpu_seconds() - cpu0
            wall = time.monotonic() - wall0
            ended = datetime.now(UTC)
        async with db.session() as s:
            recorded = (
                (
                    await s.execute(
                        select(col(CheckResult.latency_ms)).where(
                            col(CheckResult.ts) >= started,
                            col(CheckResult.ts) < ended,
                            col(CheckResult.latency_ms).is_not(None),
                        )
                    )
                )
                .scalars()
                .all()
            )
        await db.close()
    finally:
        await server.stop()
        await http_target.stop()
    lags_ns: list[int] = []
    checked: set[int] = set()
    for path, arrived, _answer in hits:
        number = int(path.rsplit("/", 1)[1])
        checked.add(number)
        lags_ns.append(int(((arrived - first_due[number]) % interval) * 1e9))
    answer_ms = statistics.median(a for _p, _a, a in hits) if hits else 0.0
    latencies = [float(v) for v in recorded if v is not None]
    recorded_ns = [int(v * 1e6) for v in latencies]
    errors_ns = [max(0, int((v - answer_ms) * 1e6)) for v in latencies]
    lag, recorded_summary = summarize_ns(lags_ns), summarize_ns(recorded_ns)
    row: dict[str, Any] = {
        "monitors": monitors,
        "interval_s": interval,
        "duration_s": round(wall, 2),
        "warmup_s": warmup,
        "due_per_s": round(monitors / interval, 1),
        "checks_per_s": round(len(hits) / wall, 1),
        "server_cpu_share": round(cpu / wall, 3),
        # CPU seconds per check: robust to a shared machine, unlike the share of a core.
        "cpu_ms_per_check": round(cpu * 1000 / len(hits), 3) if hits else None,
        "due_to_run_lag": lag,
        "target_answer_ms_p50": round(answer_ms, 3),
        "recorded_latency": recorded_summary,
        "recorded_latency_error": summarize_ns(errors_ns),
        "not_checked": monitors - len(checked) if wall >= interval else None,
    }
    say(
        f"  watchpost {monitors} monitors / {interval} s: {row['checks_per_s']}/s of {row['due_per_s']} due, "
        f"CPU {row['server_cpu_share']:.0%} ({row['cpu_ms_per_check']} ms/check), "
        f"lag p50 {lag['p50_ms']:.0f} ms "
        f"p99 {lag['p99_ms']:.0f} ms, recorded latency p50 "
        f"{recorded_summary['p50_ms']:.1f} ms (target {answer_ms:.2f} ms), "
        f"not checked {row['not_checked']}"
    )
    return row


async def collector(
    env: Environment, sizes: tuple[int, ...], interval: int, duration_s: float, say: Any
) -> dict[str, Any]:
    rows = []
    for count in sizes:
        rows.append(await run_collector(env, count, interval, duration_s, say))
    return {"watchpost": rows}

"""The ``connect`` scenario: handshakes per second, Watchpost's authenticated ones against the bare echo's.

A reconnect storm (deploy, failover, drain) is all handshakes, so the figure
that matters is how many an instance completes per second of its CPU. Each row
opens ``count`` connections, ``concurrency`` handshakes at a time, and records
the wall time and the server's CPU time over the window; the connections are
checked and closed after the window, so neither the check nor the close is
counted. Watchpost is measured with a local JWT and with an API token (the two
credentials dashboards and scripts use), each reused across connections as a
reconnecting client would, and with a new local JWT per handshake (tokens the
server has not seen: what no cache helps with).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from app.bench.loadgen import CpuProbe, close_all
from app.bench.stats import ratio
from app.bench.wsclient import BenchConnection

#: (connections per row, handshakes in flight) by plan name.
SIZES = {"full": (5000, 64), "quick": (1000, 64), "smoke": (20, 4)}

Opener = Callable[[], Awaitable[BenchConnection]]
#: Proves the connections are usable (authenticated), after the timed window.
Check = Callable[[list[BenchConnection]], Awaitable[None]]


async def measure(
    label: str,
    open_one: Opener,
    count: int,
    concurrency: int,
    server_cpu: CpuProbe,
    check: Check | None = None,
) -> dict[str, Any]:
    """Open ``count`` connections, ``concurrency`` at a time; handshakes/s and server CPU per handshake."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> BenchConnection:
        async with gate:
            return await open_one()

    cpu0, wall0 = server_cpu(), time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    wall, cpu = time.perf_counter() - wall0, server_cpu() - cpu0
    opened = [r for r in results if isinstance(r, BenchConnection)]
    failed = [r for r in results if isinstance(r, BaseException)]
    try:
        if failed:
            raise RuntimeError(f"{label}: {len(failed)} of {count} handshakes failed: {failed[0]!r}")
        if check is not None:
            await check(opened)
    finally:
        await close_all(opened)
    us_per = cpu / count * 1e6 if count else 0.0
    return {
        "credential": label,
        "connections": count,
        "concurrency": concurrency,
        "elapsed_s": round(wall, 3),
        "handshakes_per_s": round(count / wall, 1) if wall else None,
        "server_cpu_us_per_handshake": round(us_per, 1),
        # Handshakes one server core could complete if the load generator were free.
        "capacity_per_core_s": round(1e6 / us_per) if us_per else None,
    }


def add_ratios(rows: list[dict[str, Any]], echo: dict[str, Any]) -> None:
    for row in rows:
        row["vs_echo"] = {
            "handshakes_per_s": ratio(row["handshakes_per_s"], echo["handshakes_per_s"]),
            "capacity": ratio(row["capacity_per_core_s"], echo["capacity_per_core_s"]),
        }


#: The issue's target: authenticated connects per second on one instance.
TARGET_PER_S = 1000
#: The row whose every handshake brings a token the server has not seen (not cached yet).
FRESH_JWT = "local JWT, each new"


#: Fewer handshakes than this (the smoke plan) measure start-up, not a rate: no verdict.
JUDGED_FROM = 1000


def evaluate(result: dict[str, Any]) -> dict[str, Any] | None:
    """The verdict for the slowest reused credential (report.evaluate adds it to the targets).

    The target is about reconnecting clients, whose credentials the instance has seen;
    the uncached row is reported beside it (``detail``), not judged.
    """
    if result["echo"]["connections"] < JUDGED_FROM:
        return None
    reused = [row for row in result["watchpost"] if row["credential"] != FRESH_JWT]
    slowest = min(reused, key=lambda row: row["handshakes_per_s"] or 0)
    measured = {row["credential"]: row["handshakes_per_s"] for row in reused}
    fresh = [f"{row['handshakes_per_s']}/s uncached" for row in result["watchpost"] if row not in reused]
    return {
        "target": "authenticated handshakes per second, one instance",
        "wanted": f">= {TARGET_PER_S}",
        "measured": measured,
        "met": (slowest["handshakes_per_s"] or 0) >= TARGET_PER_S,
        "detail": "; ".join([f"echo {result['echo']['handshakes_per_s']}/s in the same run", *fresh]),
    }


def markdown_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## connect (handshakes, each credential reused as a reconnecting client does)",
        "",
        "| server | credential | connections | in flight | handshakes/s | server µs each | per core/s "
        "| vs echo: rate | capacity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for server, rows in (("echo", [result["echo"]]), ("watchpost", result["watchpost"])):
        for r in rows:
            vs = r.get("vs_echo", {})
            lines.append(
                f"| {server} | {r['credential']} | {r['connections']} | {r['concurrency']} "
                f"| {r['handshakes_per_s']} | {r['server_cpu_us_per_handshake']} "
                f"| {r['capacity_per_core_s']} "
                f"| {vs.get('handshakes_per_s', '-')} | {vs.get('capacity', '-')} |"
            )
    return lines

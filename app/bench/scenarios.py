"""The bench scenarios (issue: operations and performance): rpc, fanout, idle, scale.

Each scenario starts the servers it needs fresh, measures the echo reference
and Watchpost the same way, stops everything, and returns a plain dict for the
results file. Sizes come from a :class:`Plan` (full for ``make bench``,
quick for ``--quick``, smoke for the test suite).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from app.bench.fanout import run_fanout
from app.bench.loadgen import close_all, run_rpc
from app.bench.stats import ratio
from app.bench.targets import EchoTarget, Environment, Target
from app.bench.watchpost import WatchpostTarget
from app.bench.wsclient import BenchConnection


@dataclass(frozen=True)
class Plan:
    """How big each scenario is."""

    name: str
    rpc_connections: tuple[int, ...]
    rpc_in_flight: tuple[int, ...]
    warmup_s: float
    duration_s: float
    fanout_subscribers: tuple[int, ...]
    fanout_rounds: int
    idle_connections: int
    scale_subscribers: int
    scale_rpc: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PLANS = {
    "full": Plan("full", (1, 50, 200), (1, 8), 1.0, 4.0, (1000, 5000), 40, 5000, 1000, (50, 8)),
    "quick": Plan("quick", (1, 50), (1, 8), 0.5, 2.0, (200,), 10, 500, 200, (50, 8)),
    "smoke": Plan("smoke", (2,), (2,), 0.2, 1.0, (2,), 3, 4, 2, (2, 2)),
}

Progress = Callable[[str], None]


async def _with_target(target: Target, instances: int, body: Callable[[], Awaitable[Any]]) -> Any:
    await target.start(instances)
    try:
        return await body()
    finally:
        await target.stop()


async def _rpc_rows(target: Target, operation: str, plan: Plan, say: Progress) -> list[dict[str, Any]]:
    rows = []
    connections = await target.open(max(plan.rpc_connections), "rpc")
    try:
        for count in plan.rpc_connections:
            for in_flight in plan.rpc_in_flight:
                outcome = await run_rpc(
                    connections[:count],
                    target.frame(operation),
                    in_flight=in_flight,
                    warmup_s=plan.warmup_s,
                    duration_s=plan.duration_s,
                    server_cpu=target.cpu_seconds,
                )
                row = {"operation": operation, **outcome.to_dict()}
                rows.append(row)
                say(
                    f"  {target.name:9} {operation:11} {count:4} conn x {in_flight} in flight: "
                    f"{row['throughput_rps']:9.0f}/s  p50 {row['latency']['p50_ms']:.2f} ms  "
                    f"p99 {row['latency']['p99_ms']:.2f} ms  server {row['server_cpu_us_per_request']} us/req"
                )
    finally:
        await close_all(connections)
    return rows


def _add_ratios(rows: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    """Annotate each row with its ratio to the echo row of the same shape."""
    by_shape = {(r["connections"], r["in_flight"]): r for r in reference}
    for row in rows:
        echo = by_shape.get((row["connections"], row["in_flight"]))
        if echo is None:
            continue
        row["vs_echo"] = {
            # Measured throughput over the echo's (both limited by whichever side saturates).
            "throughput": ratio(row["throughput_rps"], echo["throughput_rps"]),
            # Server capacity: echo CPU per request over ours = the throughput ratio
            # if both servers had their CPU to themselves and the client were free.
            "server_capacity": ratio(echo["server_cpu_us_per_request"], row["server_cpu_us_per_request"]),
            "p50_latency": ratio(row["latency"]["p50_ms"], echo["latency"]["p50_ms"]),
            "p99_latency": ratio(row["latency"]["p99_ms"], echo["latency"]["p99_ms"]),
        }


async def rpc(env: Environment, plan: Plan, say: Progress) -> dict[str, Any]:
    """PING and MONITOR_GET at each connections x in-flight shape, and the echo the same way."""
    echo = EchoTarget(env)
    say("rpc: echo reference")
    reference = await _with_target(echo, 1, lambda: _rpc_rows(echo, "echo", plan, say))
    watchpost = WatchpostTarget(env)

    async def both() -> list[dict[str, Any]]:
        say("rpc: watchpost")
        return await _rpc_rows(watchpost, "ping", plan, say) + await _rpc_rows(
            watchpost, "monitor_get", plan, say
        )

    rows = await _with_target(watchpost, 1, both)
    _add_ratios(rows, reference)
    return {"echo": reference, "watchpost": rows, "watchpost_settings": watchpost.settings()}


async def _fanout_row(
    target: Target, subscribers: int, rounds: int, split: int, say: Progress
) -> dict[str, Any]:
    """One fanout measurement; ``split`` > 1 spreads subscribers over that many instances."""
    groups = await asyncio.gather(
        *(target.open(subscribers // split + (i < subscribers % split), "fanout", i) for i in range(split))
    )
    connections: list[BenchConnection] = [ws for group in groups for ws in group]
    publish, extra = await target.publisher(0)
    try:
        outcome = await run_fanout(
            connections,
            publish,
            rounds=rounds,
            event_pkg_id=target.event_pkg_id,
            topic=target.event_topic,
            server_cpu=target.cpu_seconds,
        )
    finally:
        await close_all([*connections, *extra])
    row = outcome.to_dict()
    say(
        f"  {target.name:9} {subscribers:5} subscribers on {split} instance(s): "
        f"{row['delivered']}/{row['expected']} delivered, last delivery p50 "
        f"{row['time_to_last_delivery']['p50_ms']:.1f} ms p99 {row['time_to_last_delivery']['p99_ms']:.1f} ms"
    )
    return row


async def fanout(env: Environment, plan: Plan, say: Progress) -> dict[str, Any]:
    """One event at a time to N subscribers: time to last delivery, delivered/expected."""
    results: dict[str, list[dict[str, Any]]] = {}
    for target in (EchoTarget(env), WatchpostTarget(env)):
        say(f"fanout: {target.name}")

        async def rows(t: Target = target) -> list[dict[str, Any]]:
            return [await _fanout_row(t, n, plan.fanout_rounds, 1, say) for n in plan.fanout_subscribers]

        results[target.name] = await _with_target(target, 1, rows)
    for row, echo in zip(results["watchpost"], results["echo"], strict=True):
        row["vs_echo"] = {
            "last_delivery_p50": ratio(
                row["time_to_last_delivery"]["p50_ms"], echo["time_to_last_delivery"]["p50_ms"]
            ),
            "last_delivery_p99": ratio(
                row["time_to_last_delivery"]["p99_ms"], echo["time_to_last_delivery"]["p99_ms"]
            ),
            "server_cpu_per_delivery": ratio(
                row["server_cpu_us_per_delivery"], echo["server_cpu_us_per_delivery"]
            ),
        }
    return results


async def _idle_row(target: Target, count: int, say: Progress) -> dict[str, Any]:
    # Warm the server first (imports, caches, first-connection allocations), so
    # the baseline already holds what every connection shares.
    warm = await target.open(min(count, 20), "idle")
    await close_all(warm)
    await asyncio.sleep(1.0)
    gc.collect()
    before = target.rss_bytes()
    connections = await target.open(count, "idle")
    try:
        await asyncio.sleep(2.0)
        after = target.rss_bytes()
        still_open = sum(ws.is_open for ws in connections)
    finally:
        await close_all(connections)
    per_connection = (after - before) / count
    row = {
        "connections": count,
        "still_open": still_open,
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "bytes_per_connection": round(per_connection),
        "kib_per_connection": round(per_connection / 1024, 1),
    }
    say(
        f"  {target.name:9} {count} idle connections: {row['kib_per_connection']} KiB each "
        f"({still_open} still open)"
    )
    return row


async def idle(env: Environment, plan: Plan, say: Progress) -> dict[str, Any]:
    """Server resident memory per idle (authenticated, unsubscribed) connection."""
    results: dict[str, Any] = {}
    for target in (EchoTarget(env), WatchpostTarget(env)):
        say(f"idle: {target.name}")

        async def measure(t: Target = target) -> dict[str, Any]:
            return await _idle_row(t, plan.idle_connections, say)

        results[target.name] = await _with_target(target, 1, measure)
    results["watchpost"]["vs_echo"] = {
        "memory_per_connection": ratio(
            results["watchpost"]["bytes_per_connection"], results["echo"]["bytes_per_connection"]
        )
    }
    return results


async def _rpc_spread(target: Target, plan: Plan, instances: int, say: Progress) -> dict[str, Any]:
    count, in_flight = plan.scale_rpc
    groups = await asyncio.gather(
        *(target.open(count // instances + (i < count % instances), "rpc", i) for i in range(instances))
    )
    connections = [ws for group in groups for ws in group]
    try:
        outcome = await run_rpc(
            connections,
            target.frame("ping"),
            in_flight=in_flight,
            warmup_s=plan.warmup_s,
            duration_s=plan.duration_s,
            server_cpu=target.cpu_seconds,
        )
    finally:
        await close_all(connections)
    row = {"processes": instances, **outcome.to_dict()}
    say(f"  {target.name:9} {count}x{in_flight} over {instances} process(es): {row['throughput_rps']:.0f}/s")
    return row


async def scale(env: Environment, plan: Plan, say: Progress) -> dict[str, Any]:
    """Two Watchpost instances sharing PostgreSQL and Redis: cross-instance fanout, rpc 2 vs 1."""
    say("scale: echo reference (1 and 2 processes)")
    echo = EchoTarget(env)

    async def echo_body() -> list[dict[str, Any]]:
        return [await _rpc_spread(echo, plan, 1, say), await _rpc_spread(echo, plan, 2, say)]

    echo_rows = await _with_target(echo, 2, echo_body)
    say("scale: watchpost, two instances")
    watchpost = WatchpostTarget(env)

    async def body() -> dict[str, Any]:
        fan = await _fanout_row(watchpost, plan.scale_subscribers, plan.fanout_rounds, 2, say)
        one = await _rpc_spread(watchpost, plan, 1, say)
        two = await _rpc_spread(watchpost, plan, 2, say)
        return {"cross_instance_fanout": fan, "rpc": [one, two]}

    result: dict[str, Any] = await _with_target(watchpost, 2, body)
    one, two = result["rpc"]
    result["rpc_two_vs_one"] = ratio(two["throughput_rps"], one["throughput_rps"])
    result["echo_rpc"] = echo_rows
    result["echo_two_vs_one"] = ratio(echo_rows[1]["throughput_rps"], echo_rows[0]["throughput_rps"])
    result["vs_echo"] = {
        "one_process": ratio(one["throughput_rps"], echo_rows[0]["throughput_rps"]),
        "two_processes": ratio(two["throughput_rps"], echo_rows[1]["throughput_rps"]),
    }
    result["note"] = (
        f"both server processes share the server CPU set {sorted(env.cpus.server_cpus)} "
        f"(the load generator keeps {sorted(env.cpus.client_cpus)}); on a two-core machine a second "
        "process can add no CPU, so two-vs-one shows the cost of splitting, not the gain of a second machine"
    )
    return result


SCENARIOS: dict[str, Callable[[Environment, Plan, Progress], Awaitable[dict[str, Any]]]] = {
    "rpc": rpc,
    "fanout": fanout,
    "idle": idle,
    "scale": scale,
}

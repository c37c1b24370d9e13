"""The bench scenarios (issue: operations and performance): rpc, fanout, idle, scale, connect, collector,
summary, storm, probes.

Each scenario starts the servers it needs fresh, measures the echo reference
and Watchpost the same way, stops everything, and returns a plain dict for the
results file. Sizes come from a :class:`Plan` (full for ``make bench``,
quick for ``--quick``, smoke for the test suite).
"""

from __future__ import annotations

import asyncio
import itertools
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from app.bench import connect as connect_bench
from app.bench.collector import collector
from app.bench.fanout import run_fanout
from app.bench.loadgen import close_all, request_all, run_rpc
from app.bench.probes import probes
from app.bench.stats import ratio
from app.bench.storm import storm
from app.bench.summary import summary
from app.bench.targets import EchoTarget, Environment, Target
from app.bench.watchpost import WatchpostTarget
from app.bench.wsclient import BenchConnection
from app.bench.wsclient import connect as ws_connect
from app.protocol import PkgID


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
    #: collector scenario: HTTP monitor counts, their interval, the measured window.
    collector_monitors: tuple[int, ...] = (1000,)
    collector_interval: int = 10
    collector_duration_s: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PLANS = {
    "full": Plan(
        "full", (1, 50, 200), (1, 8), 1.0, 4.0, (1000, 5000), 40, 5000, 1000, (50, 8), (1000, 5000), 10, 20.0
    ),
    "quick": Plan("quick", (1, 50), (1, 8), 0.5, 2.0, (200,), 10, 500, 200, (50, 8), (1000,), 10, 10.0),
    "smoke": Plan("smoke", (2,), (2,), 0.2, 1.0, (2,), 3, 4, 2, (2, 2), (20,), 2, 2.0),
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
                    target.frames(operation),
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


async def _fanout_on(
    target: Target, subscribers: list[BenchConnection], rounds: int, instances: int, say: Progress
) -> dict[str, Any]:
    """Publish ``rounds`` events to already subscribed connections; the publisher uses instance 0."""
    publish, extra = await target.publisher(0)
    try:
        outcome = await run_fanout(
            subscribers,
            publish,
            rounds=rounds,
            event_pkg_id=target.event_pkg_id,
            topic=target.event_topic,
            server_cpu=target.cpu_seconds,
        )
    finally:
        await close_all(extra)
    row = outcome.to_dict()
    say(
        f"  {target.name:9} {len(subscribers):5} subscribers on {instances} instance(s): "
        f"{row['delivered']}/{row['expected']} delivered, last delivery p50 "
        f"{row['time_to_last_delivery']['p50_ms']:.1f} ms p99 {row['time_to_last_delivery']['p99_ms']:.1f} ms"
    )
    return row


async def _idle_row(target: Target, count: int, pool: list[BenchConnection], say: Progress) -> dict[str, Any]:
    """Open ``count`` idle connections into ``pool`` and measure the server's memory growth."""
    # Warm the server first (imports, caches, first-connection allocations), so
    # the baseline already holds what every connection shares.
    warm = await target.open(min(count, 20), "listen")
    await close_all(warm)
    await asyncio.sleep(1.0)
    before = target.rss_bytes()
    pool.extend(await target.open(count, "listen"))
    await asyncio.sleep(2.0)
    after = target.rss_bytes()
    still_open = sum(ws.is_open for ws in pool[:count])
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


async def _listeners(
    target: Target, plan: Plan, say: Progress, *, idle: bool, fanout: bool
) -> dict[str, Any]:
    """Idle memory, then fanout, on one server and one growing set of connections.

    The idle connections are reused as subscribers (the first N subscribe for
    the N-subscriber fanout), so a full run opens 5,000 connections once
    instead of three times.
    """
    pool: list[BenchConnection] = []
    out: dict[str, Any] = {}
    try:
        if idle:
            out["idle"] = await _idle_row(target, plan.idle_connections, pool, say)
        if fanout:
            rows, subscribed = [], 0
            for count in sorted(plan.fanout_subscribers):
                if len(pool) < count:
                    pool.extend(await target.open(count - len(pool), "listen"))
                if count > subscribed:
                    await target.subscribe(pool[subscribed:count])
                    subscribed = count
                rows.append(await _fanout_on(target, pool[:count], plan.fanout_rounds, 1, say))
            out["fanout"] = rows
    finally:
        await close_all(pool)
    return out


async def listeners(
    env: Environment, plan: Plan, say: Progress, *, idle: bool, fanout: bool
) -> dict[str, Any]:
    """The idle and fanout scenarios for the echo and Watchpost (either or both)."""
    per_target: dict[str, dict[str, Any]] = {}
    for target in (EchoTarget(env), WatchpostTarget(env)):
        say(f"{'idle + fanout' if idle and fanout else 'idle' if idle else 'fanout'}: {target.name}")

        async def body(t: Target = target) -> dict[str, Any]:
            return await _listeners(t, plan, say, idle=idle, fanout=fanout)

        per_target[target.name] = await _with_target(target, 1, body)
    results: dict[str, Any] = {}
    if idle:
        echo, ours = per_target["echo"]["idle"], per_target["watchpost"]["idle"]
        ours["vs_echo"] = {
            "memory_per_connection": ratio(ours["bytes_per_connection"], echo["bytes_per_connection"])
        }
        results["idle"] = {"echo": echo, "watchpost": ours}
    if fanout:
        for row, echo_row in zip(
            per_target["watchpost"]["fanout"], per_target["echo"]["fanout"], strict=True
        ):
            last, echo_last = row["time_to_last_delivery"], echo_row["time_to_last_delivery"]
            row["vs_echo"] = {
                "last_delivery_p50": ratio(last["p50_ms"], echo_last["p50_ms"]),
                "last_delivery_p99": ratio(last["p99_ms"], echo_last["p99_ms"]),
                "server_cpu_per_delivery": ratio(
                    row["server_cpu_us_per_delivery"], echo_row["server_cpu_us_per_delivery"]
                ),
            }
        results["fanout"] = {
            "echo": per_target["echo"]["fanout"],
            "watchpost": per_target["watchpost"]["fanout"],
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
            target.frames("ping"),
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
        count = plan.scale_subscribers
        groups = await asyncio.gather(
            *(watchpost.open(count // 2 + (i < count % 2), "listen", i) for i in (0, 1))
        )
        subscribers = [ws for group in groups for ws in group]
        try:
            await watchpost.subscribe(subscribers)
            fan = await _fanout_on(watchpost, subscribers, plan.fanout_rounds, 2, say)
        finally:
            await close_all(subscribers)
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


async def connect(env: Environment, plan: Plan, say: Progress) -> dict[str, Any]:
    """Authenticated handshakes per second (local JWT, API token) against the bare echo's."""
    count, concurrency = connect_bench.SIZES[plan.name]
    echo = EchoTarget(env)

    async def echo_body() -> dict[str, Any]:
        url = f"ws://127.0.0.1:{echo.ports[0]}/echo"
        return await connect_bench.measure(
            "none (echo)", lambda: ws_connect(url), count, concurrency, echo.cpu_seconds
        )

    say("connect: echo reference")
    reference = await _with_target(echo, 1, echo_body)
    say(f"  {'echo':9} {count} handshakes: {reference['handshakes_per_s']:.0f}/s")
    watchpost = WatchpostTarget(env)

    async def check(connections: list[BenchConnection]) -> None:
        # A refused credential still completes the HTTP handshake, then closes: PING proves each is in.
        for reply in await request_all(connections, PkgID.PING, {}):
            if reply.get("status_code") != 0:
                raise RuntimeError(f"connect: a connection is not usable: {reply}")

    async def body() -> list[dict[str, Any]]:
        rows = []
        api_token = await watchpost.create_api_token()
        kinds: list[tuple[str, Iterator[str]]] = [
            ("local JWT", itertools.repeat(watchpost.token)),
            ("API token", itertools.repeat(api_token)),
            # Every handshake with a token the server has not seen: the uncached path.
            (connect_bench.FRESH_JWT, iter(watchpost.fresh_tokens(count))),
        ]
        for label, tokens in kinds:

            def open_one(source: Iterator[str] = tokens) -> Awaitable[BenchConnection]:
                return watchpost.connect_one(next(source))

            row = await connect_bench.measure(
                label, open_one, count, concurrency, watchpost.cpu_seconds, check
            )
            say(
                f"  {'watchpost':9} {count} handshakes ({label}): {row['handshakes_per_s']:.0f}/s, "
                f"server {row['server_cpu_us_per_handshake']} us each"
            )
            rows.append(row)
        return rows

    say("connect: watchpost")
    rows = await _with_target(watchpost, 1, body)
    connect_bench.add_ratios(rows, reference)
    return {"echo": reference, "watchpost": rows, "watchpost_settings": watchpost.settings()}


#: Scenario names in run order; "fanout" and "idle" share one run (``listeners``).
NAMES = ("rpc", "fanout", "idle", "scale", "connect", "collector", "summary", "storm", "probes")


async def run_selected(
    names: list[str], env: Environment, plan: Plan, say: Progress
) -> tuple[dict[str, Any], list[str]]:
    """Run the named scenarios; returns (results by scenario, failures as sentences)."""
    results: dict[str, Any] = {}
    errors: list[str] = []
    steps: list[str] = []
    for name in NAMES:
        if name in names:
            step = "listeners" if name in ("fanout", "idle") else name
            if step not in steps:
                steps.append(step)
    for step in steps:
        say(f"== {step}")
        try:
            if step == "listeners":
                results.update(
                    await listeners(env, plan, say, idle="idle" in names, fanout="fanout" in names)
                )
            elif step == "rpc":
                results["rpc"] = await rpc(env, plan, say)
            elif step == "connect":
                results["connect"] = await connect(env, plan, say)
            elif step == "collector":
                results["collector"] = await collector(
                    env, plan.collector_monitors, plan.collector_interval, plan.collector_duration_s, say
                )
            elif step == "summary":
                results["summary"] = await summary(env, plan.name, say)
            elif step == "storm":
                results["storm"] = await storm(env, plan.name, say)
            elif step == "probes":
                results["probes"] = await probes(env, plan.name, say)
            else:
                results["scale"] = await scale(env, plan, say)
        except Exception as exc:  # noqa: BLE001 - record the failure and go on with the next scenario
            traceback.print_exc()
            errors.append(f"{step}: {exc!r}")
    return results, errors

"""The ``probes`` bench scenario (docs/probes.md, issue 20's scale targets). Two parts, each
on a fresh Watchpost (PostgreSQL + Redis, collector off: the probe side is what is measured):

(a) **one probe**: ``python -m app.probe`` (its own process, on the client CPUs) with
    ``N`` HTTP monitors at ``interval`` seconds assigned to its location, checking
    :mod:`app.bench.http_target` (one path per monitor). Over the window: the probe's
    CPU share (CPU seconds / wall seconds; 1.0 is one core) and CPU per check, the
    check start lag (each arrival at the target against its monitor's due time: the
    probe starts monitor ``m`` at ``k * interval + phase(m)``, :mod:`app.probe.schedule`),
    checks/s arriving against those due, and results/s stored by the server.
    Target (issue 20): >= 1,000 monitors at 60 s on one core, keeping up.
(b) **the server taking reports**: ``P`` simulated probes (probe tokens, 2 per location
    so every monitor's 10 locations stay under the 16 allowed) each holding ``M``
    monitors at ``interval``: every second each sends one PROBE_REPORT with the results
    due in that second, the probes staggered over the second (``P * M / interval``
    results/s in all; 20 x 1,000 at 60 s is 333/s), over real sockets. Over the
    window: the server's CPU share, the report answer latency p50/p99, results
    accepted against sent, and whether it kept up (every report answered, none
    refused, the answer p99 under a second).
"""

from __future__ import annotations

import asyncio
import math
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlmodel import col

from app.bench.loadgen import close_all
from app.bench.servers import ServerProcess, free_port, python_module, scrubbed_env
from app.bench.stats import summarize_ns
from app.bench.targets import Environment
from app.bench.watchpost import WatchpostTarget, _expect_ok
from app.bench.wsclient import BenchConnection, connect
from app.models.probe import LocationCheck
from app.probe.schedule import phase
from app.protocol import SUBPROTOCOL, PkgID
from app.storage.db import Database

#: Sizes per plan: (a) monitors, interval, window; (b) probes, monitors each, interval, window.
SIZES: dict[str, dict[str, Any]] = {
    "full": dict(monitors=1000, interval=60, window_s=60.0, probes=20, per_probe=1000, sim_s=60.0),
    "quick": dict(monitors=1000, interval=60, window_s=30.0, probes=20, per_probe=1000, sim_s=20.0),
    "smoke": dict(monitors=20, interval=2, window_s=3.0, probes=2, per_probe=20, sim_s=3.0),
}
#: Locations the simulated probes are spread over (two tokens each).
SIM_LOCATIONS = 10


class ProbesTarget(WatchpostTarget):
    """Watchpost allowing the smoke plan's 2 s intervals (the default minimum is 10 s)."""

    def server_env(self, port: int) -> dict[str, str]:
        env = super().server_env(port)
        env["MONITOR_MIN_INTERVAL"] = "1"
        return env


async def _ws(target: WatchpostTarget, token: str) -> BenchConnection:
    return await connect(
        f"ws://127.0.0.1:{target.ports[0]}/web",
        headers={"Authorization": f"Bearer {token}"},
        subprotocols=[SUBPROTOCOL],
    )


async def _probe_token(admin: BenchConnection, location: str, name: str) -> str:
    reply = await admin.request(PkgID.TOKEN_CREATE, {"name": name, "role": "probe", "location": location})
    _expect_ok(reply, "TOKEN_CREATE (probe)")
    return str(reply["data"]["token"])


async def _create_monitors(
    admin: BenchConnection, count: int, interval: int, locations: list[str], url: Any
) -> list[int]:
    ids = []
    for number in range(count):
        reply = await admin.request(
            PkgID.MONITOR_CREATE,
            {
                "name": f"bench probe {number}",
                "kind": "http",
                "url": url(number),
                "interval": interval,
                "timeout": min(5, interval / 2),
                "locations": locations,
                "quorum": 1,
            },
        )
        _expect_ok(reply, "MONITOR_CREATE (probe locations)")
        ids.append(int(reply["data"]["id"]))
    return ids


async def _stored(db: Database, location: str, since: datetime) -> int:
    async with db.session() as s:
        return int(
            (
                await s.execute(
                    select(func.count())
                    .select_from(LocationCheck)
                    .where(col(LocationCheck.location) == location, col(LocationCheck.ts) >= since)
                )
            ).scalar_one()
        )


async def one_probe(
    env: Environment, monitors: int, interval: int, window_s: float, say: Any
) -> dict[str, Any]:
    """(a): one probe process, ``monitors`` HTTP monitors at ``interval`` s."""
    location = "bench-probe"
    port = free_port()
    http_target = ServerProcess(
        f"http-target-{port}",
        python_module("app.bench.http_target", "--port", str(port)),
        scrubbed_env(),
        env.cpus.client_cpus,
        env.log_dir / f"http-target-{port}.log",
    )
    server = ProbesTarget(env)
    state_dir = Path(tempfile.mkdtemp(prefix="bench-probe-"))
    probe: ServerProcess | None = None
    try:
        await server.start(1)
        admin = await _ws(server, server.token)
        try:
            token = await _probe_token(admin, location, "bench probe")
            ids = await _create_monitors(
                admin, monitors, interval, [location], lambda n: f"http://127.0.0.1:{port}/m/{n}"
            )
        finally:
            await admin.close()
        number_to_id = dict(enumerate(ids))
        probe = ServerProcess(
            "probe",
            python_module(
                "app.probe", "--url", f"ws://127.0.0.1:{server.ports[0]}/web", "--token", token,
                "--location", location, "--state-dir", str(state_dir), "--log-level", "WARNING",
            ),
            scrubbed_env(PYTHONUNBUFFERED="1"),
            env.cpus.client_cpus,
            env.log_dir / "probe.log",
        )  # fmt: skip
        db = Database(server.database.url)
        async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
            # Connected, assignments loaded, first checks made: then measure the steady state.
            warm_start = time.monotonic()
            since = datetime.now(UTC)
            while await _stored(db, location, since) == 0:
                if time.monotonic() - warm_start > interval + 30:
                    raise RuntimeError(
                        f"probes: no result from the probe after {interval + 30} s:\n{probe.log_tail()}"
                    )
                await asyncio.sleep(0.5)
            await asyncio.sleep(min(2.0, interval / 2))
            await client.get(f"http://127.0.0.1:{port}/__stats")  # clears the warm-up hits
            cpu0, wall0, started = probe.cpu_seconds(), time.monotonic(), datetime.now(UTC)
            await asyncio.sleep(window_s)
            hits = (await client.get(f"http://127.0.0.1:{port}/__stats")).json()
            cpu, wall, ended = probe.cpu_seconds() - cpu0, time.monotonic() - wall0, datetime.now(UTC)
            # Results started in the window, given a report period (and a little) to arrive.
            await asyncio.sleep(2.5)
            stored = await _stored(db, location, started) - await _stored(db, location, ended)
        await db.close()
        alive = probe.proc.poll() is None
    finally:
        if probe is not None:
            await probe.stop()
        await server.stop()
        await http_target.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
    lags_ns = []
    checked = set()
    for path, arrived, _answer in hits:
        number = int(str(path).rsplit("/", 1)[1])
        checked.add(number)
        due_offset = phase(number_to_id[number], interval)
        lags_ns.append(int(((float(arrived) - due_offset) % interval) * 1e9))
    lag = summarize_ns(lags_ns)
    row: dict[str, Any] = {
        "monitors": monitors,
        "interval_s": interval,
        "duration_s": round(wall, 2),
        "due_per_s": round(monitors / interval, 1),
        "checks_per_s": round(len(hits) / wall, 1),
        "results_per_s": round(stored / wall, 1),
        "probe_cpu_share": round(cpu / wall, 3),
        "cpu_ms_per_check": round(cpu * 1000 / len(hits), 3) if hits else None,
        "start_lag": lag,
        "target_answer_ms_p50": round(statistics.median(float(h[2]) for h in hits), 3) if hits else None,
        "not_checked": monitors - len(checked) if wall >= interval else None,
        "probe_alive": alive,
    }
    say(
        f"  probe {monitors} monitors / {interval} s: {row['checks_per_s']}/s of {row['due_per_s']} due, "
        f"{row['results_per_s']} results/s stored, CPU {row['probe_cpu_share']:.1%} "
        f"({row['cpu_ms_per_check']} ms/check), "
        f"start lag p50 {lag['p50_ms']:.1f} ms p99 {lag['p99_ms']:.1f} ms"
    )
    return row


async def _simulated_probe(
    ws: BenchConnection,
    name: str,
    ids: list[int],
    interval: int,
    window_s: float,
    latencies: list[int],
    offset: float,
) -> dict[str, int]:
    """Every second, one PROBE_REPORT of the results due in that second (by each monitor's phase).

    ``offset`` (a fraction of a second) staggers the probes: real ones started at different
    moments and do not all report in the same millisecond."""
    hello = await ws.request(PkgID.PROBE_HELLO, {"version": "bench"})
    _expect_ok(hello, "PROBE_HELLO")
    await asyncio.sleep(offset)
    sent = accepted = duplicates = refused = failed = reports = 0
    counter = 0
    phases = [(m, phase(m, interval)) for m in ids]
    start = time.time()
    second = 0
    while (now := time.time()) < start + window_s:
        a, b = start + second, start + second + 1
        due = [m for m, ph in phases if math.floor((b - ph) / interval) > math.floor((a - ph) / interval)]
        if due:
            ts = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            results = []
            for m in due:
                counter += 1
                results.append(
                    {"key": f"{name}:{counter}", "monitor_id": m, "ts": ts, "ok": True, "latency_ms": 1.0,
                     "status_code": 200, "error": None}
                )  # fmt: skip
            t0 = time.perf_counter_ns()
            reply = await ws.request(PkgID.PROBE_REPORT, {"results": results}, wait_s=30.0)
            latencies.append(time.perf_counter_ns() - t0)
            reports += 1
            sent += len(results)
            if reply.get("status_code") == 0:
                data = reply["data"]
                accepted += int(data.get("accepted", 0))
                duplicates += int(data.get("duplicates", 0))
                refused += len(data.get("refused") or [])
            else:
                failed += len(results)
        second += 1
        await asyncio.sleep(max(0.0, start + second - time.time()))
    return {"reports": reports, "sent": sent, "accepted": accepted, "duplicates": duplicates,
            "refused": refused, "failed": failed}  # fmt: skip


async def server_reports(
    env: Environment, probes: int, per_probe: int, interval: int, window_s: float, say: Any
) -> dict[str, Any]:
    """(b): ``probes`` simulated probes x ``per_probe`` monitors at ``interval`` s, reports over sockets."""
    server = ProbesTarget(env)
    connections: list[BenchConnection] = []
    try:
        await server.start(1)
        admin = await _ws(server, server.token)
        locations = [f"bench-loc-{n:02}" for n in range(min(SIM_LOCATIONS, probes))]
        try:
            tokens = [
                await _probe_token(admin, locations[n % len(locations)], f"bench sim probe {n}")
                for n in range(probes)
            ]
            ids = await _create_monitors(
                admin, per_probe, interval, locations, lambda n: f"http://127.0.0.1:9/sim/{n}"
            )
        finally:
            await admin.close()
        connections = [await _ws(server, token) for token in tokens]
        latencies: list[int] = []
        cpu0, wall0 = server.cpu_seconds(), time.monotonic()
        counts = await asyncio.gather(
            *(
                _simulated_probe(ws, f"sim{n}", ids, interval, window_s, latencies, n / len(connections))
                for n, ws in enumerate(connections)
            )
        )
        cpu, wall = server.cpu_seconds() - cpu0, time.monotonic() - wall0
    finally:
        await close_all(connections)
        await server.stop()
    total = {k: sum(c[k] for c in counts) for k in counts[0]}
    answer = summarize_ns(latencies)
    row: dict[str, Any] = {
        "probes": probes,
        "monitors_per_probe": per_probe,
        "interval_s": interval,
        "duration_s": round(wall, 2),
        "due_results_per_s": round(probes * per_probe / interval, 1),
        "results_per_s": round(total["sent"] / wall, 1),
        **total,
        "server_cpu_share": round(cpu / wall, 3),
        "server_cpu_us_per_result": round(cpu * 1e6 / total["sent"], 1) if total["sent"] else None,
        "report_answer": answer,
    }
    row["kept_up"] = (
        total["failed"] == 0
        and total["refused"] == 0
        and total["accepted"] == total["sent"]
        and answer["p99_ms"] < 1000
    )
    say(
        f"  server {probes} probes x {per_probe} monitors / {interval} s: {row['results_per_s']} results/s "
        f"of {row['due_results_per_s']} due, accepted {total['accepted']}/{total['sent']}, "
        f"CPU {row['server_cpu_share']:.1%}, "
        f"answer p50 {answer['p50_ms']:.1f} ms p99 {answer['p99_ms']:.1f} ms, "
        f"kept up: {row['kept_up']}"
    )
    return row


async def probes(env: Environment, plan_name: str, say: Any) -> dict[str, Any]:
    size = SIZES[plan_name]
    say("probes (a): one probe process")
    probe_row = await one_probe(env, size["monitors"], size["interval"], size["window_s"], say)
    say("probes (b): the server taking simulated probes' reports")
    server_row = await server_reports(
        env, size["probes"], size["per_probe"], size["interval"], size["sim_s"], say
    )
    return {"probe": [probe_row], "server": [server_row]}


def evaluate(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 20: one probe keeps up with its monitors on one core; the server keeps up with 20 probes."""
    checks = []
    for row in result.get("probe", []):
        checks.append(
            {
                "target": f"probes: one probe, {row['monitors']} HTTP monitors at {row['interval_s']} s",
                "wanted": "every due check started (checks/s >= 95% of due), under one core, lag p99 < 1 s",
                "measured": (
                    f"{row['checks_per_s']}/s of {row['due_per_s']} due, CPU {row['probe_cpu_share']}, "
                    f"lag p99 {row['start_lag']['p99_ms']} ms"
                ),
                "met": row["checks_per_s"] >= 0.95 * row["due_per_s"]
                and row["probe_cpu_share"] < 1.0
                and row["start_lag"]["p99_ms"] < 1000,
                "detail": "",
            }
        )
    for row in result.get("server", []):
        checks.append(
            {
                "target": (
                    f"probes: server takes {row['probes']} probes x {row['monitors_per_probe']} monitors "
                    f"at {row['interval_s']} s"
                ),
                "wanted": f"{row['due_results_per_s']} results/s all accepted, answer p99 < 1 s",
                "measured": (
                    f"{row['results_per_s']}/s, accepted {row['accepted']}/{row['sent']}, "
                    f"p99 {row['report_answer']['p99_ms']} ms, CPU {row['server_cpu_share']}"
                ),
                "met": bool(row["kept_up"]),
                "detail": "",
            }
        )
    return checks


def markdown_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## probes (one probe process; the server taking simulated probes' reports)",
        "",
        "| monitors | interval s | checks/s | due/s | results/s stored | probe CPU | ms/check "
        "| start lag p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.get("probe", []):
        lag = r["start_lag"]
        lines.append(
            f"| {r['monitors']} | {r['interval_s']} | {r['checks_per_s']} | {r['due_per_s']} "
            f"| {r['results_per_s']} | {r['probe_cpu_share']} | {r['cpu_ms_per_check']} "
            f"| {lag['p50_ms']} | {lag['p99_ms']} |"
        )
    lines += [
        "",
        "| probes x monitors | results/s | due/s | accepted/sent | server CPU | answer p50 ms | p99 ms "
        "| kept up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result.get("server", []):
        a = r["report_answer"]
        lines.append(
            f"| {r['probes']} x {r['monitors_per_probe']} | {r['results_per_s']} | {r['due_results_per_s']} "
            f"| {r['accepted']}/{r['sent']} | {r['server_cpu_share']} | {a['p50_ms']} | {a['p99_ms']} "
            f"| {r['kept_up']} |"
        )
    return lines

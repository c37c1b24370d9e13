"""The bench cannot rot: a tiny real run (its bookkeeping: tests/unit/test_bench_report.py).

The smoke run is ``python -m app.bench --scenario rpc,fanout,connect --smoke``: it
starts the echo reference and a real Watchpost server on a scratch PostgreSQL
database and Redis, drives 2 connections for a second, fans 3 events out to
2 subscribers and opens 20 connections per credential kind, and must write a
results file in which nothing was lost, duplicated or answered with an error.
The full bench (``make bench``) stays out of the test suite.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests import services

ROOT = Path(__file__).resolve().parent.parent


def _bench_databases() -> set[str]:
    async def names() -> set[str]:
        conn = await asyncpg.connect(services.PG_ADMIN_URL)
        try:
            rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'watchpost_bench_%'")
        finally:
            await conn.close()
        return {row["datname"] for row in rows}

    return asyncio.run(names())


def _smoke(scenarios: str, results_dir: Path) -> subprocess.CompletedProcess[str]:
    """``python -m app.bench --scenario <scenarios> --smoke`` with nothing but the services' URLs."""
    env = {
        "PATH": "/usr/bin:/bin",
        "TEST_POSTGRES_URL": services.PG_ADMIN_URL,
        "TEST_REDIS_URL": services.redis_test_url(),
    }
    args = ["--scenario", scenarios, "--smoke", "--results-dir", str(results_dir)]
    return subprocess.run(
        [sys.executable, "-m", "app.bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )


def test_smoke_run_writes_results_with_nothing_lost(tmp_path: Path) -> None:
    databases_before = _bench_databases()
    run = _smoke("rpc,fanout,connect", tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (json_path,) = tmp_path.glob("*.json")
    assert json_path.with_suffix(".md").exists()
    results = json.loads(json_path.read_text())
    assert results["errors"] == []
    assert results["machine"]["nproc"] >= 1 and results["machine"]["python"]

    rpc = results["scenarios"]["rpc"]
    rows = rpc["echo"] + rpc["watchpost"]
    assert {r["operation"] for r in rpc["watchpost"]} == {"ping", "monitor_get"}
    for row in rows:
        assert row["throughput_rps"] > 0, row
        assert row["sent"] == row["received"] > 0, row
        assert (row["lost"], row["duplicated_or_unexpected"], row["errors"]) == (0, 0, 0), row
        assert row["latency"]["p50_ms"] <= row["latency"]["p99_ms"] <= row["latency"]["max_ms"]
    assert all("vs_echo" in row for row in rpc["watchpost"])

    fanout = results["scenarios"]["fanout"]
    for row in fanout["echo"] + fanout["watchpost"]:
        assert row["expected"] == row["subscribers"] * row["rounds"] > 0
        assert row["delivered"] == row["expected"], row
        assert row["duplicated"] == 0 and row["timed_out_rounds"] == 0, row

    connect = results["scenarios"]["connect"]
    assert [r["credential"] for r in connect["watchpost"]] == [
        "local JWT",
        "API token",
        "local JWT, each new",
    ]
    for row in [connect["echo"], *connect["watchpost"]]:
        # Every handshake completed and (for Watchpost) answered a PING: the run raises otherwise.
        assert row["handshakes_per_s"] > 0 and row["connections"] == 20, row

    (verdict,) = [t for t in results["targets"] if t["target"].startswith("nothing lost")]
    assert verdict["met"] is True
    assert _bench_databases() <= databases_before, "the bench left its scratch database behind"


def test_probes_smoke_run_measures_a_probe_and_the_servers_report_intake(tmp_path: Path) -> None:
    """``--scenario probes --smoke``: one real probe process with 20 monitors at 2 s, then
    2 simulated probes reporting 20 monitors each over real sockets."""
    run = _smoke("probes", tmp_path)
    (json_path,) = tmp_path.glob("*.json")
    results = json.loads(json_path.read_text())
    assert results["errors"] == [], run.stdout[-3000:] + run.stderr[-3000:]
    (probe,) = results["scenarios"]["probes"]["probe"]
    assert probe["probe_alive"] and probe["checks_per_s"] > 0 and probe["results_per_s"] > 0, probe
    assert probe["start_lag"]["count"] > 0 and probe["start_lag"]["p99_ms"] < 1000, probe
    (server,) = results["scenarios"]["probes"]["server"]
    assert server["sent"] > 0 and server["accepted"] == server["sent"] and server["refused"] == 0, server
    assert server["report_answer"]["count"] == server["reports"] > 0, server

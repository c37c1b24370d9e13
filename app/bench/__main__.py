"""``python -m app.bench``: run bench scenarios and write a results file.

    python -m app.bench                       # everything, full size (make bench)
    python -m app.bench --scenario rpc --quick
    python -m app.bench --scenario rpc,fanout --results-dir /tmp/bench

Needs PostgreSQL (``--postgres-admin-url``, a role that may CREATE DATABASE)
and Redis (``--redis-url``). Exit status: 0 when every scenario ran and every
measured target was met, 1 when a target was missed, 2 when a scenario failed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from app.bench.report import baseline_summary, evaluate, machine_info, write_results
from app.bench.scenarios import NAMES, PLANS, run_selected
from app.bench.servers import ROOT, CpuPlan
from app.bench.targets import Environment

DEFAULT_RESULTS_DIR = ROOT / "test-artifacts" / "bench"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario",
        default="all",
        help=f"comma-separated scenarios out of {', '.join(NAMES)}, or 'all' (default)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes and short windows (about a minute)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes for the test suite (seconds)")
    parser.add_argument(
        "--collector-monitors",
        default=None,
        help="collector scenario: comma-separated HTTP monitor counts instead of the plan's (e.g. 5000)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=DEFAULT_RESULTS_DIR,
        help=f"where <timestamp>.json and .md go (created; default {DEFAULT_RESULTS_DIR.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        help="also copy the results as latest.json and latest.md into this directory (e.g. docs/bench)",
    )
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get("BENCH_POSTGRES_URL")
        or os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="libpq URL used to create and drop the scratch database (env BENCH_POSTGRES_URL)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL")
        or os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for broker and limiter; keys use a fresh prefix, deleted after (env BENCH_REDIS_URL)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and load generator to CPUs")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="an earlier results .json: each target is shown with its value there (before/after)",
    )
    parser.add_argument(
        "--notes",
        type=Path,
        default=None,
        help="a Markdown file copied into the results (e.g. the profiling behind a before/after)",
    )
    args = parser.parse_args(argv)
    names = list(NAMES) if args.scenario == "all" else [s.strip() for s in args.scenario.split(",") if s]
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(NAMES)} or all")
    args.names = names
    for option in ("baseline", "notes"):
        path = getattr(args, option)
        if path is not None and not path.is_file():
            parser.error(f"--{option} {path}: no such file")
    return args


def _say(line: str) -> None:
    print(line, flush=True)


async def _run(args: argparse.Namespace, cpus: CpuPlan) -> dict[str, Any]:
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.collector_monitors:
        sizes = tuple(int(n) for n in args.collector_monitors.split(",") if n.strip())
        plan = dataclasses.replace(plan, collector_monitors=sizes)
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    env = Environment(
        cpus=cpus,
        log_dir=args.results_dir / "logs" / started.strftime("%Y%m%dT%H%M%SZ"),
        postgres_admin_url=args.postgres_admin_url,
        redis_url=args.redis_url,
    )
    results: dict[str, Any] = {
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m app.bench " + shlex.join(sys.argv[1:]),
        "machine": machine_info(),
        "settings": {
            "plan": plan.to_dict(),
            "scenarios": args.names,
            "cpus": cpus.note,
            "server_cpus": sorted(cpus.server_cpus),
            "load_generator_cpus": sorted(cpus.client_cpus),
            "event_loop": type(asyncio.get_running_loop()).__module__,
            "server_logs": str(env.log_dir),
        },
        "scenarios": {},
        "errors": [],
    }
    clock = time.monotonic()
    results["scenarios"], results["errors"] = await run_selected(args.names, env, plan, _say)
    results["elapsed_s"] = round(time.monotonic() - clock, 1)
    results["targets"] = evaluate(results["scenarios"])
    if args.baseline is not None:
        results["baseline"] = baseline_summary(args.baseline)
    if args.notes is not None:
        results["notes"] = args.notes.read_text()
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    cpus = CpuPlan.choose(pin=not args.no_pin)
    cpus.pin_self()
    _say(f"bench: {cpus.note}; results in {args.results_dir}")
    try:
        import uvloop
    except ImportError:  # the bench still runs, a little slower, on the stdlib loop
        results = asyncio.run(_run(args, cpus))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = runner.run(_run(args, cpus))
    json_path, md_path = write_results(results, args.results_dir)
    if args.publish:
        args.publish.mkdir(parents=True, exist_ok=True)
        (args.publish / "latest.json").write_bytes(json_path.read_bytes())
        (args.publish / "latest.md").write_text(md_path.read_text())
    _say(md_path.read_text())
    _say(f"results: {json_path} and {md_path}")
    if results["errors"]:
        return 2
    return 0 if all(check["met"] is not False for check in results["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Status page fan-out: N anonymous viewers of one public page receive a state change.

    python -m app.bench.status_pages --viewers 5000 --rounds 10 --results-dir docs/bench

One Watchpost server (PostgreSQL + Redis, the bench's settings plus anonymous limits
raised: every viewer comes from loopback). A public page shows the bench's push
monitor. ``viewers`` sockets connect to ``/web?status_page=<slug>`` with no
credential, read the page (STATUS_PAGE_VIEW) and subscribe to its topic. Each round
pauses or resumes the monitor (a committed state change; the handler publishes
EVENT_MONITOR_STATUS on ``status_page.<id>``) and times its arrival at every viewer
with the fan-out machinery (app/bench/fanout.py): every viewer must get every event
exactly once. Also measured: GET /status/<slug> of a page showing ``--page-monitors``
monitors (the first render, then the cached one).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from app.bench.fanout import Publish, run_fanout
from app.bench.loadgen import close_all, open_connections, request_all
from app.bench.servers import CpuPlan
from app.bench.targets import Environment
from app.bench.watchpost import BENCH_SETTINGS, WatchpostTarget, _expect_ok
from app.bench.wsclient import BenchConnection
from app.protocol import SUBPROTOCOL, PkgID

PAGE_SETTINGS = {"STATUS_PAGE_MAX_PER_ADDRESS": "100000", "STATUS_PAGE_MAX_VIEWERS": "100000"}


class StatusPageTarget(WatchpostTarget):
    name = "watchpost-status-page"
    event_pkg_id = int(PkgID.EVENT_MONITOR_STATUS)

    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        self.slug = "bench-status"
        self.page_id = 0
        self.event_topic = ""
        self.paused = False

    def server_env(self, port: int) -> dict[str, str]:
        return {**super().server_env(port), **PAGE_SETTINGS}

    async def create_page(self, extra_monitors: int) -> None:
        await self._create_read_monitors(extra_monitors)
        (ws,) = await self._connect(1, 0)
        try:
            ids = list(dict.fromkeys([self.monitor_id, *self.read_monitor_ids]))
            sections = [
                {"title": f"Section {i // 50 + 1}", "monitors": ids[i : i + 50]}
                for i in range(0, len(ids), 50)
            ]
            reply = await ws.request(
                PkgID.STATUS_PAGE_CREATE,
                {"slug": self.slug, "title": "Bench status", "public": True, "sections": sections},
            )
            _expect_ok(reply, "STATUS_PAGE_CREATE")
            self.page_id = int(reply["data"]["id"])
            self.event_topic = f"status_page.{self.page_id}"
        finally:
            await ws.close()

    async def open_viewers(self, count: int) -> list[BenchConnection]:
        viewers = await open_connections(
            f"{self._url(0)}?status_page={self.slug}", count, subprotocols=[SUBPROTOCOL]
        )
        try:
            for reply in await request_all(viewers, PkgID.SUBSCRIBE, {"topics": [self.event_topic]}):
                _expect_ok(reply, "SUBSCRIBE")
        except BaseException:
            await close_all(viewers)
            raise
        return viewers

    async def page_publisher(self) -> tuple[Publish, list[BenchConnection]]:
        (ws,) = await self._connect(1, 0)

        async def publish(_number: int) -> None:
            pkg = PkgID.MONITOR_RESUME if self.paused else PkgID.MONITOR_PAUSE
            _expect_ok(await ws.request(pkg, {"id": self.monitor_id}), pkg.name)
            self.paused = not self.paused

        return publish, [ws]


async def _render_times(target: StatusPageTarget, repeats: int) -> list[float]:
    url = f"http://127.0.0.1:{target.ports[0]}/status/{target.slug}"
    times = []
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
        for _ in range(repeats):
            started = time.perf_counter()
            reply = await client.get(url)
            times.append(round((time.perf_counter() - started) * 1000, 1))
            if reply.status_code != 200:
                raise RuntimeError(f"GET /status: HTTP {reply.status_code}")
            await asyncio.sleep(2.1)  # past the view cache: every sample is a fresh build
    return times


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = Environment(
        cpus=CpuPlan.choose(pin=not args.no_pin),
        log_dir=args.results_dir / "logs" / dt.datetime.now(dt.UTC).strftime("status-pages-%Y%m%dT%H%M%SZ"),
        postgres_admin_url=args.postgres_admin_url,
        redis_url=args.redis_url,
    )
    target = StatusPageTarget(env)
    await target.start()
    try:
        await target.create_page(args.page_monitors - 1)
        render_ms = await _render_times(target, 3)
        print(f"GET /status with {args.page_monitors} monitors: {render_ms} ms", flush=True)
        started = time.perf_counter()
        viewers = await target.open_viewers(args.viewers)
        opened_s = round(time.perf_counter() - started, 1)
        print(f"{len(viewers)} anonymous viewers connected and subscribed in {opened_s} s", flush=True)
        publish, extra = await target.page_publisher()
        try:
            outcome = await run_fanout(
                viewers,
                publish,
                rounds=args.rounds,
                event_pkg_id=target.event_pkg_id,
                topic=target.event_topic,
                round_timeout_s=30.0,
                server_cpu=target.cpu_seconds,
            )
        finally:
            await close_all([*extra, *viewers])
    finally:
        await target.stop()
    row = outcome.to_dict()
    print(
        f"{row['delivered']}/{row['expected']} delivered, lost {row['lost']}, "
        f"duplicated {row['duplicated']}; "
        f"time to last viewer p50 {row['time_to_last_delivery']['p50_ms']} ms "
        f"max {row['time_to_last_delivery']['max_ms']} ms",
        flush=True,
    )
    return {
        "command": "python -m app.bench.status_pages " + " ".join(args.argv),
        "viewers": args.viewers,
        "page_monitors": args.page_monitors,
        "render_ms_uncached": render_ms,
        "viewers_connect_s": opened_s,
        "fanout": row,
        "settings": {**BENCH_SETTINGS, **PAGE_SETTINGS},
        "cpus": env.cpus.note,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.bench.status_pages", description=__doc__)
    parser.add_argument("--viewers", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--page-monitors", type=int, default=200, help="monitors on the page (at most 201)")
    parser.add_argument("--results-dir", type=Path, default=Path("test-artifacts/bench"))
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run(args))
    out = args.results_dir / "status-pages.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    ok = result["fanout"]["lost"] == 0 and result["fanout"]["duplicated"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

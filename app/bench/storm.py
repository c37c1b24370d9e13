"""The ``storm`` bench scenario: N simultaneous SUBSCRIBEs with ``since`` recovery on the Redis broker.

What every dashboard does after a deploy or failover: reconnect and resubscribe
at once, asking for the events it missed. One Watchpost instance (PostgreSQL +
Redis broker). Set-up: ``N`` connections are opened (not timed), a first
SUBSCRIBE on one of them reads the current seq of ``monitors``, then a few real
monitor updates are published so the history holds events after that seq. The
storm: every connection sends SUBSCRIBE ``{"topics": ["monitors"], "since":
{"monitors": seq}}`` in the same loop iteration; the row records the time until
the last answer, the answers by status code, how many recovered, and whether
each recovered one replayed exactly the events published meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from app.bench.loadgen import close_all
from app.bench.stats import summarize_ns
from app.bench.targets import Environment
from app.bench.watchpost import WatchpostTarget
from app.protocol import PkgID

#: Simultaneous SUBSCRIBEs by plan name (the issue's figure is 5,000).
SIZES = {"full": 5000, "quick": 3000, "smoke": 4}
#: Events published between the seq the clients hold and the storm: each must be replayed.
MISSED_EVENTS = 3
#: How long the storm may take before an answer counts as missing.
ANSWER_WAIT_S = 60.0


async def storm(env: Environment, plan_name: str, say: Any) -> dict[str, Any]:
    count = SIZES[plan_name]
    target = WatchpostTarget(env)
    await target.start(1)
    connections = []
    try:
        connections = await target.open(count, "listen")
        probe = connections[0]
        first = await probe.request(PkgID.SUBSCRIBE, {"topics": ["monitors"]})
        if first.get("status_code") != 0:
            raise RuntimeError(f"storm: first SUBSCRIBE failed: {first}")
        since = int(first["data"]["topics"]["monitors"]["seq"])
        await probe.request(PkgID.UNSUBSCRIBE, {"topics": ["monitors"]})
        publish, extra = await target.publisher(0)
        try:
            for number in range(MISSED_EVENTS):
                await publish(number)
        finally:
            await close_all(extra)
        data = {"topics": ["monitors"], "since": {"monitors": since}}
        cpu0, wall0 = target.cpu_seconds(), time.perf_counter()
        answered_at: list[int] = []

        async def one(ws: Any) -> dict[str, Any]:
            reply: dict[str, Any] = await ws.request(PkgID.SUBSCRIBE, data, wait_s=ANSWER_WAIT_S)
            answered_at.append(time.perf_counter_ns())
            return reply

        start_ns = time.perf_counter_ns()
        replies = await asyncio.gather(*(one(ws) for ws in connections), return_exceptions=True)
        wall = time.perf_counter() - wall0
        cpu = target.cpu_seconds() - cpu0
    finally:
        await close_all(connections)
        await target.stop()
    codes: Counter[str] = Counter()
    recovered = exact_replay = 0
    samples: list[str] = []
    for reply in replies:
        if isinstance(reply, BaseException):
            codes["no answer" if isinstance(reply, TimeoutError) else type(reply).__name__] += 1
            continue
        code = reply.get("status_code")
        codes[str(code)] += 1
        if code != 0:
            if len(samples) < 3:
                samples.append(str(reply)[:200])
            continue
        topic = reply["data"]["topics"]["monitors"]
        recovered += bool(topic.get("recovered"))
        exact_replay += topic.get("replayed") == MISSED_EVENTS
    row: dict[str, Any] = {
        "subscribers": count,
        "missed_events": MISSED_EVENTS,
        "answers_by_code": dict(sorted(codes.items())),
        "answered_0": codes.get("0", 0),
        "recovered": recovered,
        "replayed_exactly": exact_replay,
        "all_answered_s": round(wall, 3),
        "answer_time": summarize_ns([t - start_ns for t in answered_at]),
        "server_cpu_s": round(cpu, 3),
        "not_ok_samples": samples,
    }
    say(
        f"  watchpost {count} SUBSCRIBEs with since: answers {row['answers_by_code']}, "
        f"recovered {recovered}, "
        f"replayed {MISSED_EVENTS} exactly {exact_replay}, all answered in {wall:.2f} s "
        f"(p50 {row['answer_time']['p50_ms']:.0f} ms), server CPU {cpu:.2f} s"
    )
    return {"watchpost": [row], "watchpost_settings": target.settings()}


def evaluate(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every SUBSCRIBE answered 0, recovered, with exactly the missed events replayed."""
    checks = []
    for row in result["watchpost"]:
        n = row["subscribers"]
        checks.append(
            {
                "target": f"storm: {n} simultaneous SUBSCRIBEs with since (Redis broker)",
                "wanted": f"all {n} answered 0, recovered, {row['missed_events']} events replayed",
                "measured": (
                    f"{row['answered_0']} answered 0 ({row['answers_by_code']}), "
                    f"{row['recovered']} recovered, "
                    f"{row['replayed_exactly']} replayed exactly, in {row['all_answered_s']} s"
                ),
                "met": row["answered_0"] == row["recovered"] == row["replayed_exactly"] == n,
                "detail": "; ".join(row["not_ok_samples"]),
            }
        )
    return checks


def markdown_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## storm (simultaneous SUBSCRIBE with since, Redis broker, one instance)",
        "",
        "| subscribers | answers by code | recovered | replayed exactly | all answered s | answer p50 ms "
        "| p99 ms | server CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["watchpost"]:
        t = r["answer_time"]
        codes = ", ".join(f"{k}: {v}" for k, v in r["answers_by_code"].items())
        lines.append(
            f"| {r['subscribers']} | {codes} | {r['recovered']} | {r['replayed_exactly']} "
            f"| {r['all_answered_s']} "
            f"| {t['p50_ms']} | {t['p99_ms']} | {r['server_cpu_s']} |"
        )
    return lines

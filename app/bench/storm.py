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

import orjson

from app.bench.loadgen import close_all, request_all
from app.bench.stats import summarize_ns
from app.bench.targets import Environment
from app.bench.watchpost import WatchpostTarget
from app.bench.wsclient import BenchConnection
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
    return {
        "watchpost": [row],
        "drain": await drain(env, plan_name, say),
        "watchpost_settings": target.settings(),
    }


#: Subscribers over two instances for the drain variant, by plan name.
DRAIN_SIZES = {"full": 5000, "quick": 2000, "smoke": 4}
#: Events published (one every 50 ms) while one instance drains.
DRAIN_EVENTS = 20


class _Subscriber:
    """One dashboard: the seqs of ``monitors`` it received, across reconnects."""

    def __init__(self, ws: BenchConnection) -> None:
        self.seqs: list[int] = []
        self.subscribed_at = 0
        self.ws = ws
        self.watch(ws)

    def watch(self, ws: BenchConnection) -> None:
        self.ws = ws
        answer = ws.on_message

        def on_message(payload: bytes) -> None:
            message = orjson.loads(payload)
            if message.get("req_id") is None and message.get("topic") == "monitors":
                self.seqs.append(int(message["seq"]))
            else:
                answer(payload)

        ws.on_message = on_message

    def since(self) -> int:
        return max([self.subscribed_at, *self.seqs])


async def drain(env: Environment, plan_name: str, say: Any) -> dict[str, Any]:
    """Two instances, half the subscribers on each; instance 1 drains (SIGTERM) while events flow.

    Its clients reconnect to instance 0 and SUBSCRIBE with ``since`` = the last seq they saw.
    The events every subscriber must hold are those instance 0's own subscribers received
    (they never disconnect); each subscriber's seqs are compared with that set.
    """
    count = DRAIN_SIZES[plan_name]
    target = WatchpostTarget(env)
    await target.start(2)
    subscribers: list[_Subscriber] = []
    extra: list[BenchConnection] = []
    try:
        stay = [_Subscriber(ws) for ws in await target.open(count - count // 2, "listen", 0)]
        moving = [_Subscriber(ws) for ws in await target.open(count // 2, "listen", 1)]
        subscribers = stay + moving
        replies = await request_all([s.ws for s in subscribers], PkgID.SUBSCRIBE, {"topics": ["monitors"]})
        for sub, reply in zip(subscribers, replies, strict=True):
            if reply.get("status_code") != 0:
                raise RuntimeError(f"drain: set-up SUBSCRIBE failed: {reply}")
            sub.subscribed_at = int(reply["data"]["topics"]["monitors"]["seq"])
        publish, published_on = await target.publisher(0)
        extra = list(published_on)

        async def publisher() -> None:
            for number in range(DRAIN_EVENTS):
                await publish(number)
                await asyncio.sleep(0.05)

        publishing = asyncio.create_task(publisher())
        await asyncio.sleep(0.2)
        start_ns = time.perf_counter_ns()
        stopping = asyncio.create_task(target.servers[1].stop())
        resubscribed_ns: list[int] = []
        close_codes: Counter[str] = Counter()
        answers: Counter[str] = Counter()

        async def move(sub: _Subscriber) -> None:
            await sub.ws.closed
            close_codes[str(sub.ws.close_code)] += 1
            for attempt in range(50):
                try:
                    ws = await target.connect_one(target.token, 0)
                    break
                except Exception:  # noqa: BLE001 - a refused reconnect is retried, as a client does
                    await asyncio.sleep(0.05 * (attempt + 1))
            else:
                answers["never reconnected"] += 1
                return
            sub.watch(ws)
            since = {"monitors": sub.since()}
            reply = await ws.request(PkgID.SUBSCRIBE, {"topics": ["monitors"], "since": since}, wait_s=60.0)
            answers[str(reply.get("status_code"))] += 1
            if reply.get("status_code") == 0 and reply["data"]["topics"]["monitors"].get("recovered"):
                answers["recovered"] += 1
            resubscribed_ns.append(time.perf_counter_ns() - start_ns)

        await asyncio.gather(*(move(sub) for sub in moving))
        all_resubscribed_s = (time.perf_counter_ns() - start_ns) / 1e9
        await publishing
        await stopping
        await asyncio.sleep(1.0)  # the last events reach everyone
    finally:
        await close_all([s.ws for s in subscribers] + extra)
        await target.stop()
    truth = {seq for sub in stay for seq in sub.seqs}
    lost = sum(len(truth - set(sub.seqs)) for sub in subscribers)
    duplicated = sum(len(sub.seqs) - len(set(sub.seqs)) for sub in subscribers)
    row: dict[str, Any] = {
        "subscribers": count,
        "moved": len(moving),
        "events": len(truth),
        "close_codes": dict(close_codes),
        "resubscribe_answers": dict(sorted(answers.items())),
        "all_resubscribed_s": round(all_resubscribed_s, 3),
        "resubscribed": summarize_ns(resubscribed_ns),
        "lost": lost,
        "duplicated": duplicated,
    }
    say(
        f"  watchpost drain of 1 of 2 instances, {len(moving)} of {count} subscribers moved: "
        f"close codes {row['close_codes']}, answers {row['resubscribe_answers']}, all resubscribed in "
        f"{all_resubscribed_s:.2f} s, {len(truth)} events, lost {lost}, duplicated {duplicated}"
    )
    return row


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
    drained = result.get("drain")
    if drained:
        moved = drained["moved"]
        answers = drained["resubscribe_answers"]
        checks.append(
            {
                "target": (
                    f"storm: drain 1 of 2 instances, {moved} of {drained['subscribers']} subscribers move"
                ),
                "wanted": "all resubscribe with since, answered 0 and recovered; nothing lost or duplicated",
                "measured": (
                    f"{answers} in {drained['all_resubscribed_s']} s, {drained['events']} events, "
                    f"lost {drained['lost']}, duplicated {drained['duplicated']}"
                ),
                "met": answers.get("0") == answers.get("recovered") == moved
                and drained["lost"] == drained["duplicated"] == 0,
                "detail": f"close codes {drained['close_codes']}",
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
    d = result.get("drain")
    if d:
        lines += [
            "",
            "Drain of one of two instances (SIGTERM) while events are published; its clients reconnect "
            "to the other and SUBSCRIBE with since:",
            "",
            "| subscribers | moved | close codes | resubscribe answers | all resubscribed s | p50 ms "
            "| p99 ms | events | lost | duplicated |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {d['subscribers']} | {d['moved']} | {d['close_codes']} | {d['resubscribe_answers']} "
            f"| {d['all_resubscribed_s']} | {d['resubscribed']['p50_ms']} | {d['resubscribed']['p99_ms']} "
            f"| {d['events']} | {d['lost']} | {d['duplicated']} |",
        ]
    return lines

"""Escalation and outage grouping end to end: two real servers on one PostgreSQL database,
a real monitored target and a real webhook receiver. Intervals are seconds (policy minutes
may be fractional; ESCALATION_SCAN_INTERVAL and ALERT_DEPENDENCY_HOLD are short)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from app.protocol import PkgID
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.receivers import HttpReceiver
from tests.server import ServerProcess, call, ok, ws_connect
from tests.targets import HttpTarget

HOLD = 3.0
ENV = {
    "DELIVERY_POLL_INTERVAL": "0.1",
    "DELIVERY_TIMEOUT": "2",
    "ESCALATION_SCAN_INTERVAL": "0.2",
    "ALERT_DEPENDENCY_HOLD": str(HOLD),
    "COLLECTOR_ENABLED": "true",
    "COLLECTOR_JITTER": "0.5",
    "WS_MESSAGE_RATE_LIMIT": "100000",
    "RATE_LIMIT_PER_MINUTE": "100000",
    "RATE_LIMIT_BURST": "10000",
}


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    url = services.create_pg_database()
    one, two = ServerProcess(url, env=ENV), ServerProcess(url, env=ENV)
    one.start()
    two.start()
    yield one, two
    two.stop()
    one.stop()


async def webhook(ws: ClientConnection, url: str) -> int:
    created = await ok(
        ws, PkgID.CHANNEL_CREATE, {"name": unique("hook"), "kind": "webhook", "config": {"url": url}}
    )
    return int(created["id"])


async def http_monitor(ws: ClientConnection, target: HttpTarget, name: str, **fields: Any) -> int:
    created = await ok(
        ws,
        PkgID.MONITOR_CREATE,
        {"name": name, "kind": "http", "url": target.url(f"/{name}"), "interval": 60, "timeout": 2, **fields},
    )
    return int(created["id"])


async def state_after_check(ws: ClientConnection, monitor_id: int) -> str:
    return str((await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": monitor_id}))["state"])


async def wait_state(ws: ClientConnection, monitor_id: int, state: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while (await ok(ws, PkgID.MONITOR_GET, {"id": monitor_id}))["state"] != state:
        assert time.monotonic() < deadline, f"monitor {monitor_id} did not become {state}"
        await asyncio.sleep(0.1)


async def open_incident(ws: ClientConnection, monitor_id: int) -> dict[str, Any]:
    [incident] = await ok(ws, PkgID.INCIDENT_LIST, {"monitor_id": monitor_id, "state": "unresolved"})
    return dict(incident)


def deliveries_per_id(rx: HttpReceiver) -> Counter[str]:
    return Counter(r.headers["x-watchpost-delivery"] for r in rx.requests)


async def test_policy_steps_repeat_until_acknowledged_each_step_once_across_two_instances(
    pair: tuple[ServerProcess, ServerProcess], target: HttpTarget
) -> None:
    one, two = pair
    editor = await acreate_user(one.database_url, {unique("t"): "editor"})
    with HttpReceiver() as rx:
        async with (
            ws_connect(one, one.login(editor, PASSWORD)) as ws1,
            ws_connect(two, two.login(editor, PASSWORD)) as ws2,
        ):
            first = await webhook(ws1, f"{rx.url}/first")
            second = await webhook(ws1, f"{rx.url}/second")
            policy = await ok(
                ws1,
                PkgID.ESCALATION_CREATE,
                {
                    "name": "on-call",
                    # at once, then after 2.4 s, then every 2.4 s until acknowledged
                    "steps": [{"after": 0, "channels": [first]}, {"after": 0.04, "channels": [second]}],
                    "repeat_every": 0.04,
                },
            )
            target.respond("/api", 503)
            mid = await http_monitor(ws1, target, "api", escalation_policy=policy["id"])
            assert (await ok(ws2, PkgID.MONITOR_GET, {"id": mid}))["escalation_policy"] == policy["id"]

            down_at = time.monotonic()
            assert await state_after_check(ws1, mid) == "down"
            await rx.wait_for(1)
            assert [r.path for r in rx.requests] == ["/first"]  # step 1 at once, nothing else yet
            await rx.wait_for(3, within=20)  # step 2, then its first repeat
            second_at = [r.received_at for r in rx.requests if r.path == "/second"]
            assert second_at[0] - rx.requests[0].received_at >= 1.9  # not before "after"

            incident = await open_incident(ws2, mid)
            acked = await ok(ws2, PkgID.INCIDENT_ACK, {"id": incident["id"]})
            assert acked["state"] == "acknowledged"
            again = await ok(ws1, PkgID.INCIDENT_ACK, {"id": incident["id"]})
            assert again["acked_at"] == acked["acked_at"]  # the first ack is the one kept
            settled = len(rx.requests)
            await rx.stays_at(settled, 3.0)  # > one repeat period, two scanners: nothing more
            elapsed = time.monotonic() - down_at

            paths = [r.path for r in rx.requests]
            assert paths.count("/first") == 1
            # step 2 at 2.4 s, repeats every 2.4 s: never more sends than periods that passed
            assert 2 <= paths.count("/second") <= int(elapsed / 2.4) + 1
            assert set(deliveries_per_id(rx).values()) == {1}, "a step was sent twice"
            rows = await ok(ws1, PkgID.DELIVERY_LIST, {"monitor_id": mid, "per_page": 100})
            assert {r["kind"] for r in rows} == {"escalation"}
            assert len(rows) == settled and {r["status"] for r in rows} == {"delivered"}
            assert any("escalation step 2 of 2" in (r["reason"] or "") for r in rows)
            detail = await ok(ws1, PkgID.INCIDENT_GET, {"id": incident["id"]})
            assert detail["escalation"]["stop_reason"] == "acknowledged"
            assert detail["escalation"]["policy"] == "on-call"
            assert detail["escalation"]["next_at"] is None

            # Recovery reaches every channel the escalation notified.
            target.respond("/api", 200)
            assert await state_after_check(ws2, mid) == "up"
            await rx.wait_for(settled + 2)
            recovered = [r.json() for r in rx.requests[settled:]]
            assert sorted(
                (p["state"], r.path) for p, r in zip(recovered, rx.requests[settled:], strict=True)
            ) == [
                ("up", "/first"),
                ("up", "/second"),
            ]


async def test_members_of_a_covering_group_going_down_together_send_one_notification(
    pair: tuple[ServerProcess, ServerProcess], target: HttpTarget
) -> None:
    one, two = pair
    editor = await acreate_user(one.database_url, {unique("t"): "editor"})
    with HttpReceiver() as rx:
        async with (
            ws_connect(one, one.login(editor, PASSWORD)) as ws1,
            ws_connect(two, two.login(editor, PASSWORD)) as ws2,
            # Events go out from the instance that recorded the change (no shared broker here).
            ws_connect(one, one.login(editor, PASSWORD)) as watch1,
            ws_connect(two, two.login(editor, PASSWORD)) as watch2,
        ):
            for watcher in (watch1, watch2):
                await ok(watcher, PkgID.SUBSCRIBE, {"topics": ["incidents"]})
            hook = await webhook(ws1, rx.url)
            names = [f"orch-{i:02d}" for i in range(1, 7)]
            members = [await http_monitor(ws1, target, n, channels=[hook]) for n in names]
            for m in members:
                assert await state_after_check(ws1, m) == "up"
            group = await ok(
                ws1,
                PkgID.MONITOR_CREATE,
                {
                    "name": "bridge",
                    "kind": "group",
                    "members": members,
                    "min_up": 4,
                    "covers_members": True,
                    "channels": [hook],
                },
            )
            gid = group["id"]
            await wait_state(ws1, gid, "up")

            # Five of six fail at once: below the quorum of 4, so the bridge is down.
            for i, (name, m) in enumerate(zip(names, members, strict=True)):
                if i < 5:
                    target.respond(f"/{name}", 503)
                    assert await state_after_check(ws1 if i % 2 else ws2, m) == "down"
            await wait_state(ws1, gid, "down")
            await rx.wait_for(1)
            await rx.stays_at(1, HOLD + 1.0)  # held member alerts were folded into the outage
            alert = rx.requests[0].json()
            assert (alert["monitor"]["id"], alert["state"]) == (gid, "down")
            # The alert names the members that were down when the bridge fell (at least the 3
            # that broke the quorum); later ones joined the outage silently.
            affected = re.search(r"(\d+) affected: (.*)$", alert["reason"])
            assert affected is not None, alert["reason"]
            assert 3 <= int(affected.group(1)) <= 5
            assert set(affected.group(2).split(", ")) <= set(names[:5])
            assert len(affected.group(2).split(", ")) == int(affected.group(1))

            outage = await open_incident(ws2, gid)
            detail = await ok(ws2, PkgID.INCIDENT_GET, {"id": outage["id"]})
            assert sorted(a["monitor_id"] for a in detail["attached"]) == sorted(members[:5])
            assert all(not a["notified"] for a in detail["attached"])
            member_incident = await open_incident(ws1, members[0])
            assert member_incident["parent_id"] == outage["id"]
            # Dashboards hear that the members' incidents joined the outage (903 "attached").
            joined: set[int] = set()
            async with asyncio.timeout(10):
                while len(joined) < int(affected.group(1)):
                    for watcher in (watch1, watch2):
                        try:
                            event = json.loads(await asyncio.wait_for(watcher.recv(), 0.1))
                        except TimeoutError:
                            continue
                        if event.get("topic") == "incidents" and event["data"]["action"] == "attached":
                            assert event["data"]["incident"]["parent_id"] == outage["id"]
                            joined.add(event["data"]["incident"]["monitor_id"])
            assert joined <= set(members[:5])

            # Everything comes back: one recovery for the outage, none for the members.
            for name, m in zip(names[:5], members[:5], strict=True):
                target.respond(f"/{name}", 200)
                assert await state_after_check(ws2, m) == "up"
            await wait_state(ws1, gid, "up")
            await rx.wait_for(2)
            await rx.stays_at(2, 1.0)
            back = rx.requests[1].json()
            # The bridge is back once the quorum is (degraded while the last members return).
            assert back["monitor"]["id"] == gid and back["state"] in ("up", "degraded")

            # One member alone: the bridge stays up (degraded), so it alerts on its own after the hold.
            target.respond(f"/{names[5]}", 503)
            down_at = time.monotonic()
            assert await state_after_check(ws1, members[5]) == "down"
            await rx.wait_for(3, within=HOLD + 10)
            assert rx.requests[2].received_at - down_at >= HOLD - 0.5
            lone = rx.requests[2].json()
            assert (lone["monitor"]["id"], lone["state"]) == (members[5], "down")
            assert set(deliveries_per_id(rx).values()) == {1}


async def test_a_dependent_is_silent_while_its_parent_is_down_and_alerts_if_it_stays_down(
    pair: tuple[ServerProcess, ServerProcess], target: HttpTarget
) -> None:
    one, _ = pair
    editor = await acreate_user(one.database_url, {unique("t"): "editor"})
    with HttpReceiver() as rx:
        async with ws_connect(one, one.login(editor, PASSWORD)) as ws:
            hook = await webhook(ws, rx.url)
            router = await http_monitor(ws, target, "router", channels=[hook])
            app = await http_monitor(ws, target, "app", channels=[hook], depends_on=[router])
            for m in (router, app):
                assert await state_after_check(ws, m) == "up"

            target.respond("/router", 503)
            assert await state_after_check(ws, router) == "down"
            await rx.wait_for(1)
            target.respond("/app", 503)
            assert await state_after_check(ws, app) == "down"
            await rx.stays_at(1, HOLD + 1.0)
            parent = await open_incident(ws, router)
            child = await open_incident(ws, app)
            assert (child["parent_id"], child["notified"]) == (parent["id"], False)

            # The router recovers, the app does not: the app now alerts on its own after the hold.
            target.respond("/router", 200)
            assert await state_after_check(ws, router) == "up"
            await rx.wait_for(3, within=HOLD + 10)
            sent = [(r.json()["monitor"]["id"], r.json()["state"]) for r in rx.requests]
            assert sent == [(router, "down"), (router, "up"), (app, "down")]
            assert (await open_incident(ws, app))["notified"] is True

            # Its recovery alerts too now, since its outage was announced.
            target.respond("/app", 200)
            assert await state_after_check(ws, app) == "up"
            await rx.wait_for(4)
            assert (rx.requests[3].json()["monitor"]["id"], rx.requests[3].json()["state"]) == (app, "up")


async def test_policies_and_routing_fields_are_validated_per_tenant(
    pair: tuple[ServerProcess, ServerProcess], target: HttpTarget
) -> None:
    one, _ = pair
    owner = await acreate_user(one.database_url, {unique("t"): "editor"})
    stranger = await acreate_user(one.database_url, {unique("t"): "editor"})
    async with (
        ws_connect(one, one.login(owner, PASSWORD)) as ws,
        ws_connect(one, one.login(stranger, PASSWORD)) as other,
    ):
        mine = await webhook(ws, "http://127.0.0.1:9/a")
        theirs = await webhook(other, "http://127.0.0.1:9/b")
        answer = await call(
            ws,
            PkgID.ESCALATION_CREATE,
            {
                "name": "bad",
                "steps": [{"after": 5, "channels": [mine]}, {"after": 1, "channels": [theirs]}],
            },
        )
        assert answer["status_code"] == 2
        paths = {e["path"] for e in answer["data"]["errors"]}
        assert paths == {"steps.1.after", "steps.1.channels"}

        a = await ok(ws, PkgID.ESCALATION_CREATE, {"name": "a", "steps": [{"after": 0, "channels": [mine]}]})
        b = await ok(
            ws,
            PkgID.ESCALATION_CREATE,
            {"name": "b", "steps": [{"after": 0, "channels": [mine]}], "default": True},
        )
        await ok(ws, PkgID.ESCALATION_UPDATE, {"id": a["id"], "default": True})
        listed = await ok(ws, PkgID.ESCALATION_LIST, {})
        assert [(p["id"], p["default"]) for p in listed] == [(a["id"], True), (b["id"], False)]

        # Another tenant's policy and monitors look like missing ones.
        refused = await call(
            other, PkgID.MONITOR_CREATE, {"name": "x", "kind": "push", "escalation_policy": a["id"]}
        )
        assert refused["status_code"] == 2 and refused["data"]["errors"][0]["path"] == "escalation_policy"
        assert (await call(other, PkgID.ESCALATION_DELETE, {"id": a["id"]}))["status_code"] == 4
        mid = await http_monitor(ws, target, "svc", escalation_policy=a["id"])
        foreign = await call(other, PkgID.MONITOR_CREATE, {"name": "y", "kind": "push", "depends_on": [mid]})
        assert foreign["status_code"] == 2 and foreign["data"]["errors"][0]["path"] == "depends_on"
        dep = await ok(ws, PkgID.MONITOR_CREATE, {"name": "dep", "kind": "push", "depends_on": [mid]})
        cycle = await call(ws, PkgID.MONITOR_UPDATE, {"id": mid, "version": 1, "depends_on": [dep["id"]]})
        assert cycle["status_code"] == 2 and "cycle" in cycle["data"]["errors"][0]["msg"]
        not_group = await call(
            ws, PkgID.MONITOR_CREATE, {"name": "z", "kind": "push", "covers_members": True}
        )
        assert not_group["status_code"] == 2 and not_group["data"]["errors"][0]["path"] == "covers_members"

        deleted = await ok(ws, PkgID.ESCALATION_DELETE, {"id": a["id"]})
        assert deleted["unlinked_monitors"] == [mid]
        assert (await ok(ws, PkgID.MONITOR_GET, {"id": mid}))["escalation_policy"] is None

        # A deleted channel leaves the policies' steps.
        await ok(ws, PkgID.CHANNEL_DELETE, {"id": mine})
        [left] = await ok(ws, PkgID.ESCALATION_LIST, {})
        assert (left["id"], left["steps"]) == (b["id"], [{"after": 0, "channels": []}])

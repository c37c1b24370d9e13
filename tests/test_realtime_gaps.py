"""Subscription correctness at the edges: a SUBSCRIBE that fails half-way, a role lost on
AUTH_REFRESH or changed live by MEMBER_UPDATE, a ``since`` held across a restart of the
in-process broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection

from app.events import scoped
from app.protocol import PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user, aset_role, unique
from tests.realtime_support import (
    HIGH_LIMITS,
    OwnRedis,
    call_collect,
    next_event,
    no_event,
    publisher,
    redis_server,
    servers,
)
from tests.server import ServerProcess, call, new_req_id, ok, sqlite_url, ws_connect

#: Holds the (private) Redis busy for ``ARGV[1]`` ms: commands sent meanwhile queue up in order.
_HOLD_REDIS = """
local function now() local t = redis.call('TIME'); return t[1] * 1000 + math.floor(t[2] / 1000) end
local stop = now() + tonumber(ARGV[1])
while now() < stop do end
return 1
"""


async def _events_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool]
) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Every event (topic, seq) received until a message ``done`` accepts; and that message."""
    got: list[tuple[str, int]] = []
    async with asyncio.timeout(10):
        while True:
            msg = json.loads(await ws.recv())
            if done(msg):
                return got, msg
            if "topic" in msg:
                got.append((msg["topic"], msg["seq"]))


async def test_a_failed_multi_topic_subscribe_leaves_subscriptions_as_they_were(pg_url: str) -> None:
    """monitor.2 fails for real (Redis refuses to read its seq): nothing of the request stays.

    monitor.1 was subscribed before and is re-subscribed by the failing request: it keeps
    its old subscription, and the event published while the request was in flight (held
    by the paused subscription) still arrives, once. ``monitors`` was new: it is gone from
    the server's listeners and from the connection's topic count.
    """
    own = OwnRedis().start()  # private: this test holds Redis busy for a moment
    prefix = "wpgaps:"
    srv = redis_server(pg_url, own.url, prefix, WS_MAX_TOPICS="3")
    admin = aioredis.Redis.from_url(own.url, decode_responses=True)
    try:
        with servers(srv):
            async with publisher(own.url, prefix) as pub, ws_connect(srv, srv.login()) as ws:
                tenant_id = (await ok(ws, PkgID.WHOAMI))["tenant_id"]
                await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitor.1"]})
                first = await pub.publish(tenant_id, "monitor.1", {"n": 1})
                assert (await next_event(ws, "monitor.1"))["seq"] == first
                # A seq counter of the wrong type: reading monitor.2's history fails (WRONGTYPE),
                # so SUBSCRIBE answers UNAVAILABLE after monitor.1 and monitors were prepared.
                await admin.rpush(f"{prefix}{{{scoped(tenant_id, 'monitor.2')}}}:seq", "not a counter")

                hold = asyncio.create_task(admin.eval(_HOLD_REDIS, 0, 1500))
                await asyncio.sleep(0.2)  # Redis is busy from here on
                req_id = new_req_id()
                topics = ["monitor.1", "monitors", "monitor.2"]
                await ws.send(
                    json.dumps({"pkg_id": PkgID.SUBSCRIBE, "req_id": req_id, "data": {"topics": topics}})
                )
                await asyncio.sleep(0.4)  # the server's read of monitor.1's history waits in Redis' queue
                # Queued behind that read: delivered while the request is still in flight.
                during = await pub.publish(tenant_id, "monitor.1", {"n": 2})
                await hold
                got, resp = await _events_until(ws, lambda m: m.get("req_id") == req_id)
                assert resp["status_code"] == RSPCode.UNAVAILABLE, resp

                await pub.publish(tenant_id, "monitors", {"n": 3})
                after = await pub.publish(tenant_id, "monitor.1", {"n": 4})
                more, _ = await _events_until(
                    ws, lambda m: (m.get("topic"), m.get("seq")) == ("monitor.1", after)
                )
                # The in-flight event once, then the live one; nothing on monitors.
                assert got + more == [("monitor.1", during)]
                await no_event(ws, "monitors", 0.5)
                # The connection holds one topic again: two new ones fit under WS_MAX_TOPICS=3.
                await ok(ws, PkgID.SUBSCRIBE, {"topics": ["incidents", "maintenance"]})
    finally:
        await admin.aclose()
        own.kill()


async def test_auth_refresh_after_a_demotion_drops_topics_the_new_role_may_not_read(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """An editor on ``deliveries`` (least role editor) is demoted to viewer where no live socket
    hears of it (straight in the database): the next AUTH_REFRESH takes the role and drops it."""
    tenant = unique("t")
    srv = redis_server(pg_url, redis_url, redis_prefix)
    with servers(srv):
        member = await acreate_user(pg_url, {tenant: "editor"})
        status, tokens = await asyncio.to_thread(
            srv.post, "/login", {"username": member, "password": PASSWORD}
        )
        assert status == 200, tokens
        async with publisher(redis_url, redis_prefix) as pub, ws_connect(srv, tokens["access_token"]) as ws:
            me = await ok(ws, PkgID.WHOAMI)
            tenant_id = me["tenant_id"]
            await ok(ws, PkgID.SUBSCRIBE, {"topics": ["deliveries", "monitors"]})
            seq = await pub.publish(tenant_id, "deliveries", {"n": 1})
            assert (await next_event(ws, "deliveries"))["seq"] == seq

            # A refresh that changes no role drops nothing.
            status, tokens = await asyncio.to_thread(
                srv.post, "/refresh", {"refresh_token": tokens["refresh_token"]}
            )
            assert status == 200, tokens
            same = await ok(ws, PkgID.AUTH_REFRESH, {"token": tokens["access_token"]})
            assert same["roles"] == ["editor"] and same["dropped_topics"] == []

            await aset_role(pg_url, member, tenant, "viewer")
            assert (await ok(ws, PkgID.WHOAMI))["roles"] == ["editor"]  # not told: still editor
            status, tokens = await asyncio.to_thread(
                srv.post, "/refresh", {"refresh_token": tokens["refresh_token"]}
            )
            assert status == 200, tokens
            renewed = await ok(ws, PkgID.AUTH_REFRESH, {"token": tokens["access_token"]})
            assert renewed["roles"] == ["viewer"] and renewed["dropped_topics"] == ["deliveries"]

            await pub.publish(tenant_id, "deliveries", {"n": 2})
            last = await pub.publish(tenant_id, "monitors", {"n": 3})
            got, _ = await _events_until(ws, lambda m: (m.get("topic"), m.get("seq")) == ("monitors", last))
            assert got == []  # deliveries' event never came, though it was published first
            await no_event(ws, "deliveries", 0.5)
            resp = await call(ws, PkgID.SUBSCRIBE, {"topics": ["deliveries"]})
            assert resp["status_code"] == RSPCode.PERMISSION_DENIED
            # monitors (viewer) stayed, and deliveries no longer counts against the topic limit.
            assert (await ok(ws, PkgID.UNSUBSCRIBE, {"topics": ["deliveries", "monitors"]})) == {
                "unsubscribed": ["monitors"]
            }


async def _role_notice(ws: ClientConnection) -> dict[str, Any]:
    """The next EVENT_ROLE_CHANGED on ``ws`` (events of topics on the way are skipped)."""
    async with asyncio.timeout(10):
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("pkg_id") == PkgID.EVENT_ROLE_CHANGED:
                assert msg["req_id"] is None and msg["status_code"] == RSPCode.OK, msg
                data: dict[str, Any] = msg["data"]
                return data
            assert "topic" in msg, f"unexpected frame {msg}"


async def _no_frame(ws: ClientConnection, wait: float = 0.5) -> None:
    try:
        msg = await asyncio.wait_for(ws.recv(), wait)
    except TimeoutError:
        return
    raise AssertionError(f"expected nothing, got {msg}")


async def test_member_update_changes_the_role_of_live_sockets_on_every_instance(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """The owner (instance A) changes an admin's role; the admin's sockets on instance B take it
    at once: EVENT_ROLE_CHANGED names the role and the dropped topics. An API token the member
    issued as editor is held to the lower of its own role and the member's."""
    tenant = unique("t")
    first = redis_server(pg_url, redis_url, redis_prefix)
    second = redis_server(pg_url, redis_url, redis_prefix)
    with servers(first, second):
        owner = await acreate_user(pg_url, {tenant: "owner"})
        member = await acreate_user(pg_url, {tenant: "admin"})
        async with (
            ws_connect(first, first.login(owner, PASSWORD)) as boss,
            ws_connect(second, second.login(member, PASSWORD)) as ws,
        ):
            user_id = (await ok(ws, PkgID.WHOAMI))["user_id"]
            issued = await ok(ws, PkgID.TOKEN_CREATE, {"name": unique("ci"), "role": "editor"})
            async with ws_connect(second, issued["token"]) as api:
                assert (await ok(api, PkgID.WHOAMI))["roles"] == ["editor"]
                await ok(ws, PkgID.SUBSCRIBE, {"topics": ["deliveries", "monitors"]})
                await ok(api, PkgID.SUBSCRIBE, {"topics": ["deliveries"]})

                await ok(boss, PkgID.MEMBER_UPDATE, {"user_id": user_id, "role": "viewer"})
                assert await _role_notice(ws) == {"roles": ["viewer"], "dropped_topics": ["deliveries"]}
                assert await _role_notice(api) == {"roles": ["viewer"], "dropped_topics": ["deliveries"]}
                assert (await ok(ws, PkgID.WHOAMI))["roles"] == ["viewer"]
                denied = await call(ws, PkgID.TOKEN_CREATE, {"name": unique("ci"), "role": "viewer"})
                assert denied["status_code"] == RSPCode.PERMISSION_DENIED, denied
                # The dropped topic is gone from the server's listeners: its events do not come.
                async with publisher(redis_url, redis_prefix) as pub:
                    tenant_id = (await ok(ws, PkgID.WHOAMI))["tenant_id"]
                    await pub.publish(tenant_id, "deliveries", {"n": 1})
                    last = await pub.publish(tenant_id, "monitors", {"n": 2})
                    got, _ = await _events_until(
                        ws, lambda m: (m.get("topic"), m.get("seq")) == ("monitors", last)
                    )
                    assert got == []
                    await no_event(api, "deliveries", 0.5)

                # Promoted to admin: the member's socket is admin again; the API token is capped
                # by its own role (editor).
                await ok(boss, PkgID.MEMBER_UPDATE, {"user_id": user_id, "role": "admin"})
                assert await _role_notice(ws) == {"roles": ["admin"], "dropped_topics": []}
                assert await _role_notice(api) == {"roles": ["editor"], "dropped_topics": []}
                assert (await ok(ws, PkgID.TOKEN_CREATE, {"name": unique("ci"), "role": "viewer"}))["token"]
                assert (await ok(api, PkgID.WHOAMI))["roles"] == ["editor"]

                # A change that leaves a socket's role as it is sends that socket nothing.
                await ok(boss, PkgID.MEMBER_UPDATE, {"user_id": user_id, "role": "owner"})
                assert await _role_notice(ws) == {"roles": ["owner"], "dropped_topics": []}
                await _no_frame(api)
                # The owner's own socket was never told anything.
                await _no_frame(boss)


async def test_in_process_broker_after_a_restart_does_not_claim_recovery() -> None:
    """The in-process broker loses its history on restart: a since from before it is not recovered."""
    srv = ServerProcess(sqlite_url(), env=HIGH_LIMITS).start()
    monitor = {
        "name": unique("m"),
        "kind": "http",
        "url": "https://example.invalid/",
        "interval": 30,
        "timeout": 2,
    }
    with servers(srv):
        async with ws_connect(srv, srv.login()) as ws:
            await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
            resp, before = await call_collect(ws, PkgID.MONITOR_CREATE, monitor)
            assert resp["status_code"] == RSPCode.OK, resp
            seen = (before[0] if before else await next_event(ws, "monitors"))["seq"]
        srv.restart()
        async with ws_connect(srv, srv.login()) as ws:
            # Missed by the client: published by the new process while it was away.
            await ok(ws, PkgID.MONITOR_UPDATE, {"id": resp["data"]["id"], "version": 1, "interval": 60})
            answer, replay = await call_collect(
                ws, PkgID.SUBSCRIBE, {"topics": ["monitors"], "since": {"monitors": seen}}
            )
            assert answer["status_code"] == RSPCode.OK, answer
            state = answer["data"]["topics"]["monitors"]
            assert state["recovered"] is False and state["replayed"] == 0 and replay == []
            assert seen < state["seq"] < 2**53  # the new process numbers above the old one

"""SUBSCRIBE / UNSUBSCRIBE rules over real sockets, and events sent only after a commit."""

from __future__ import annotations

import pytest

from app.broker.memory import MemoryBroker
from app.errors import Conflict
from app.events import scoped
from app.protocol import PkgID, RSPCode
from tests.fixtures import acreate_user, unique
from tests.realtime_support import next_event, no_event, publisher, redis_server, servers
from tests.server import call, migrate, ok, sqlite_url, ws_connect


async def test_topic_rules_limits_and_unsubscribe(pg_url: str, redis_url: str, redis_prefix: str) -> None:
    srv = redis_server(pg_url, redis_url, redis_prefix, WS_MAX_TOPICS="3")
    with servers(srv):
        tenant = unique("t")
        viewer = await acreate_user(pg_url, {tenant: "viewer"})
        token = srv.login(viewer, "user-test-password")
        async with publisher(redis_url, redis_prefix) as pub, ws_connect(srv, token, tenant=tenant) as ws:
            tenant_id = (await ok(ws, PkgID.WHOAMI))["tenant_id"]

            # Unknown topic: the whole request fails and nothing is subscribed, not even valid names.
            resp = await call(ws, PkgID.SUBSCRIBE, {"topics": ["monitors", "no-such-topic"]})
            assert resp["status_code"] == RSPCode.INVALID_DATA and "no-such-topic" in resp["data"]["msg"]
            await pub.publish(tenant_id, "monitors", {"n": 1})
            await no_event(ws, "monitors", 0.5)

            # A topic above the connection's role.
            resp = await call(ws, PkgID.SUBSCRIBE, {"topics": ["deliveries"]})
            assert resp["status_code"] == RSPCode.PERMISSION_DENIED and "editor" in resp["data"]["msg"]

            # Topic limit: three fit, re-subscribing one of them does not count, a fourth is refused.
            await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors", "monitor.1", "incidents"]})
            await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitor.1"]})
            resp = await call(ws, PkgID.SUBSCRIBE, {"topics": ["monitor.2"]})
            assert resp["status_code"] == RSPCode.INVALID_DATA and "WS_MAX_TOPICS" in resp["data"]["msg"]
            await pub.publish(tenant_id, "monitor.2", {"n": 2})
            seq = await pub.publish(tenant_id, "monitor.1", {"n": 3})
            event = await next_event(ws, "monitor.1")  # monitor.2's event never arrives before it
            assert event["seq"] == seq

            # Unsubscribe stops delivery and frees a slot.
            assert (await ok(ws, PkgID.UNSUBSCRIBE, {"topics": ["monitor.1", "monitor.9"]})) == {
                "unsubscribed": ["monitor.1"]
            }
            await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitor.2"]})
            await pub.publish(tenant_id, "monitor.1", {"n": 4})
            seq = await pub.publish(tenant_id, "monitor.2", {"n": 5})
            event = await next_event(ws, "monitor.2")
            assert event["seq"] == seq and event["data"] == {"n": 5}
            await no_event(ws, "monitor.1", 0.5)


async def test_a_tenant_never_sees_another_tenants_events(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    srv = redis_server(pg_url, redis_url, redis_prefix)
    with servers(srv):
        tenant_a, tenant_b = unique("a"), unique("b")
        user_a = await acreate_user(pg_url, {tenant_a: "owner"})
        user_b = await acreate_user(pg_url, {tenant_b: "owner"})
        async with (
            publisher(redis_url, redis_prefix) as pub,
            ws_connect(srv, srv.login(user_a, "user-test-password"), tenant=tenant_a) as ws_a,
            ws_connect(srv, srv.login(user_b, "user-test-password"), tenant=tenant_b) as ws_b,
        ):
            id_a = (await ok(ws_a, PkgID.WHOAMI))["tenant_id"]
            id_b = (await ok(ws_b, PkgID.WHOAMI))["tenant_id"]
            assert id_a != id_b
            for ws in (ws_a, ws_b):
                await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
            await pub.publish(id_a, "monitors", {"secret": "a"})
            mine = await pub.publish(id_b, "monitors", {"secret": "b"})
            assert (await next_event(ws_a, "monitors"))["data"] == {"secret": "a"}
            event = await next_event(ws_b, "monitors")  # the first one B sees is its own
            assert event["data"] == {"secret": "b"} and event["seq"] == mine == 1
            # History is per tenant too: B cannot replay A's topic by asking for seq 0.
            resp = await call(ws_b, PkgID.SUBSCRIBE, {"topics": ["monitors"], "since": {"monitors": 0}})
            assert resp["data"]["topics"]["monitors"]["seq"] == 1


async def test_events_are_published_only_after_the_transaction_commits() -> None:
    """Context.tx: a failing request drops its queued events; a committed one sends them after commit."""
    from app import create_app
    from app.auth.identity import Identity
    from app.context import Context
    from app.settings import Settings

    url = sqlite_url()
    migrate(url)
    app = create_app(Settings.from_env({"DATABASE_URL": url, "JWT_SECRET": "s" * 40}))
    services = app.state.services
    assert isinstance(services.broker, MemoryBroker)
    received: list[tuple[int, str]] = []
    services.broker.add_listener(scoped(1, "monitors"), lambda _t, seq, frame: received.append((seq, frame)))
    identity = Identity(
        user_id=1, username="admin", subject="1", tenant_id=1, tenant_slug="default", role="owner"
    )
    try:
        ctx = Context(services=services, identity=identity, pkg_id=PkgID.TENANT_UPDATE, req_id="r1")
        with pytest.raises(Conflict):
            async with ctx.tx(audit=False):
                ctx.publish("monitors", PkgID.EVENT_MONITOR_CHANGED, {"change": "rolled back"})
                raise Conflict("stale version")
        assert received == []

        ctx = Context(services=services, identity=identity, pkg_id=PkgID.TENANT_UPDATE, req_id="r2")
        async with ctx.tx(audit=False):
            ctx.publish("monitors", PkgID.EVENT_MONITOR_CHANGED, {"change": "committed"})
            assert received == []  # not before the commit
        assert len(received) == 1 and '"committed"' in received[0][1]
    finally:
        await services.broker.close()
        await services.db.close()

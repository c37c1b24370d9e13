"""SUBSCRIBE / UNSUBSCRIBE rules over real sockets, and events sent only after a commit."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from app.broker.memory import MemoryBroker
from app.errors import Conflict
from app.events import scoped
from app.protocol import PkgID, RSPCode
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.realtime_support import call_collect, next_event, no_event, publisher, redis_server, servers
from tests.server import (
    ServerProcess,
    call,
    migrate,
    new_req_id,
    ok,
    sqlite_url,
    wait_for_response,
    ws_connect,
)


@pytest.fixture(scope="module")
def shared(redis_url: str) -> Iterator[tuple[ServerProcess, str]]:
    """One Redis-backed server for the module (WS_MAX_TOPICS=3), and its key prefix."""
    prefix = f"wptest:{uuid.uuid4().hex[:10]}:"
    srv = redis_server(services.create_pg_database(), redis_url, prefix, WS_MAX_TOPICS="3")
    with servers(srv):
        yield srv, prefix


async def test_topic_rules_limits_and_unsubscribe(shared: tuple[ServerProcess, str], redis_url: str) -> None:
    srv, redis_prefix = shared
    pg_url = srv.database_url
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
    shared: tuple[ServerProcess, str], redis_url: str
) -> None:
    srv, redis_prefix = shared
    pg_url = srv.database_url
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


async def test_in_process_broker_events_recovery_and_no_event_on_failure(server: ServerProcess) -> None:
    """The embedded default (in-process broker): created, stale update, recovery with ``since``."""
    tenant = unique("t")
    editor = await acreate_user(server.database_url, {tenant: "editor"})
    token = server.login(editor, PASSWORD)
    monitor = {
        "name": unique("m"),
        "kind": "http",
        "url": "https://example.invalid/",
        "interval": 30,
        "timeout": 2,
    }
    async with ws_connect(server, token) as ws:
        await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
        resp, before = await call_collect(ws, PkgID.MONITOR_CREATE, monitor)
        assert resp["status_code"] == RSPCode.OK
        created = resp["data"]
        event = before[0] if before else await next_event(ws, "monitors")
        first = event["seq"]  # the in-process broker starts each process's seqs at its own base
        assert event["data"]["action"] == "created" and 0 < first < 2**53
        stale = await call(ws, PkgID.MONITOR_UPDATE, {"id": created["id"], "version": 9, "interval": 60})
        assert stale["status_code"] == RSPCode.CONFLICT
    async with ws_connect(server, token) as other:
        for i in (1, 2):
            await ok(other, PkgID.MONITOR_UPDATE, {"id": created["id"], "version": i, "interval": 60 + i})
    async with ws_connect(server, token) as ws:
        resp, replay = await call_collect(
            ws, PkgID.SUBSCRIBE, {"topics": ["monitors"], "since": {"monitors": first}}
        )
        # Exactly the two committed updates: the failed one left no event behind.
        assert resp["data"]["topics"]["monitors"] == {"seq": first + 2, "recovered": True, "replayed": 2}
        assert [(e["seq"], e["data"]["monitor"]["version"]) for e in replay] == [
            (first + 1, 2),
            (first + 2, 3),
        ]


async def test_back_to_back_subscribe_requests_apply_in_order(
    shared: tuple[ServerProcess, str], redis_url: str
) -> None:
    """Requests run concurrently on the server; subscriptions still end up as if sent one by one."""
    srv, redis_prefix = shared
    async with publisher(redis_url, redis_prefix) as pub, ws_connect(srv, srv.login()) as ws:
        tenant_id = (await ok(ws, PkgID.WHOAMI))["tenant_id"]
        frames = [
            (PkgID.SUBSCRIBE, {"topics": ["monitor.77"]}),
            (PkgID.SUBSCRIBE, {"topics": ["monitor.77"], "since": {"monitor.77": 0}}),
            (PkgID.SUBSCRIBE, {"topics": ["monitor.77", "monitor.78"]}),
            (PkgID.UNSUBSCRIBE, {"topics": ["monitor.78"]}),
            (PkgID.SUBSCRIBE, {"topics": ["monitor.1", "monitor.2"]}),  # 77, 1 and 2: at WS_MAX_TOPICS=3
            (PkgID.SUBSCRIBE, {"topics": ["monitor.3"]}),  # one too many
        ]
        ids = []
        for pkg_id, data in frames:
            ids.append(new_req_id())
            await ws.send(json.dumps({"pkg_id": pkg_id, "req_id": ids[-1], "data": data}))
        codes = [(await wait_for_response(ws, rid))["status_code"] for rid in ids]
        assert codes == [RSPCode.OK] * 5 + [RSPCode.INVALID_DATA]
        await pub.publish(tenant_id, "monitor.78", {"n": 78})
        seq = await pub.publish(tenant_id, "monitor.77", {"n": 77})
        assert (await next_event(ws, "monitor.77"))["seq"] == seq  # 78's event never came first
        await no_event(ws, "monitor.77", 0.5)  # and 77's came once, not once per SUBSCRIBE

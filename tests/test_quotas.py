"""Per-tenant quotas on monitors, alert channels and API tokens, over real sockets on SQLite
and PostgreSQL: the refusal, what counts, the platform administrator's override, and that
concurrent creates cannot overshoot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.protocol import PkgID, RSPCode
from tests.conftest import database_url_for
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, call_many, ok, ws_connect

QUOTAS = {"monitors": 3, "channels": 2, "api_tokens": 2}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    server = ServerProcess(
        database_url_for(request.param),
        env={
            "QUOTA_MONITORS": str(QUOTAS["monitors"]),
            "QUOTA_CHANNELS": str(QUOTAS["channels"]),
            "QUOTA_API_TOKENS": str(QUOTAS["api_tokens"]),
            "WS_MESSAGE_RATE_LIMIT": "100000",
            "RATE_LIMIT_PER_MINUTE": "100000",
            "RATE_LIMIT_BURST": "10000",
            "WS_MAX_CONNECTIONS_PER_USER": "1000",
        },
    )
    server.start()
    yield server
    server.stop()


def monitor(name: str | None = None) -> dict[str, Any]:
    return {"name": name or unique("m"), "kind": "push", "interval": 60}


def channel() -> dict[str, Any]:
    return {"name": unique("c"), "kind": "webhook", "config": {"url": "https://hooks.example.invalid/x"}}


def assert_over_quota(resp: dict[str, Any], slug: str, resource: str, quota: int, setting: str) -> None:
    assert resp["status_code"] == RSPCode.CONFLICT, resp
    data = resp["data"]
    assert data["resource"] == resource and data["quota"] == quota and data["used"] == quota
    assert data["setting"] == setting
    assert f"tenant {slug} has {quota} " in data["msg"]
    assert "ask a platform administrator to raise it" in data["msg"]


async def test_monitor_quota_is_refused_with_conflict_naming_the_setting(srv: ServerProcess) -> None:
    slug = unique("t")
    editor = await acreate_user(srv.database_url, {slug: "editor"})
    async with ws_connect(srv, srv.login(editor, PASSWORD)) as ws:
        made = [await ok(ws, PkgID.MONITOR_CREATE, monitor()) for _ in range(QUOTAS["monitors"])]
        resp = await call(ws, PkgID.MONITOR_CREATE, monitor())
        assert_over_quota(resp, slug, "monitors", QUOTAS["monitors"], "QUOTA_MONITORS")
        assert "QUOTA_MONITORS" in resp["data"]["msg"] and "delete some" in resp["data"]["msg"]
        assert len(await ok(ws, PkgID.MONITOR_LIST)) == QUOTAS["monitors"]
        # room again after a delete
        await ok(ws, PkgID.MONITOR_DELETE, {"id": made[0]["id"]})
        await ok(ws, PkgID.MONITOR_CREATE, monitor())


async def test_quotas_are_per_tenant(srv: ServerProcess) -> None:
    full, other = unique("full"), unique("other")
    editor = await acreate_user(srv.database_url, {full: "editor", other: "editor"})
    token = srv.login(editor, PASSWORD)
    async with ws_connect(srv, token, tenant=full) as ws:
        for _ in range(QUOTAS["monitors"]):
            await ok(ws, PkgID.MONITOR_CREATE, monitor())
        assert (await call(ws, PkgID.MONITOR_CREATE, monitor()))["status_code"] == RSPCode.CONFLICT
    async with ws_connect(srv, token, tenant=other) as ws:
        await ok(ws, PkgID.MONITOR_CREATE, monitor())


async def test_channel_quota(srv: ServerProcess) -> None:
    slug = unique("t")
    editor = await acreate_user(srv.database_url, {slug: "editor"})
    async with ws_connect(srv, srv.login(editor, PASSWORD)) as ws:
        for _ in range(QUOTAS["channels"]):
            await ok(ws, PkgID.CHANNEL_CREATE, channel())
        resp = await call(ws, PkgID.CHANNEL_CREATE, channel())
        assert_over_quota(resp, slug, "channels", QUOTAS["channels"], "QUOTA_CHANNELS")
        assert "alert channels" in resp["data"]["msg"]


async def test_token_quota_counts_only_active_tokens(srv: ServerProcess) -> None:
    slug = unique("t")
    admin = await acreate_user(srv.database_url, {slug: "admin"})
    async with ws_connect(srv, srv.login(admin, PASSWORD)) as ws:
        first = await ok(ws, PkgID.TOKEN_CREATE, {"name": "a", "role": "viewer"})
        soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        await ok(ws, PkgID.TOKEN_CREATE, {"name": "b", "role": "viewer", "expires_at": soon})
        resp = await call(ws, PkgID.TOKEN_CREATE, {"name": "c", "role": "viewer"})
        assert_over_quota(resp, slug, "api_tokens", QUOTAS["api_tokens"], "QUOTA_API_TOKENS")
        assert "active API tokens" in resp["data"]["msg"] and "revoke some" in resp["data"]["msg"]
        # a revoked token no longer counts
        await ok(ws, PkgID.TOKEN_REVOKE, {"id": first["id"]})
        await ok(ws, PkgID.TOKEN_CREATE, {"name": "c", "role": "viewer"})
        assert (await call(ws, PkgID.TOKEN_CREATE, {"name": "d", "role": "viewer"}))[
            "status_code"
        ] == RSPCode.CONFLICT
        # nor does an expired one
        await asyncio.sleep(1.2)
        await ok(ws, PkgID.TOKEN_CREATE, {"name": "d", "role": "viewer"})
        quotas = (await ok(ws, PkgID.TENANT_GET))["quotas"]
        assert quotas["api_tokens"]["used"] == QUOTAS["api_tokens"]
        assert len(await ok(ws, PkgID.TOKEN_LIST)) == 4  # the list still shows them all


async def test_platform_admin_overrides_a_tenants_quota(srv: ServerProcess) -> None:
    slug = unique("t")
    owner = await acreate_user(srv.database_url, {slug: "owner"})
    editor = await acreate_user(srv.database_url, {slug: "editor"})
    async with ws_connect(srv, srv.login(owner, PASSWORD)) as ws:
        got = await ok(ws, PkgID.TENANT_GET)
        assert got["quotas"]["monitors"] == {
            "limit": QUOTAS["monitors"],
            "override": None,
            "used": 0,
            "setting": "QUOTA_MONITORS",
        }
        tenant_id = got["id"]
        # the tenant's owner may rename it, but not raise its own quotas
        denied = await call(ws, PkgID.TENANT_UPDATE, {"quotas": {"monitors": 1000}})
        assert denied["status_code"] == RSPCode.PERMISSION_DENIED
        assert "platform administrators" in denied["data"]["msg"]
        renamed = await call(ws, PkgID.TENANT_UPDATE, {"name": "Renamed", "quotas": {"monitors": 1000}})
        assert renamed["status_code"] == RSPCode.PERMISSION_DENIED
        assert (await ok(ws, PkgID.TENANT_GET))["name"] != "Renamed"  # nothing half-applied
        await ok(ws, PkgID.TENANT_UPDATE, {"name": "Renamed"})
        bad = await call(ws, PkgID.TENANT_UPDATE, {"quotas": {"monitors": -1}})
        assert bad["status_code"] == RSPCode.INVALID_DATA
        empty = await call(ws, PkgID.TENANT_UPDATE, {})
        assert empty["status_code"] == RSPCode.INVALID_DATA
    async with ws_connect(srv, srv.login(editor, PASSWORD)) as ews:
        for _ in range(QUOTAS["monitors"]):
            await ok(ews, PkgID.MONITOR_CREATE, monitor())
        assert (await call(ews, PkgID.MONITOR_CREATE, monitor()))["status_code"] == RSPCode.CONFLICT
        async with ws_connect(srv, srv.login()) as admin:  # the platform administrator, own tenant
            raised = await ok(
                admin, PkgID.TENANT_UPDATE, {"id": tenant_id, "quotas": {"monitors": 5, "channels": 0}}
            )
            assert raised["quotas"]["monitors"]["limit"] == 5
            assert raised["quotas"]["monitors"]["override"] == 5
            assert raised["quotas"]["monitors"]["used"] == QUOTAS["monitors"]
            assert raised["name"] == "Renamed"  # the other fields are untouched
            await ok(ews, PkgID.MONITOR_CREATE, monitor())
            await ok(ews, PkgID.MONITOR_CREATE, monitor())
            resp = await call(ews, PkgID.MONITOR_CREATE, monitor())
            assert_over_quota(resp, slug, "monitors", 5, "QUOTA_MONITORS")
            assert "set for this tenant by a platform administrator" in resp["data"]["msg"]
            # a quota can be lowered too: 0 channels
            resp = await call(ews, PkgID.CHANNEL_CREATE, channel())
            assert resp["status_code"] == RSPCode.CONFLICT and resp["data"]["quota"] == 0
            # null returns to the setting
            back = await ok(admin, PkgID.TENANT_UPDATE, {"id": tenant_id, "quotas": {"monitors": None}})
            assert back["quotas"]["monitors"]["limit"] == QUOTAS["monitors"]
            assert back["quotas"]["monitors"]["override"] is None
            assert back["quotas"]["channels"]["override"] == 0
        got = await ok(ews, PkgID.TENANT_GET)
        assert got["quotas"]["monitors"]["used"] == 5 and got["quotas"]["monitors"]["limit"] == 3


async def test_an_admin_cannot_update_another_tenant(srv: ServerProcess) -> None:
    mine, theirs = unique("mine"), unique("theirs")
    admin = await acreate_user(srv.database_url, {mine: "owner"})
    other = await acreate_user(srv.database_url, {theirs: "owner"})
    async with ws_connect(srv, srv.login(other, PASSWORD)) as ws:
        their_id = (await ok(ws, PkgID.TENANT_GET))["id"]
    async with ws_connect(srv, srv.login(admin, PASSWORD)) as ws:
        resp = await call(ws, PkgID.TENANT_UPDATE, {"id": their_id, "name": "taken over"})
        assert resp["status_code"] == RSPCode.PERMISSION_DENIED
    async with ws_connect(srv, srv.login(other, PASSWORD)) as ws:
        assert (await ok(ws, PkgID.TENANT_GET))["name"] != "taken over"


async def test_concurrent_creates_cannot_exceed_the_quota(srv: ServerProcess) -> None:
    slug = unique("t")
    editor = await acreate_user(srv.database_url, {slug: "editor"})
    token = srv.login(editor, PASSWORD)
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(ws_connect(srv, token)) for _ in range(6)]
        attempts = [[(PkgID.MONITOR_CREATE, monitor()) for _ in range(3)] for _ws in sockets]
        batches = await asyncio.gather(
            *(call_many(ws, batch, timeout=60) for ws, batch in zip(sockets, attempts, strict=True))
        )
        answers = [a for batch in batches for a in batch]
        codes = sorted(a["status_code"] for a in answers)
        assert codes == [RSPCode.OK] * QUOTAS["monitors"] + [RSPCode.CONFLICT] * (
            len(answers) - QUOTAS["monitors"]
        ), [a["data"] for a in answers]
        assert len(await ok(sockets[0], PkgID.MONITOR_LIST)) == QUOTAS["monitors"]

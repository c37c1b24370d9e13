"""Connections without a tenant role: what they may still do (local users, real server).

A platform administrator who belongs to no tenant connects with no role; it must
still be able to PING, ask WHOAMI, AUTH_REFRESH, list tenants and create the first
one, while every tenant-scoped package stays refused.
"""

from __future__ import annotations

from app.protocol import PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, ok, ws_connect


async def test_platform_admin_without_membership_can_bootstrap_a_tenant(server: ServerProcess) -> None:
    admin = await acreate_user(server.database_url, {}, platform_admin=True)
    token = server.login(admin, PASSWORD)
    async with ws_connect(server, token) as ws:
        assert (await ok(ws, PkgID.PING))["pong"] is True
        me = await ok(ws, PkgID.WHOAMI)
        assert me["user"] == admin and me["roles"] == [] and me["tenant"] is None
        assert me["platform_admin"] is True
        refreshed = await ok(ws, PkgID.AUTH_REFRESH, {"token": server.login(admin, PASSWORD)})
        assert refreshed["roles"] == []
        slug = unique("first")
        created = await ok(ws, PkgID.TENANT_CREATE, {"slug": slug, "name": "First"})
        assert created["slug"] == slug and created["role"] == "owner"
        listed = await ok(ws, PkgID.TENANT_LIST, {"per_page": 100})
        assert slug in {t["slug"] for t in listed}
        # Tenant-scoped packages still need a role in a tenant.
        denied = await call(ws, PkgID.MONITOR_LIST, {})
        assert denied["status_code"] == RSPCode.PERMISSION_DENIED
        assert "needs role 'viewer'" in denied["data"]["msg"]
    # The new tenant is usable at once, as its owner.
    async with ws_connect(server, token, tenant=slug) as ws:
        assert (await ok(ws, PkgID.WHOAMI))["roles"] == ["owner"]


async def test_tenant_create_stays_for_platform_administrators(server: ServerProcess) -> None:
    viewer = await acreate_user(server.database_url, {unique("t"): "viewer"})
    async with ws_connect(server, server.login(viewer, PASSWORD)) as ws:
        resp = await call(ws, PkgID.TENANT_CREATE, {"slug": unique("nope"), "name": "Nope"})
    assert resp["status_code"] == RSPCode.PERMISSION_DENIED
    assert "platform administrators" in resp["data"]["msg"]

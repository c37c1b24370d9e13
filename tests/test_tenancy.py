"""Tenants, members, API tokens and RBAC over real sockets (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from app.protocol import CloseCode, PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, expect_close, ok, ws_connect


async def test_viewer_is_denied_an_editor_package(server: ServerProcess) -> None:
    slug = unique("t")
    viewer = await acreate_user(server.database_url, {slug: "viewer"})
    async with ws_connect(server, server.login(viewer, PASSWORD)) as ws:
        resp = await call(ws, PkgID.TOKEN_CREATE, {"name": "x", "role": "viewer"})
        assert resp["status_code"] == RSPCode.PERMISSION_DENIED
        assert "admin" in resp["data"]["msg"]
        assert (await ok(ws, PkgID.WHOAMI))["roles"] == ["viewer"]


async def test_tenant_isolation_for_tokens_and_members(server: ServerProcess) -> None:
    a, b = unique("ta"), unique("tb")
    admin_a = await acreate_user(server.database_url, {a: "admin"})
    admin_b = await acreate_user(server.database_url, {b: "admin"})
    async with ws_connect(server, server.login(admin_a, PASSWORD)) as ws_a:
        tok = await ok(ws_a, PkgID.TOKEN_CREATE, {"name": "a-token", "role": "viewer"})
        assert tok["token"].startswith("wpt_")
    async with ws_connect(server, server.login(admin_b, PASSWORD)) as ws_b:
        assert await ok(ws_b, PkgID.TOKEN_LIST) == []
        members = await ok(ws_b, PkgID.MEMBER_LIST)
        assert [m["username"] for m in members] == [admin_b]
        # another tenant's ids are not found, and nothing about them leaks
        resp = await call(ws_b, PkgID.TOKEN_REVOKE, {"id": tok["id"]})
        assert resp["status_code"] == RSPCode.NOT_FOUND
        assert "a-token" not in json.dumps(resp)
        tenant_a_id = (await ok(ws_b, PkgID.TENANT_LIST))[0]["id"] - 1
        resp = await call(ws_b, PkgID.TENANT_GET, {"id": max(tenant_a_id, 1)})
        assert resp["status_code"] in (RSPCode.NOT_FOUND, RSPCode.OK)
        if resp["status_code"] == RSPCode.OK:
            assert resp["data"]["slug"] == b
        resp = await call(ws_b, PkgID.MEMBER_UPDATE, {"user_id": 1, "role": "viewer"})
        assert resp["status_code"] == RSPCode.NOT_FOUND
    # the token of tenant A cannot enter tenant B
    async with ws_connect(server, tok["token"], tenant=b) as ws:
        assert await expect_close(ws) == CloseCode.NOT_A_MEMBER


async def test_api_token_lifecycle(server: ServerProcess) -> None:
    slug = unique("t")
    admin = await acreate_user(server.database_url, {slug: "admin"})
    async with ws_connect(server, server.login(admin, PASSWORD)) as ws:
        created = await ok(ws, PkgID.TOKEN_CREATE, {"name": "ci", "role": "editor"})
        secret = created["token"]
        listed = await ok(ws, PkgID.TOKEN_LIST)
        assert [t["name"] for t in listed] == ["ci"]
        assert secret not in json.dumps(listed) and "token" not in listed[0]
        dup = await call(ws, PkgID.TOKEN_CREATE, {"name": "ci", "role": "viewer"})
        assert dup["status_code"] == RSPCode.CONFLICT
        above = await call(ws, PkgID.TOKEN_CREATE, {"name": "big", "role": "owner"})
        assert above["status_code"] == RSPCode.PERMISSION_DENIED
        bad = await call(ws, PkgID.TOKEN_CREATE, {"name": "r", "role": "root"})
        assert bad["status_code"] == RSPCode.INVALID_DATA
        past = await call(
            ws, PkgID.TOKEN_CREATE, {"name": "old", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}
        )
        assert past["status_code"] == RSPCode.INVALID_DATA

        async with ws_connect(server, secret) as tws:
            me = await ok(tws, PkgID.WHOAMI)
            assert me["tenant"] == slug and me["roles"] == ["editor"] and me["auth"] == "api"
            await ok(ws, PkgID.TOKEN_REVOKE, {"id": created["id"]})
            assert await expect_close(tws) == CloseCode.AUTH_FAILED  # live socket closed
        async with ws_connect(server, secret) as tws:
            assert await expect_close(tws) == CloseCode.AUTH_FAILED  # and no new ones


async def test_expiring_api_token(server: ServerProcess) -> None:
    slug = unique("t")
    admin = await acreate_user(server.database_url, {slug: "admin"})
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    async with ws_connect(server, server.login(admin, PASSWORD)) as ws:
        tok = await ok(ws, PkgID.TOKEN_CREATE, {"name": "short", "role": "viewer", "expires_at": soon})
    async with ws_connect(server, tok["token"]) as tws:
        await ok(tws, PkgID.PING)
        assert await expect_close(tws, timeout=15) == CloseCode.TOKEN_EXPIRED
    async with ws_connect(server, tok["token"]) as tws:
        assert await expect_close(tws) == CloseCode.AUTH_FAILED


async def test_token_role_is_capped_by_the_creators_current_role(server: ServerProcess) -> None:
    slug = unique("t")
    owner = await acreate_user(server.database_url, {slug: "owner"})
    admin = await acreate_user(server.database_url, {slug: "admin"})
    async with ws_connect(server, server.login(admin, PASSWORD)) as ws:
        tok = await ok(ws, PkgID.TOKEN_CREATE, {"name": "t", "role": "admin"})
    async with ws_connect(server, server.login(owner, PASSWORD)) as ws:
        members = await ok(ws, PkgID.MEMBER_LIST)
        admin_id = next(m["user_id"] for m in members if m["username"] == admin)
        await ok(ws, PkgID.MEMBER_UPDATE, {"user_id": admin_id, "role": "viewer"})
    async with ws_connect(server, tok["token"]) as tws:
        assert (await ok(tws, PkgID.WHOAMI))["roles"] == ["viewer"]


async def test_tenants_and_members(server: ServerProcess, admin_token: str) -> None:
    slug = unique("acme")
    other = await acreate_user(server.database_url, {unique("t"): "viewer"})
    async with ws_connect(server, admin_token) as ws:
        t = await ok(ws, PkgID.TENANT_CREATE, {"slug": slug, "name": "Acme"})
        assert t["role"] == "owner"
        assert (await call(ws, PkgID.TENANT_CREATE, {"slug": slug, "name": "again"}))[
            "status_code"
        ] == RSPCode.CONFLICT
        assert (await call(ws, PkgID.TENANT_CREATE, {"slug": "Bad Slug", "name": "x"}))[
            "status_code"
        ] == RSPCode.INVALID_DATA
        assert slug in [x["slug"] for x in await ok(ws, PkgID.TENANT_LIST, {"per_page": 200})]
    async with ws_connect(server, admin_token, tenant=slug) as ws:
        assert (await ok(ws, PkgID.WHOAMI))["tenant"] == slug
        added = await ok(ws, PkgID.MEMBER_ADD, {"username": other, "role": "editor"})
        assert added["role"] == "editor"
        again = await call(ws, PkgID.MEMBER_ADD, {"username": other, "role": "editor"})
        assert again["status_code"] == RSPCode.CONFLICT
        ghost = await call(ws, PkgID.MEMBER_ADD, {"username": "nobody-" + slug, "role": "editor"})
        assert ghost["status_code"] == RSPCode.NOT_FOUND
        updated = await ok(ws, PkgID.TENANT_UPDATE, {"name": "Acme Inc"})
        assert updated["name"] == "Acme Inc"
        me_id = (await ok(ws, PkgID.WHOAMI))["user_id"]
        last = await call(ws, PkgID.MEMBER_REMOVE, {"user_id": me_id})
        assert last["status_code"] == RSPCode.CONFLICT  # the last owner stays
        async with ws_connect(server, server.login(other, PASSWORD), tenant=slug) as ows:
            assert (await ok(ows, PkgID.WHOAMI))["roles"] == ["editor"]
            await ok(ws, PkgID.MEMBER_REMOVE, {"user_id": added["user_id"]})
            assert await expect_close(ows) == CloseCode.AUTH_FAILED
    # a non-admin cannot create tenants
    async with ws_connect(server, server.login(other, PASSWORD)) as ows:
        resp = await call(ows, PkgID.TENANT_CREATE, {"slug": unique("x"), "name": "x"})
        assert resp["status_code"] == RSPCode.PERMISSION_DENIED


async def test_mutations_are_audited_in_the_same_database(server: ServerProcess) -> None:
    from sqlalchemy import select

    from app.models.audit import AuditEntry
    from app.storage.db import Database

    slug = unique("t")
    admin = await acreate_user(server.database_url, {slug: "admin"})
    async with ws_connect(server, server.login(admin, PASSWORD)) as ws:
        tok = await ok(ws, PkgID.TOKEN_CREATE, {"name": "audited", "role": "viewer"})
        await ok(ws, PkgID.TOKEN_REVOKE, {"id": tok["id"]})
        await call(ws, PkgID.TOKEN_REVOKE, {"id": 999999})
    db = Database(server.database_url)
    try:
        async with db.session() as s:
            rows = (
                (
                    await s.execute(
                        select(AuditEntry).where(AuditEntry.actor == f"user:{admin}").order_by(AuditEntry.id)
                    )
                )
                .scalars()
                .all()
            )
    finally:
        await db.close()
    assert [(r.action, r.target_id, r.status_code) for r in rows] == [
        ("LOGIN", None, 0),
        ("TOKEN_CREATE", str(tok["id"]), 0),
        ("TOKEN_REVOKE", str(tok["id"]), 0),
        ("TOKEN_REVOKE", "999999", RSPCode.NOT_FOUND),
    ]
    assert all(r.req_id for r in rows[1:])
    assert tok["token"] not in server.log_text()


async def test_whoami_lists_the_packages_the_role_may_call(server: ServerProcess) -> None:
    slug = unique("t")
    viewer = await acreate_user(server.database_url, {slug: "viewer"})
    editor = await acreate_user(server.database_url, {slug: "editor"})
    async with ws_connect(server, server.login(viewer, PASSWORD)) as ws:
        allowed = (await ok(ws, PkgID.WHOAMI))["packages"]
        assert PkgID.MONITOR_LIST in allowed and PkgID.SUBSCRIBE in allowed
        assert PkgID.MONITOR_CREATE not in allowed and PkgID.TOKEN_CREATE not in allowed
        # What WHOAMI leaves out is exactly what the router refuses.
        resp = await call(ws, PkgID.MONITOR_CREATE, {"name": "x", "kind": "tcp", "host": "h", "port": 1})
        assert resp["status_code"] == RSPCode.PERMISSION_DENIED
        resp = await call(ws, PkgID.MONITOR_LIST, {})
        assert resp["status_code"] == RSPCode.OK
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        more = (await ok(ws, PkgID.WHOAMI))["packages"]
        assert PkgID.MONITOR_CREATE in more and PkgID.TOKEN_CREATE not in more
        assert set(allowed) < set(more)

"""The audit trail over real sockets (SQLite and PostgreSQL): rows for a channel
create/update/delete sequence with the right actor, AUDIT_LIST filters and RBAC, and no
secret in any audit row or log line."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select
from sqlmodel import col
from websockets.asyncio.client import ClientConnection

from app.models.audit import AuditEntry
from app.protocol import PkgID, RSPCode
from app.storage.db import Database
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, ok, wait_for_response, ws_connect

SECRETS = ("audit-hmac-secret-1", "audit-hmac-secret-2", "audit-smtp-password", "AUDITPATHTOKEN")


async def send(ws: ClientConnection, pkg_id: int, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One request with a req_id we know, so the audit row can be matched to it."""
    req_id = str(uuid.uuid4())
    await ws.send(json.dumps({"pkg_id": pkg_id, "req_id": req_id, "data": data}))
    return req_id, await wait_for_response(ws, req_id)


async def channel_sequence(ws: ClientConnection) -> list[tuple[str, str, int, int]]:
    """Create, update, delete (and one failed update); returns (req_id, action, target, code)."""
    req1, created = await send(
        ws,
        PkgID.CHANNEL_CREATE,
        {
            "name": unique("c"),
            "kind": "webhook",
            "config": {"url": f"https://hooks.example.com/{SECRETS[3]}", "secret": SECRETS[0]},
        },
    )
    assert created["status_code"] == RSPCode.OK, created
    cid = created["data"]["id"]
    req2, updated = await send(ws, PkgID.CHANNEL_UPDATE, {"id": cid, "config": {"secret": SECRETS[1]}})
    assert updated["status_code"] == RSPCode.OK, updated
    req3, deleted = await send(ws, PkgID.CHANNEL_DELETE, {"id": cid})
    assert deleted["status_code"] == RSPCode.OK, deleted
    req4, missing = await send(ws, PkgID.CHANNEL_UPDATE, {"id": cid, "enabled": False})
    assert missing["status_code"] == RSPCode.NOT_FOUND
    return [
        (req4, "CHANNEL_UPDATE", cid, RSPCode.NOT_FOUND),
        (req3, "CHANNEL_DELETE", cid, RSPCode.OK),
        (req2, "CHANNEL_UPDATE", cid, RSPCode.OK),
        (req1, "CHANNEL_CREATE", cid, RSPCode.OK),
    ]


async def test_channel_changes_are_audited_with_the_right_actor_and_no_secrets(server: ServerProcess) -> None:
    slug, other = unique("t"), unique("o")
    admin = await acreate_user(server.database_url, {slug: "admin"})
    editor = await acreate_user(server.database_url, {slug: "editor"})
    outsider = await acreate_user(server.database_url, {other: "admin"})

    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        by_user = await channel_sequence(ws)
        denied = await call(ws, PkgID.AUDIT_LIST)
        assert denied["status_code"] == RSPCode.PERMISSION_DENIED
        assert "admin" in denied["data"]["msg"]
        await ok(
            ws,
            PkgID.CHANNEL_CREATE,
            {
                "name": unique("mail"),
                "kind": "email",
                "config": {
                    "host": "127.0.0.1",
                    "username": "u",
                    "password": SECRETS[2],
                    "from": "a@example.com",
                    "to": ["b@example.com"],
                },
            },
        )
    async with ws_connect(server, server.login(admin, PASSWORD)) as ws:
        token = await ok(ws, PkgID.TOKEN_CREATE, {"name": "deployer", "role": "editor"})
    async with ws_connect(server, token["token"]) as ws:
        by_token = await channel_sequence(ws)

    async with ws_connect(server, server.login(admin, PASSWORD)) as ws:
        resp = await call(ws, PkgID.AUDIT_LIST, {"actor": f"user:{editor}", "action": "CHANNEL_UPDATE"})
        assert resp["status_code"] == RSPCode.OK
        assert [r["req_id"] for r in resp["data"]] == [by_user[0][0], by_user[2][0]]
        assert resp["meta"]["total"] == 2

        rows = await ok(ws, PkgID.AUDIT_LIST, {"actor": f"user:{editor}", "pkg_id": 400, "per_page": 1})
        assert [r["action"] for r in rows] == ["CHANNEL_CREATE"]  # the mail channel, newest first

        for actor, expected in ((f"user:{editor}", by_user), ("token:deployer", by_token)):
            got = await ok(ws, PkgID.AUDIT_LIST, {"actor": actor, "action": "CHANNEL_DELETE"})
            assert [r["target_id"] for r in got] == [str(expected[1][2])]
            listed = await ok(ws, PkgID.AUDIT_LIST, {"actor": actor, "per_page": 200})
            seq = [(r["req_id"], r["action"], r["target_id"], r["status_code"]) for r in listed]
            assert [x for x in seq if x[0] in {e[0] for e in expected}] == [
                (req, action, str(target), code) for req, action, target, code in expected
            ]
            assert all(r["client_addr"] == "127.0.0.1" for r in listed)

        failed = await ok(ws, PkgID.AUDIT_LIST, {"failed": True})
        assert {r["req_id"] for r in failed} == {by_user[0][0], by_token[0][0]}
        everything = await call(ws, PkgID.AUDIT_LIST, {"per_page": 200})
        text = json.dumps(everything)
        assert not [s for s in SECRETS if s in text]
        bad_time = await call(ws, PkgID.AUDIT_LIST, {"since": "yesterday-ish"})
        assert bad_time["status_code"] == RSPCode.INVALID_DATA

    async with ws_connect(server, server.login(outsider, PASSWORD)) as ws:
        theirs = await ok(ws, PkgID.AUDIT_LIST, {"per_page": 200})
        assert {r["actor"] for r in theirs} <= {f"user:{outsider}"}

    # Straight from the table and from the server's log: no secret anywhere.
    db = Database(server.database_url)
    try:
        async with db.session() as s:
            stored = (
                await s.execute(select(AuditEntry).where(col(AuditEntry.tenant_id).is_not(None)))
            ).scalars()
            dumped = json.dumps([r.model_dump(mode="json") for r in stored])
    finally:
        await db.close()
    assert by_user[3][0] in dumped
    assert not [s for s in SECRETS if s in dumped]
    log = server.log_text()
    assert not [s for s in SECRETS if s in log]

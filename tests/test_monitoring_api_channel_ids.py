"""A monitor's ``channels`` may name only alert channels of its own tenant (two tenants, real
sockets, SQLite and PostgreSQL): MONITOR_CREATE and MONITOR_UPDATE answer INVALID_DATA
naming the unknown ids, and nothing is saved."""

from __future__ import annotations

from typing import Any

from app.protocol import PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, ok, ws_connect

MISSING = 2_000_000_000


def webhook() -> dict[str, Any]:
    return {"name": unique("c"), "kind": "webhook", "config": {"url": "https://hooks.example.invalid/x"}}


def assert_unknown(resp: dict[str, Any], ids: list[int]) -> None:
    assert resp["status_code"] == RSPCode.INVALID_DATA, resp
    assert resp["data"]["errors"] == [{"path": "channels", "msg": f"unknown channel ids {sorted(ids)}"}]
    assert str(sorted(ids)) in resp["data"]["msg"]


async def test_monitor_channels_must_belong_to_its_tenant(server: ServerProcess) -> None:
    mine, theirs = unique("mine"), unique("theirs")
    editor = await acreate_user(server.database_url, {mine: "editor"})
    other = await acreate_user(server.database_url, {theirs: "editor"})
    async with ws_connect(server, server.login(other, PASSWORD)) as ows:
        foreign = (await ok(ows, PkgID.CHANNEL_CREATE, webhook()))["id"]
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        own = (await ok(ws, PkgID.CHANNEL_CREATE, webhook()))["id"]
        base = {"kind": "push", "interval": 60}

        for ids, unknown in (
            ([own, foreign], [foreign]),
            ([MISSING], [MISSING]),
            ([foreign, own, MISSING], [foreign, MISSING]),
        ):
            resp = await call(ws, PkgID.MONITOR_CREATE, {**base, "name": unique("m"), "channels": ids})
            assert_unknown(resp, unknown)
        assert await ok(ws, PkgID.MONITOR_LIST) == []  # nothing was saved

        monitor = await ok(ws, PkgID.MONITOR_CREATE, {**base, "name": unique("m"), "channels": [own]})
        assert monitor["channels"] == [own]
        version = monitor["version"]
        for ids, unknown in (([own, foreign], [foreign]), ([MISSING], [MISSING])):
            resp = await call(
                ws, PkgID.MONITOR_UPDATE, {"id": monitor["id"], "version": version, "channels": ids}
            )
            assert_unknown(resp, unknown)
        got = await ok(ws, PkgID.MONITOR_GET, {"id": monitor["id"]})
        assert got["channels"] == [own] and got["version"] == version

        updated = await ok(
            ws, PkgID.MONITOR_UPDATE, {"id": monitor["id"], "version": version, "channels": []}
        )
        assert updated["channels"] == []


async def test_ids_saved_before_the_check_do_not_block_other_edits(server: ServerProcess) -> None:
    """Monitors saved by an older server may hold foreign ids; editing another field still works
    (alerts never go to another tenant's channel anyway), and sending channels fixes the list."""
    from sqlalchemy import update

    from app.models.monitor import Monitor
    from app.storage.db import Database

    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        monitor = await ok(ws, PkgID.MONITOR_CREATE, {"name": unique("m"), "kind": "push", "interval": 60})
        db = Database(server.database_url)
        try:
            async with db.session() as s:
                await s.execute(update(Monitor).where(Monitor.id == monitor["id"]).values(channels=[MISSING]))  # type: ignore[arg-type]
                await s.commit()
        finally:
            await db.close()
        renamed = await ok(
            ws,
            PkgID.MONITOR_UPDATE,
            {"id": monitor["id"], "version": monitor["version"], "name": unique("m")},
        )
        resp = await call(
            ws,
            PkgID.MONITOR_UPDATE,
            {"id": monitor["id"], "version": renamed["version"], "channels": renamed["channels"]},
        )
        assert_unknown(resp, [MISSING])
        await ok(
            ws, PkgID.MONITOR_UPDATE, {"id": monitor["id"], "version": renamed["version"], "channels": []}
        )

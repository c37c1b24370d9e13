"""Times, cursors and page numbers from clients are range-checked into INVALID_DATA naming the
field, never an internal error: over real sockets (SQLite and PostgreSQL) for every package
that takes them. The parsers' own properties: tests/unit/test_client_time.py and
tests/unit/test_storage_keyset.py."""

from __future__ import annotations

from typing import Any

from app.protocol import PkgID, RSPCode
from app.routing import MAX_ID
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, ok, ws_connect

#: Out of range after conversion to UTC (the first two overflowed ``astimezone``), out of
#: range before 1970, and not a time at all.
BAD_TIMES = [
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "1969-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "yesterday",
]

BAD_CURSORS = [
    "0:" + "9" * 60,  # id past any key
    "9" * 40 + ":1",  # time past year 9999
    "1:9223372036854775808",  # one past BIGINT
    "1:0",
    "-1:5",
    "+1:5",
    " 1:5",
    "1_0:5",
    "١:5",  # a non-ASCII digit int() would take
    "1:5\n",
    "1:5:7",
    "",
    ":",
]


def _assert_field_error(resp: dict[str, Any], field: str) -> None:
    assert resp["status_code"] == RSPCode.INVALID_DATA, resp
    assert resp["data"]["errors"][0]["path"] == field, resp
    assert field in resp["data"]["msg"], resp


async def test_out_of_range_times_are_invalid_data_naming_the_field(server: ServerProcess) -> None:
    admin = await acreate_user(server.database_url, {unique("t"): "admin"})
    async with ws_connect(server, server.login(admin, PASSWORD)) as ws:
        monitor = await ok(ws, PkgID.MONITOR_CREATE, {"name": "p", "kind": "push", "interval": 60})
        window = await ok(
            ws,
            PkgID.MAINTENANCE_CREATE,
            {
                "name": "w",
                "starts_at": "2030-01-01T00:00:00Z",
                "ends_at": "2030-01-02T00:00:00Z",
                "all_monitors": True,
            },
        )
        ok_window = {"name": "w2", "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-02T00:00:00Z"}
        cases: list[tuple[int, str, dict[str, Any]]] = [
            (PkgID.CHECK_HISTORY, "since", {"monitor_id": monitor["id"]}),
            (PkgID.CHECK_HISTORY, "until", {"monitor_id": monitor["id"]}),
            (PkgID.AUDIT_LIST, "since", {}),
            (PkgID.AUDIT_LIST, "until", {}),
            (PkgID.MAINTENANCE_CREATE, "starts_at", {**ok_window, "all_monitors": True}),
            (PkgID.MAINTENANCE_CREATE, "ends_at", {**ok_window, "all_monitors": True}),
            (PkgID.MAINTENANCE_UPDATE, "starts_at", {"id": window["id"], "version": window["version"]}),
            (PkgID.MAINTENANCE_UPDATE, "ends_at", {"id": window["id"], "version": window["version"]}),
            (PkgID.TOKEN_CREATE, "expires_at", {"name": "tok", "role": "viewer"}),
        ]
        for pkg_id, field, base in cases:
            for bad in BAD_TIMES:
                resp = await call(ws, pkg_id, {**base, field: bad})
                _assert_field_error(resp, field)
        # the last representable time is still a time
        history = await call(
            ws, PkgID.CHECK_HISTORY, {"monitor_id": monitor["id"], "until": "9999-12-31T23:59:59Z"}
        )
        assert history["status_code"] == RSPCode.OK
        far = await ok(
            ws,
            PkgID.MAINTENANCE_UPDATE,
            {"id": window["id"], "version": window["version"], "ends_at": "9999-12-31T23:59:59+00:00"},
        )
        assert far["ends_at"].startswith("9999-12-31T23:59:59")
        tok = await ok(
            ws,
            PkgID.TOKEN_CREATE,
            {"name": "far", "role": "viewer", "expires_at": "9999-12-31T22:00:00-01:00"},
        )
        assert tok["expires_at"] == "9999-12-31T23:00:00.000Z"


async def test_bad_cursors_are_invalid_data_and_issued_ones_page(server: ServerProcess) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        monitor = await ok(ws, PkgID.MONITOR_CREATE, {"name": "p", "kind": "push", "interval": 60})
        for _ in range(3):
            await ok(ws, PkgID.HEARTBEAT_PUSH, {"push_token": monitor["push_token"]})
        for bad in BAD_CURSORS:
            resp = await call(ws, PkgID.CHECK_HISTORY, {"monitor_id": monitor["id"], "cursor": bad})
            _assert_field_error(resp, "cursor")
        seen = []
        cursor = None
        while True:
            data: dict[str, Any] = {"monitor_id": monitor["id"], "limit": 1}
            if cursor:
                data["cursor"] = cursor
            page = await call(ws, PkgID.CHECK_HISTORY, data)
            assert page["status_code"] == RSPCode.OK, page
            seen += [r["id"] for r in page["data"]]
            cursor = page["meta"]["next_cursor"]
            if not cursor:
                break
        assert len(seen) == 3 and seen == sorted(seen, reverse=True)


BAD_ID_CURSORS = ["0", "01", "2147483648", "9" * 20, "-1", "+1", " 1", "1_0", "١", "1\n", "1:5", ""]


async def test_summary_cursors_are_checked_and_issued_ones_page(server: ServerProcess) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        made = [
            (await ok(ws, PkgID.MONITOR_CREATE, {"name": f"p{i}", "kind": "push", "interval": 60}))["id"]
            for i in range(3)
        ]
        for bad in BAD_ID_CURSORS:
            _assert_field_error(await call(ws, PkgID.STATUS_SUMMARY, {"cursor": bad}), "cursor")
        for limit in (0, 2001):
            _assert_field_error(await call(ws, PkgID.STATUS_SUMMARY, {"limit": limit}), "limit")
        seen = []
        data: dict[str, Any] = {"limit": 2}
        while True:
            page = await call(ws, PkgID.STATUS_SUMMARY, data)
            assert page["status_code"] == RSPCode.OK, page
            if "cursor" in data:  # whole-tenant totals come on the first page only
                assert "total" not in page["data"] and "counts" not in page["data"], page
            else:
                assert page["data"]["total"] == 3 and page["data"]["counts"]["pending"] == 3
            seen += [r["id"] for r in page["data"]["monitors"]]
            if not page["meta"]["has_more"]:
                break
            data["cursor"] = page["meta"]["next_cursor"]
        assert seen == made


#: Every package with offset pagination, with the data it needs besides page/per_page.
PAGINATED = [
    (PkgID.MONITOR_LIST, {}),
    (PkgID.INCIDENT_LIST, {}),
    (PkgID.CHANNEL_LIST, {}),
    (PkgID.DELIVERY_LIST, {}),
    (PkgID.MAINTENANCE_LIST, {}),
    (PkgID.TOKEN_LIST, {}),
    (PkgID.TENANT_LIST, {}),
    (PkgID.MEMBER_LIST, {}),
    (PkgID.AUDIT_LIST, {}),
]


async def test_page_numbers_are_bounded_on_every_paginated_package(server: ServerProcess) -> None:
    admin = await acreate_user(server.database_url, {unique("t"): "admin"})
    async with ws_connect(server, server.login(admin, PASSWORD)) as ws:
        for pkg_id, base in PAGINATED:
            last = await call(ws, pkg_id, {**base, "page": MAX_ID, "per_page": 200})
            assert last["status_code"] == RSPCode.OK and last["data"] == [], (pkg_id, last)
            for page in (MAX_ID + 1, 2**63 - 1, 0, -1):
                resp = await call(ws, pkg_id, {**base, "page": page})
                assert resp["status_code"] == RSPCode.INVALID_DATA, (pkg_id, page, resp)
                assert resp["data"]["errors"][0]["path"] == "page"

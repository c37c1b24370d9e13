"""Channel packages 400–404 over real sockets (SQLite and PostgreSQL): wire shape, write-only
secrets, validation, RBAC, tenant isolation, CHANNEL_TEST against real receivers."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest

from app.protocol import PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.receivers import HttpReceiver, Reply, SmtpReceiver
from tests.server import ServerProcess, call, ok, ws_connect

SECRET = "hmac-secret-0123456789"
SMTP_PASSWORD = "smtp-password-never-shown"
HEADER_TOKEN = "Bearer header-token-never-shown"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as rx:
        yield rx


def webhook(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": unique("hook"),
        "kind": "webhook",
        "config": {"url": url, "secret": SECRET, "headers": {"Authorization": HEADER_TOKEN}},
        **extra,
    }


async def test_create_list_update_delete_with_masked_secrets(
    server: ServerProcess, receiver: HttpReceiver
) -> None:
    slug = unique("t")
    editor = await acreate_user(server.database_url, {slug: "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        created = await ok(ws, PkgID.CHANNEL_CREATE, webhook(f"{receiver.url}/in/tok-path?key=q-secret"))
        assert set(created) >= {"id", "name", "kind", "config", "on", "remind_every", "enabled"}
        assert (created["kind"], created["on"], created["remind_every"], created["enabled"]) == (
            "webhook",
            ["down", "up"],
            None,
            True,
        )
        assert created["config"] == {
            "url": f"http://127.0.0.1:{receiver.port}/***",
            "secret": "***",
            "headers": {"Authorization": "***"},
        }
        mail = await ok(
            ws,
            PkgID.CHANNEL_CREATE,
            {
                "name": unique("mail"),
                "kind": "email",
                "config": {
                    "host": "127.0.0.1",
                    "username": "alerts",
                    "password": SMTP_PASSWORD,
                    "from": "wp@example.com",
                    "to": ["oncall@example.com"],
                },
                "on": ["down"],
                "remind_every": 30,
            },
        )
        assert mail["config"]["password"] == "***"
        assert (mail["config"]["security"], mail["config"]["port"]) == ("starttls", 587)

        listed = await call(ws, PkgID.CHANNEL_LIST, {"per_page": 10})
        assert listed["status_code"] == RSPCode.OK
        assert [c["id"] for c in listed["data"]] == [created["id"], mail["id"]]
        assert listed["meta"] == {"page": 1, "per_page": 10, "total": 2, "pages": 1}
        text = json.dumps(listed)
        for secret in (SECRET, SMTP_PASSWORD, HEADER_TOKEN, "tok-path", "q-secret"):
            assert secret not in text
        assert [c["id"] for c in await ok(ws, PkgID.CHANNEL_LIST, {"kind": "email"})] == [mail["id"]]

        # Sending the masked form back keeps every stored secret; the test send proves it.
        updated = await ok(
            ws, PkgID.CHANNEL_UPDATE, {"id": created["id"], "config": created["config"], "on": ["down"]}
        )
        assert updated["on"] == ["down"] and updated["config"] == created["config"]
        result = await ok(ws, PkgID.CHANNEL_TEST, {"id": created["id"]})
        assert result["ok"] is True and result["status_code"] == 200
        [req] = receiver.requests
        assert req.path == "/in/tok-path?key=q-secret"
        assert req.headers["authorization"] == HEADER_TOKEN
        expected = "sha256=" + hmac.new(SECRET.encode(), req.body, hashlib.sha256).hexdigest()
        assert req.headers["x-watchpost-signature"] == expected
        assert req.json()["event"] == "channel.test"

        # null removes the secret: the next send is unsigned.
        await ok(ws, PkgID.CHANNEL_UPDATE, {"id": created["id"], "config": {"secret": None}})
        await ok(ws, PkgID.CHANNEL_TEST, {"id": created["id"]})
        assert "x-watchpost-signature" not in receiver.requests[-1].headers

        deleted = await ok(ws, PkgID.CHANNEL_DELETE, {"id": created["id"]})
        assert deleted["deleted"] is True
        gone = await call(ws, PkgID.CHANNEL_UPDATE, {"id": created["id"], "enabled": False})
        assert gone["status_code"] == RSPCode.NOT_FOUND
        assert [c["id"] for c in await ok(ws, PkgID.CHANNEL_LIST)] == [mail["id"]]


async def test_validation_errors_name_the_field_and_never_echo_secrets(server: ServerProcess) -> None:
    slug = unique("t")
    editor = await acreate_user(server.database_url, {slug: "editor"})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "a", "kind": "pager", "config": {}}, "kind"),
        ({"name": "a", "kind": "webhook", "config": {}}, "config"),
        ({"name": "a", "kind": "webhook", "config": {"url": "ftp://x.example/y"}}, "config.url"),
        ({"name": "a", "kind": "slack", "config": {"url": "https://h.example/x", "extra": 1}}, "config"),
        (
            {
                "name": "a",
                "kind": "webhook",
                "config": {"url": "https://h.example/x", "headers": {"X": "a\r\nb"}},
            },
            "config.headers.X",
        ),
        (
            {"name": "a", "kind": "email", "config": {"host": "h", "from": "x", "to": ["a@b.co"]}},
            "config.from",
        ),
        (
            {
                "name": "a",
                "kind": "email",
                "config": {"host": "h", "from": "a@b.co", "to": [], "password": "pw"},
            },
            "config.to",
        ),
        (
            {"name": "a", "kind": "webhook", "config": {"url": "https://h.example/x"}, "on": ["sideways"]},
            "on.0",
        ),
        (
            {"name": "a", "kind": "webhook", "config": {"url": "https://h.example/x"}, "remind_every": 0},
            "remind_every",
        ),
    ]
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        for data, path in cases:
            resp = await call(ws, PkgID.CHANNEL_CREATE, data)
            assert resp["status_code"] == RSPCode.INVALID_DATA, (data, resp)
            assert resp["data"]["errors"][0]["path"] == path, (data, resp)
        short_secret = await call(
            ws,
            PkgID.CHANNEL_CREATE,
            {"name": "s", "kind": "webhook", "config": {"url": "https://h.example/x", "secret": "tiny!"}},
        )
        assert short_secret["status_code"] == RSPCode.INVALID_DATA
        assert "tiny!" not in json.dumps(short_secret)
        first = await ok(ws, PkgID.CHANNEL_CREATE, webhook("https://h.example/x"))
        dup = await call(ws, PkgID.CHANNEL_CREATE, webhook("https://h.example/y", name=first["name"]))
        assert dup["status_code"] == RSPCode.CONFLICT
        switch = await call(ws, PkgID.CHANNEL_UPDATE, {"id": first["id"], "kind": "slack"})
        assert switch["status_code"] == RSPCode.INVALID_DATA


async def test_viewers_read_editors_write_and_tenants_are_isolated(server: ServerProcess) -> None:
    a, b = unique("ta"), unique("tb")
    editor_a = await acreate_user(server.database_url, {a: "editor"})
    viewer_a = await acreate_user(server.database_url, {a: "viewer"})
    editor_b = await acreate_user(server.database_url, {b: "editor"})
    async with ws_connect(server, server.login(editor_a, PASSWORD)) as ws:
        mine = await ok(ws, PkgID.CHANNEL_CREATE, webhook("https://h.example/a"))
    async with ws_connect(server, server.login(viewer_a, PASSWORD)) as ws:
        assert [c["id"] for c in await ok(ws, PkgID.CHANNEL_LIST)] == [mine["id"]]
        for pkg, data in (
            (PkgID.CHANNEL_CREATE, webhook("https://h.example/v")),
            (PkgID.CHANNEL_UPDATE, {"id": mine["id"], "enabled": False}),
            (PkgID.CHANNEL_DELETE, {"id": mine["id"]}),
            (PkgID.CHANNEL_TEST, {"id": mine["id"]}),
        ):
            assert (await call(ws, pkg, data))["status_code"] == RSPCode.PERMISSION_DENIED
        assert (await ok(ws, PkgID.DELIVERY_LIST)) == []
    async with ws_connect(server, server.login(editor_b, PASSWORD)) as ws:
        assert await ok(ws, PkgID.CHANNEL_LIST) == []
        for pkg, data in (
            (PkgID.CHANNEL_UPDATE, {"id": mine["id"], "enabled": False}),
            (PkgID.CHANNEL_DELETE, {"id": mine["id"]}),
            (PkgID.CHANNEL_TEST, {"id": mine["id"]}),
        ):
            resp = await call(ws, pkg, data)
            assert resp["status_code"] == RSPCode.NOT_FOUND, resp
            assert mine["name"] not in json.dumps(resp)
        assert await ok(ws, PkgID.DELIVERY_LIST, {"channel_id": mine["id"]}) == []


async def test_channel_test_reports_what_the_receiver_said(
    server: ServerProcess, receiver: HttpReceiver
) -> None:
    slug = unique("t")
    editor = await acreate_user(server.database_url, {slug: "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        receiver.script(Reply(status=400, body=b"invalid_token"))
        unsaved = {"kind": "slack", "config": {"url": f"{receiver.url}/services/T/B/X"}}
        bad = await ok(ws, PkgID.CHANNEL_TEST, unsaved)
        assert (bad["ok"], bad["permanent"], bad["status_code"]) == (False, True, 400)
        assert "invalid_token" in bad["error"] and "/services/T/B/X" not in bad["error"]
        good = await ok(ws, PkgID.CHANNEL_TEST, unsaved)
        assert good["ok"] is True
        assert receiver.requests[-1].json()["text"].startswith("[Watchpost] Test message for unsaved channel")
        missing = await call(ws, PkgID.CHANNEL_TEST, {})
        assert missing["status_code"] == RSPCode.INVALID_DATA


async def test_channel_test_sends_email(server: ServerProcess) -> None:
    slug = unique("t")
    editor = await acreate_user(server.database_url, {slug: "editor"})
    with SmtpReceiver() as rx:
        async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
            channel = await ok(
                ws,
                PkgID.CHANNEL_CREATE,
                {
                    "name": "mail",
                    "kind": "email",
                    "config": {
                        "host": "127.0.0.1",
                        "port": rx.port,
                        "security": "none",
                        "from": "wp@example.com",
                        "to": ["oncall@example.com"],
                    },
                },
            )
            result = await ok(ws, PkgID.CHANNEL_TEST, {"id": channel["id"]})
            assert result["ok"] is True, result
        [mail] = rx.mails
    assert mail.subject == "[Watchpost] Test message for mail"
    assert mail.rcpt_tos == ["oncall@example.com"]

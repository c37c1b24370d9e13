"""Write-only channel secrets stay with their destination (issue 14), over real sockets.

A tenant editor may point a channel somewhere else, but the signing secret, the
custom header values and the SMTP password that were stored for the old
destination must never travel to the new one unless the request gives them
again. Local capture servers stand in for the legitimate receiver and for the
attacker's; the audit trail records what was asked, secrets masked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest

from app.protocol import PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.receivers import HttpReceiver, SmtpReceiver
from tests.server import ServerProcess, call, ok, ws_connect

SECRET = "stored-signing-secret-1"
TOKEN = "Bearer stored-header-token"
SMTP_USER = "alerts"
SMTP_PASSWORD = "stored-smtp-password"
STORED = (SECRET, TOKEN, SMTP_PASSWORD)


@pytest.fixture
def legit() -> Iterator[HttpReceiver]:
    with HttpReceiver() as rx:
        yield rx


@pytest.fixture
def attacker() -> Iterator[HttpReceiver]:
    with HttpReceiver() as rx:
        yield rx


def _paths(resp: dict[str, Any]) -> set[str]:
    return {e["path"] for e in resp["data"]["errors"]}


def _leaked(rx: HttpReceiver) -> list[str]:
    """Stored secrets (or a signature made with the stored secret) seen by ``rx``."""
    found = []
    for req in rx.requests:
        text = json.dumps(req.headers) + req.body.decode("utf-8", "replace")
        found += [s for s in STORED if s in text]
        signature = "sha256=" + hmac.new(SECRET.encode(), req.body, hashlib.sha256).hexdigest()
        if req.headers.get("x-watchpost-signature") == signature:
            found.append("signature made with the stored secret")
    return found


async def _webhook(ws: Any, url: str) -> dict[str, Any]:
    return dict(
        await ok(
            ws,
            PkgID.CHANNEL_CREATE,
            {
                "name": unique("hook"),
                "kind": "webhook",
                "config": {"url": url, "secret": SECRET, "headers": {"Authorization": TOKEN}},
            },
        )
    )


async def test_channel_test_to_another_origin_needs_the_secrets_again(
    server: ServerProcess, legit: HttpReceiver, attacker: HttpReceiver
) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        channel = await _webhook(ws, f"{legit.url}/hook")
        moved = await call(
            ws, PkgID.CHANNEL_TEST, {"id": channel["id"], "config": {"url": attacker.url + "/"}}
        )
        assert moved["status_code"] == RSPCode.INVALID_DATA, moved
        assert _paths(moved) == {"config.secret", "config.headers.Authorization"}
        assert "config.secret" in moved["data"]["msg"]
        # Sending the masked values back is not giving them again.
        masked = await call(
            ws,
            PkgID.CHANNEL_TEST,
            {
                "id": channel["id"],
                "config": {"url": attacker.url + "/", "secret": "***", "headers": {"Authorization": "***"}},
            },
        )
        assert _paths(masked) == {"config.secret", "config.headers.Authorization"}
        # Only the port differs: still another origin.
        other_port = f"http://127.0.0.1:{legit.port + 1 if legit.port < 65535 else legit.port - 1}/hook"
        port_moved = await call(ws, PkgID.CHANNEL_TEST, {"id": channel["id"], "config": {"url": other_port}})
        assert port_moved["status_code"] == RSPCode.INVALID_DATA

        # Removing them (null) or giving new ones is fine; the new destination gets only those.
        bare = await ok(
            ws,
            PkgID.CHANNEL_TEST,
            {"id": channel["id"], "config": {"url": attacker.url + "/", "secret": None, "headers": None}},
        )
        assert bare["ok"] is True, bare
        fresh = await ok(
            ws,
            PkgID.CHANNEL_TEST,
            {
                "id": channel["id"],
                "config": {
                    "url": attacker.url + "/",
                    "secret": "a-brand-new-secret",
                    "headers": {"Authorization": "Bearer new"},
                },
            },
        )
        assert fresh["ok"] is True, fresh
        assert len(attacker.requests) == 2
        assert "x-watchpost-signature" not in attacker.requests[0].headers
        assert attacker.requests[1].headers["authorization"] == "Bearer new"
        assert _leaked(attacker) == []

        # Same origin, another path: the stored secrets still go (nothing changed hands).
        same = await ok(
            ws, PkgID.CHANNEL_TEST, {"id": channel["id"], "config": {"url": f"{legit.url}/other"}}
        )
        assert same["ok"] is True, same
        [req] = legit.requests
        assert req.path == "/other" and req.headers["authorization"] == TOKEN
        assert _leaked(legit) == [TOKEN, "signature made with the stored secret"]


async def test_channel_update_to_another_origin_needs_the_secrets_again(
    server: ServerProcess, legit: HttpReceiver, attacker: HttpReceiver
) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        channel = await _webhook(ws, f"{legit.url}/hook")
        moved = await call(
            ws, PkgID.CHANNEL_UPDATE, {"id": channel["id"], "config": {"url": attacker.url + "/"}}
        )
        assert moved["status_code"] == RSPCode.INVALID_DATA, moved
        assert _paths(moved) == {"config.secret", "config.headers.Authorization"}
        # Nothing was saved: the channel still sends to the legitimate receiver.
        assert (await ok(ws, PkgID.CHANNEL_TEST, {"id": channel["id"]}))["ok"] is True
        assert len(legit.requests) == 1 and attacker.requests == []

        # Re-entering one and removing the other saves; the stored ones never reach the new origin.
        await ok(
            ws,
            PkgID.CHANNEL_UPDATE,
            {
                "id": channel["id"],
                "config": {"url": attacker.url + "/", "secret": "replacement-secret", "headers": {}},
            },
        )
        assert (await ok(ws, PkgID.CHANNEL_TEST, {"id": channel["id"]}))["ok"] is True
        [req] = attacker.requests
        expected = "sha256=" + hmac.new(b"replacement-secret", req.body, hashlib.sha256).hexdigest()
        assert req.headers["x-watchpost-signature"] == expected
        assert "authorization" not in req.headers
        assert _leaked(attacker) == []


async def test_email_destination_change_needs_the_password_again(server: ServerProcess) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    with (
        SmtpReceiver(credentials=(SMTP_USER, SMTP_PASSWORD)) as legit,
        SmtpReceiver(credentials=(SMTP_USER, "new-password")) as attacker,
    ):
        async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
            base = {
                "host": "127.0.0.1",
                "port": legit.port,
                "security": "none",
                "username": SMTP_USER,
                "password": SMTP_PASSWORD,
                "from": "wp@example.com",
                "to": ["oncall@example.com"],
            }
            channel = await ok(ws, PkgID.CHANNEL_CREATE, {"name": "mail", "kind": "email", "config": base})
            cid = channel["id"]
            for patch in ({"port": attacker.port}, {"username": "someone-else"}, {"host": "localhost"}):
                for pkg in (PkgID.CHANNEL_TEST, PkgID.CHANNEL_UPDATE):
                    resp = await call(ws, pkg, {"id": cid, "config": patch})
                    assert resp["status_code"] == RSPCode.INVALID_DATA, (pkg, patch, resp)
                    assert _paths(resp) == {"config.password"}, resp
            assert attacker.logins == [] and legit.logins == []

            # The unchanged channel still logs in to its own server.
            assert (await ok(ws, PkgID.CHANNEL_TEST, {"id": cid}))["ok"] is True
            assert legit.logins == [(SMTP_USER, SMTP_PASSWORD)]
            # With the password given again the new server gets that one.
            await ok(
                ws,
                PkgID.CHANNEL_UPDATE,
                {"id": cid, "config": {"port": attacker.port, "password": "new-password"}},
            )
            assert (await ok(ws, PkgID.CHANNEL_TEST, {"id": cid}))["ok"] is True
            assert attacker.logins == [(SMTP_USER, "new-password")]
            assert len(attacker.mails) == 1


async def test_audit_rows_record_the_patch_with_secrets_masked(
    server: ServerProcess, legit: HttpReceiver, attacker: HttpReceiver
) -> None:
    admin = await acreate_user(server.database_url, {unique("t"): "admin"})
    async with ws_connect(server, server.login(admin, PASSWORD)) as ws:
        channel = await _webhook(ws, f"{legit.url}/path-token?key=query-token")
        await call(ws, PkgID.CHANNEL_TEST, {"id": channel["id"], "config": {"url": attacker.url + "/x"}})
        await ok(
            ws,
            PkgID.CHANNEL_UPDATE,
            {
                "id": channel["id"],
                "name": "renamed",
                "config": {"secret": "updated-secret-2", "headers": {"Authorization": "Bearer updated"}},
            },
        )
        rows = await ok(ws, PkgID.AUDIT_LIST, {"target_id": str(channel["id"])})
    by_action = {r["action"]: r for r in rows}
    assert set(by_action) == {"CHANNEL_CREATE", "CHANNEL_TEST", "CHANNEL_UPDATE"}
    assert by_action["CHANNEL_CREATE"]["details"]["config"] == {
        "url": f"http://127.0.0.1:{legit.port}/***",
        "secret": "***",
        "headers": {"Authorization": "***"},
    }
    assert by_action["CHANNEL_CREATE"]["details"]["kind"] == "webhook"
    test_row = by_action["CHANNEL_TEST"]
    assert test_row["status_code"] == RSPCode.INVALID_DATA
    assert test_row["details"] == {
        "id": channel["id"],
        "config": {"url": f"http://127.0.0.1:{attacker.port}/***"},
    }
    update = by_action["CHANNEL_UPDATE"]["details"]
    assert update["name"] == "renamed"
    assert update["config"] == {"secret": "***", "headers": {"Authorization": "***"}}
    text = json.dumps(rows)
    for secret in (*STORED, "updated-secret-2", "Bearer updated", "path-token", "query-token"):
        assert secret not in text


async def test_channel_urls_get_the_strict_outbound_url_check(server: ServerProcess) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        channel = await _webhook(ws, "https://hooks.example.com/ok")
        for url in (
            "http://h.example/a b",
            "http://h.example:0/",
            "http://bad..host/",
        ):
            for pkg, data in (
                (PkgID.CHANNEL_CREATE, {"name": unique("u"), "kind": "slack", "config": {"url": url}}),
                (PkgID.CHANNEL_UPDATE, {"id": channel["id"], "config": {"url": url}}),
                (PkgID.CHANNEL_TEST, {"kind": "discord", "config": {"url": url}}),
            ):
                resp = await call(ws, pkg, data)
                assert resp["status_code"] == RSPCode.INVALID_DATA, (url, pkg, resp)
                assert _paths(resp) == {"config.url"}, resp

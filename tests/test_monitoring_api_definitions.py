"""Monitor definitions under hostile or careless input, over real sockets (SQLite and
PostgreSQL): strict URLs and hosts, the default timeout, CHECK_TIMEOUT_MAX, and
credentials inside monitor URLs (masked in every answer and event, kept for the check)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from app.protocol import PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.hostile_targets import StreamTarget
from tests.server import ServerProcess, call, ok, ws_connect

SECRET = "s3cr3t-pa55word"


def http(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": unique("m"), "kind": "http", "url": url, "interval": 30, **extra}


def errors_of(resp: dict[str, Any]) -> dict[str, str]:
    assert resp["status_code"] == RSPCode.INVALID_DATA, resp
    return {e["path"]: e["msg"] for e in resp["data"]["errors"]}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://host.example/x\r\nX-Injected: 1", "url: must not contain spaces or control characters"),
        ("http://host.example/a\tb", "url: must not contain spaces or control characters"),
        # DEL and the other C0 controls stop at the frame decoder (tests/unit/test_edge_frames.py);
        # C1 controls pass the decoder and stop here.
        ("http://host.example/\x85", "url: must not contain spaces or control characters"),
        ("http://[::1/", "url: "),
        ("http://[fe80::1%25eth0]/", "url: "),
        ("gopher://host.example/", "url: must be an absolute http:// or https:// URL"),
        ("http://host.example:0/", "url: port must be 1-65535"),
        ("http://bad_host!.example/", "url: host is not a valid host name"),
    ],
)
async def test_bad_urls_are_refused_with_the_path(server: ServerProcess, url: str, says: str) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        for pkg, data in (
            (PkgID.MONITOR_CREATE, http(url)),
            (PkgID.MONITOR_CHECK_NOW, {"monitor": http(url)}),
        ):
            errors = errors_of(await call(ws, pkg, data))
            assert errors["url"].startswith(says), errors
        created = await ok(ws, PkgID.MONITOR_CREATE, http("https://host.example/ok"))
        resp = await call(
            ws, PkgID.MONITOR_UPDATE, {"id": created["id"], "version": created["version"], "url": url}
        )
        assert errors_of(resp)["url"].startswith(says)
        assert (await ok(ws, PkgID.MONITOR_GET, {"id": created["id"]}))["url"] == "https://host.example/ok"


async def test_bad_tcp_hosts_are_refused(server: ServerProcess) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        for host in (
            "a b",
            "host\r\n",
            "tcp://host",
            "host:22",
            "[::1",
            "-bad.example",
            "x" * 64 + ".example",
        ):
            resp = await call(
                ws, PkgID.MONITOR_CREATE, {"name": unique("t"), "kind": "tcp", "host": host, "port": 22}
            )
            assert errors_of(resp)["host"].startswith("host: must be a host name or IP address"), host
        for host in ("db.internal", "10.0.0.1", "::1", "svc_a.example."):
            await ok(ws, PkgID.MONITOR_CREATE, {"name": unique("t"), "kind": "tcp", "host": host, "port": 22})


async def test_default_timeout_fits_the_interval(server: ServerProcess) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        # The minimum interval with no timeout given: 80 % of it, not a refusal.
        short = await ok(ws, PkgID.MONITOR_CREATE, http("https://a.example/", interval=10))
        assert short["timeout"] == 8
        assert (await ok(ws, PkgID.MONITOR_CREATE, http("https://a.example/", interval=300)))["timeout"] == 10
        # An explicit timeout that does not fit names both values.
        errors = errors_of(
            await call(ws, PkgID.MONITOR_CREATE, http("https://a.example/", interval=10, timeout=10))
        )
        assert errors["timeout"] == "timeout (10 s) must be shorter than interval (10 s)"

        # A default timeout follows a changed interval, both ways ...
        m = await ok(ws, PkgID.MONITOR_CREATE, http("https://a.example/", interval=60))
        assert m["timeout"] == 10
        m = await ok(ws, PkgID.MONITOR_UPDATE, {"id": m["id"], "version": m["version"], "interval": 10})
        assert m["timeout"] == 8
        m = await ok(ws, PkgID.MONITOR_UPDATE, {"id": m["id"], "version": m["version"], "interval": 120})
        assert m["timeout"] == 10
        # ... an explicit one stays, and is refused when the new interval is shorter.
        e = await ok(ws, PkgID.MONITOR_CREATE, http("https://a.example/", interval=60, timeout=30))
        resp = await call(ws, PkgID.MONITOR_UPDATE, {"id": e["id"], "version": e["version"], "interval": 20})
        assert errors_of(resp)["timeout"] == "timeout (30 s) must be shorter than interval (20 s)"
        e = await ok(ws, PkgID.MONITOR_UPDATE, {"id": e["id"], "version": e["version"], "interval": 40})
        assert e["timeout"] == 30


async def test_check_timeout_max_caps_a_monitor_timeout(server: ServerProcess) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        resp = await call(ws, PkgID.MONITOR_CREATE, http("https://a.example/", interval=86400, timeout=86399))
        assert errors_of(resp)["timeout"] == (
            "timeout (86399 s) is above the largest allowed (60 s, CHECK_TIMEOUT_MAX)"
        )
        m = await ok(ws, PkgID.MONITOR_CREATE, http("https://a.example/", interval=600, timeout=60))
        resp = await call(ws, PkgID.MONITOR_UPDATE, {"id": m["id"], "version": m["version"], "timeout": 61})
        assert "timeout (61 s) is above the largest allowed (60 s" in errors_of(resp)["timeout"]
        resp = await call(
            ws, PkgID.MONITOR_CHECK_NOW, {"monitor": http("https://a.example/", interval=86400, timeout=3600)}
        )
        assert "CHECK_TIMEOUT_MAX" in errors_of(resp)["timeout"]


async def test_url_credentials_are_masked_everywhere_and_kept_for_the_check(server: ServerProcess) -> None:
    slug = unique("t")
    editor = await acreate_user(server.database_url, {slug: "editor"})
    viewer = await acreate_user(server.database_url, {slug: "viewer"})
    with StreamTarget(2) as target:
        secret_url = target.url("/health", userinfo=f"alice:{SECRET}")
        async with (
            ws_connect(server, server.login(editor, PASSWORD)) as ws,
            ws_connect(server, server.login(viewer, PASSWORD)) as reader,
            ws_connect(server, server.login(viewer, PASSWORD)) as watcher,
        ):
            # `watcher` only listens: the calls below would skip the events it must see.
            await ok(watcher, PkgID.SUBSCRIBE, {"topics": ["monitors"]})
            created = await ok(ws, PkgID.MONITOR_CREATE, http(secret_url, keyword="absent"))
            shown = target.url("/health", userinfo="***")
            assert created["url"] == shown
            answers: list[Any] = [created]
            answers.append(await ok(reader, PkgID.MONITOR_GET, {"id": created["id"]}))
            answers.append(await ok(reader, PkgID.MONITOR_LIST, {}))
            answers.append(await ok(reader, PkgID.STATUS_SUMMARY, {}))
            # Sending the masked URL back unchanged keeps the stored credentials.
            updated = await ok(
                ws,
                PkgID.MONITOR_UPDATE,
                {"id": created["id"], "version": created["version"], "url": shown, "description": "x"},
            )
            answers.append(updated)
            # The check still sends them (basic auth) and nothing it answers quotes them.
            answers.append(await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": created["id"]}))
            answers.append(await ok(reader, PkgID.CHECK_HISTORY, {"monitor_id": created["id"]}))
            events = []
            try:
                async with asyncio.timeout(2):
                    while True:
                        events.append(json.loads(await watcher.recv()))
            except TimeoutError:
                pass
            changed = [e for e in events if e["pkg_id"] == PkgID.EVENT_MONITOR_CHANGED]
            assert len(changed) == 2, events  # created, updated
            answers.extend(events)
            # The masked form with a changed URL would carry the credentials elsewhere: refused.
            resp = await call(
                ws,
                PkgID.MONITOR_UPDATE,
                {"id": created["id"], "version": updated["version"], "url": "http://***@other.example/"},
            )
            assert errors_of(resp)["url"].startswith("url: re-enter the credentials")
        assert len(target.heads) == 1

        expected = base64.b64encode(f"alice:{SECRET}".encode()).decode()
        assert f"Authorization: Basic {expected}".lower() in target.heads[0].lower()
    text = json.dumps(answers)
    assert SECRET not in text and "alice" not in text
    assert text.count("***@") >= 6
    assert SECRET not in server.log_text()

"""Status pages over real sockets and HTTP (SQLite and PostgreSQL, collector off): the
packages and their validation, the public page and its 404, the anonymous page socket's
scope, live state changes on the page topic, posts' limited Markdown, badges, and the
anonymous connection limits (per address, per page) on a server of their own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from app.protocol import PkgID, RSPCode
from app.rbac import PAGE_VIEWER_PACKAGES
from tests import services
from tests.bulk_monitors import add_monitors
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, expect_close, ok, ws_connect

SVG = "{http://www.w3.org/2000/svg}"
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def http_monitor(name: str) -> dict[str, Any]:
    # Never checked (collector off): the URL must simply never reach a page.
    return {"name": name, "kind": "http", "url": "https://secret-host.internal/health", "interval": 30}


@contextlib.asynccontextmanager
async def anon(srv: ServerProcess, slug: str, address: str | None = None) -> AsyncIterator[ClientConnection]:
    """An anonymous status-page socket, optionally from a forwarded ``address``."""
    headers = {"X-Forwarded-For": address} if address else None
    async with connect(
        f"{srv.ws_url}?status_page={slug}",
        subprotocols=["watchpost.v1"],  # type: ignore[list-item]
        additional_headers=headers,
        open_timeout=10,
    ) as ws:
        yield ws


async def next_event(ws: ClientConnection, topic: str, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("topic") == topic:
                return dict(msg)


def http_get(srv: ServerProcess, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(srv.http_url + path, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def badge_text(body: bytes) -> tuple[str, str]:
    """(title, aria-label) of a badge, parsed as XML."""
    svg = ET.fromstring(body)
    assert svg.tag == f"{SVG}svg" and svg.get("role") == "img"
    title = svg.find(f"{SVG}title")
    assert title is not None and title.text
    return title.text, str(svg.get("aria-label"))


class Tenant:
    """A fresh tenant with an owner socket, two monitors on a public page, one off it, and a
    members-only page."""

    slug: str
    token: str
    on: dict[str, Any]
    also: dict[str, Any]
    off: dict[str, Any]
    page: dict[str, Any]
    private: dict[str, Any]


async def make_tenant(srv: ServerProcess) -> Tenant:
    t = Tenant()
    t.slug = unique("sp")
    owner = await acreate_user(srv.database_url, {t.slug: "owner"})
    t.token = await asyncio.to_thread(srv.login, owner, PASSWORD)
    async with ws_connect(srv, t.token, tenant=t.slug) as ws:
        t.on = await ok(ws, PkgID.MONITOR_CREATE, http_monitor("checkout-api"))
        t.also = await ok(ws, PkgID.MONITOR_CREATE, http_monitor("search"))
        t.off = await ok(ws, PkgID.MONITOR_CREATE, http_monitor("internal-batch"))
        t.page = await ok(
            ws,
            PkgID.STATUS_PAGE_CREATE,
            {
                "slug": unique("acme"),
                "title": "Acme " + XSS,
                "description": "Desc " + XSS,
                "footer": "Foot " + XSS,
                "public": True,
                "show_latency": True,
                "sections": [
                    {"title": "API " + XSS, "monitors": [t.on["id"]]},
                    {"title": "Web", "monitors": [t.also["id"]]},
                ],
            },
        )
        t.private = await ok(
            ws,
            PkgID.STATUS_PAGE_CREATE,
            {
                "slug": unique("inside"),
                "title": "Inside",
                "sections": [{"title": "All", "monitors": [t.off["id"]]}],
            },
        )
    return t


async def test_packages_validate_and_stay_in_their_tenant(server: ServerProcess) -> None:
    t = await make_tenant(server)
    other = unique("other")
    stranger = await acreate_user(server.database_url, {other: "owner"})
    viewer = await acreate_user(server.database_url, {t.slug: "viewer"})
    async with ws_connect(server, t.token, tenant=t.slug) as ws:
        got = await ok(ws, PkgID.STATUS_PAGE_GET, {"id": t.page["id"]})
        assert got["sections"] == t.page["sections"] and got["version"] == 1
        bad = [
            ({"slug": "Not A Slug", "title": "x"}, RSPCode.INVALID_DATA, "slug"),
            ({"slug": t.page["slug"], "title": "x"}, RSPCode.CONFLICT, "taken"),
            (
                {"slug": unique("a"), "title": "x", "logo_url": "javascript:alert(1)"},
                RSPCode.INVALID_DATA,
                "logo_url",
            ),
            (
                {"slug": unique("a"), "title": "x", "uptime_window": "1y"},
                RSPCode.INVALID_DATA,
                "uptime_window",
            ),
            (
                {
                    "slug": unique("a"),
                    "title": "x",
                    "sections": [{"title": "s", "monitors": [t.on["id"], t.on["id"]]}],
                },
                RSPCode.INVALID_DATA,
                "twice",
            ),
            (
                {"slug": unique("a"), "title": "x", "sections": [{"title": "s", "monitors": [10**9]}]},
                RSPCode.INVALID_DATA,
                "not monitors of this tenant",
            ),
        ]
        for data, code, words in bad:
            resp = await call(ws, PkgID.STATUS_PAGE_CREATE, data)
            assert resp["status_code"] == code, (data, resp)
            assert words in json.dumps(resp["data"]), resp
        # Reorder sections with the version read; a stale version is refused.
        sections = list(reversed(t.page["sections"]))
        upd = await ok(ws, PkgID.STATUS_PAGE_UPDATE, {"id": t.page["id"], "version": 1, "sections": sections})
        assert upd["sections"] == sections and upd["version"] == 2
        stale = await call(ws, PkgID.STATUS_PAGE_UPDATE, {"id": t.page["id"], "version": 1, "title": "x"})
        assert stale["status_code"] == RSPCode.CONFLICT
        listed = await ok(ws, PkgID.STATUS_PAGE_LIST, {})
        assert {p["id"] for p in listed} == {t.page["id"], t.private["id"]}
        # A monitor deleted since the page was saved: the page drops it, a re-save is accepted.
        await ok(ws, PkgID.MONITOR_DELETE, {"id": t.also["id"]})
        view = await ok(ws, PkgID.STATUS_PAGE_VIEW, {"id": t.page["id"]})
        assert [m["name"] for s in view["sections"] for m in s["monitors"]] == ["checkout-api"]
        again = await ok(
            ws, PkgID.STATUS_PAGE_UPDATE, {"id": t.page["id"], "version": 2, "sections": sections}
        )
        assert again["sections"] == [{"title": sections[0]["title"], "monitors": []}, sections[1]]
    # Viewers read (members-only pages too) but cannot edit.
    vtoken = await asyncio.to_thread(server.login, viewer, PASSWORD)
    async with ws_connect(server, vtoken, tenant=t.slug) as ws:
        view = await ok(ws, PkgID.STATUS_PAGE_VIEW, {"id": t.private["id"]})
        assert [m["name"] for s in view["sections"] for m in s["monitors"]] == ["internal-batch"]
        denied = await call(ws, PkgID.STATUS_PAGE_UPDATE, {"id": t.page["id"], "version": 3, "title": "x"})
        assert denied["status_code"] == RSPCode.PERMISSION_DENIED
    # Another tenant's page and monitors behave as unknown.
    stoken = await asyncio.to_thread(server.login, stranger, PASSWORD)
    async with ws_connect(server, stoken, tenant=other) as ws:
        for pkg in (PkgID.STATUS_PAGE_GET, PkgID.STATUS_PAGE_VIEW, PkgID.STATUS_PAGE_DELETE):
            assert (await call(ws, pkg, {"id": t.page["id"]}))["status_code"] == RSPCode.NOT_FOUND
        post = await call(ws, PkgID.STATUS_POST_CREATE, {"page_id": t.page["id"], "title": "x"})
        assert post["status_code"] == RSPCode.NOT_FOUND
        resp = await call(
            ws,
            PkgID.STATUS_PAGE_CREATE,
            {"slug": unique("b"), "title": "x", "sections": [{"title": "s", "monitors": [t.on["id"]]}]},
        )
        assert resp["status_code"] == RSPCode.INVALID_DATA


async def test_public_page_html_is_escaped_and_private_is_404(server: ServerProcess) -> None:
    t = await make_tenant(server)
    status, headers, body = await asyncio.to_thread(http_get, server, f"/status/{t.page['slug']}")
    html = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "checkout-api" in html and "search" in html
    assert "internal-batch" not in html, "a monitor that is not on the page"
    assert "secret-host" not in html, "monitor definitions never reach a page"
    assert "<script>window.__xss" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__xss=2&lt;/script&gt;" in html
    assert "script-src 'self'" in headers["content-security-policy"]
    # Members only and unknown: the same 404, no hint that the page exists.
    private = await asyncio.to_thread(http_get, server, f"/status/{t.private['slug']}")
    missing = await asyncio.to_thread(http_get, server, f"/status/{unique('nope')}")
    assert private[0] == missing[0] == 404
    assert private[2] == missing[2]
    assert "Inside" not in private[2].decode()


async def test_anonymous_socket_reads_its_page_and_nothing_else(server: ServerProcess) -> None:
    t = await make_tenant(server)
    topic = f"status_page.{t.page['id']}"
    async with anon(server, t.page["slug"]) as ws:
        view = await ok(ws, PkgID.STATUS_PAGE_VIEW, {})
        assert view["id"] == t.page["id"] and view["topic"] == topic
        assert [m["name"] for s in view["sections"] for m in s["monitors"]] == ["checkout-api", "search"]
        assert "secret-host" not in json.dumps(view)
        assert (await call(ws, PkgID.STATUS_PAGE_VIEW, {"id": t.private["id"]}))[
            "status_code"
        ] == RSPCode.NOT_FOUND
        # Every other package, whatever role it needs, answers 3.
        others = [p for p in PkgID if p < 900 and int(p) not in PAGE_VIEWER_PACKAGES]
        for pkg in others:
            resp = await call(ws, pkg, {"id": t.on["id"]})
            assert resp["status_code"] == RSPCode.PERMISSION_DENIED, (pkg, resp)
        # Every other topic is refused, this tenant's or another page's.
        for name in ("monitors", f"monitor.{t.on['id']}", "incidents", f"status_page.{t.private['id']}"):
            resp = await call(ws, PkgID.SUBSCRIBE, {"topics": [name]})
            assert resp["status_code"] == RSPCode.PERMISSION_DENIED, (name, resp)
        mixed = await call(ws, PkgID.SUBSCRIBE, {"topics": [topic, "monitors"]})
        assert mixed["status_code"] == RSPCode.PERMISSION_DENIED
        assert (await ok(ws, PkgID.SUBSCRIBE, {"topics": [topic]}))["topics"][topic]["seq"] >= 0

        # Live: pausing a monitor that is not on the page tells the page nothing; one on it does,
        # with a page-safe payload.
        async with ws_connect(server, t.token, tenant=t.slug) as editor:
            await ok(editor, PkgID.MONITOR_PAUSE, {"id": t.off["id"]})
            await ok(editor, PkgID.MONITOR_PAUSE, {"id": t.on["id"]})
        event = await next_event(ws, topic)
        assert event["pkg_id"] == PkgID.EVENT_MONITOR_STATUS
        assert event["data"]["id"] == t.on["id"] and event["data"]["state"] == "paused"
        assert set(event["data"]) == {"id", "name", "state", "previous", "changed_at", "latency_ms"}
        # A monitor on the page renamed: the page is told to read its view again, and the view
        # it reads (newer than the event) has the new name.
        async with ws_connect(server, t.token, tenant=t.slug) as editor:
            current = await ok(editor, PkgID.MONITOR_GET, {"id": t.on["id"]})
            await ok(
                editor, PkgID.MONITOR_UPDATE, {"id": t.on["id"], "version": current["version"], "name": "pay"}
            )
        event = await next_event(ws, topic)
        assert event["pkg_id"] == PkgID.EVENT_MONITOR_CHANGED and event["data"]["action"] == "page_updated"
        view = await ok(ws, PkgID.STATUS_PAGE_VIEW, {"newer_than": event["data"]["at"]})
        assert [m["name"] for s in view["sections"] for m in s["monitors"]] == ["pay", "search"]
    # A members-only page and an unknown slug are refused alike.
    for slug in (t.private["slug"], unique("nope"), "../x"):
        async with anon(server, slug) as ws:
            assert await expect_close(ws) == 4001


async def test_posts_render_limited_markdown_safely(server: ServerProcess) -> None:
    t = await make_tenant(server)
    body = (
        "**Degraded** logins.\n\n" + XSS + "\n\n[details](https://example.com/x) [bad](javascript:alert(1))"
    )
    async with ws_connect(server, t.token, tenant=t.slug) as ws:
        post = await ok(
            ws,
            PkgID.STATUS_POST_CREATE,
            {
                "page_id": t.page["id"],
                "title": "Slow " + XSS,
                "body": body,
                "format": "markdown",
                "severity": "minor",
            },
        )
        plain = await ok(
            ws, PkgID.STATUS_POST_CREATE, {"page_id": t.page["id"], "title": "Plain", "body": "**not bold**"}
        )
        bad = await call(
            ws, PkgID.STATUS_POST_CREATE, {"page_id": t.page["id"], "title": "x", "severity": "apocalyptic"}
        )
        assert bad["status_code"] == RSPCode.INVALID_DATA and "severity" in json.dumps(bad["data"])
        view = await ok(ws, PkgID.STATUS_PAGE_VIEW, {"id": t.page["id"]})
        rendered = {p["id"]: p["body_html"] for p in view["posts"]}
        html = rendered[post["id"]]
        assert "<strong>Degraded</strong>" in html
        assert '<a rel="nofollow noopener noreferrer" href="https://example.com/x">details</a>' in html
        assert "javascript:" not in html.replace("[bad](javascript:alert(1))", "")
        assert "<script" not in html and "<img" not in html
        assert rendered[plain["id"]] == "<p>**not bold**</p>\n"
        resolved = await ok(ws, PkgID.STATUS_POST_UPDATE, {"id": post["id"], "version": 1, "resolved": True})
        assert resolved["resolved_at"] is not None
    _, _, page = await asyncio.to_thread(http_get, server, f"/status/{t.page['slug']}")
    assert b"<strong>Degraded</strong>" in page and b"(resolved)" in page and b"<script>window" not in page


async def test_badges(server: ServerProcess) -> None:
    t = await make_tenant(server)
    async with ws_connect(server, t.token, tenant=t.slug) as ws:
        await ok(ws, PkgID.MONITOR_PAUSE, {"id": t.also["id"]})
    base = f"/badge/{t.page['slug']}"
    status, headers, body = await asyncio.to_thread(http_get, server, f"{base}/search/status.svg")
    assert status == 200 and headers["content-type"].startswith("image/svg+xml")
    assert "max-age=60" in headers["cache-control"]
    assert badge_text(body) == ("status: paused", "status: paused")
    _, _, body = await asyncio.to_thread(http_get, server, f"{base}/checkout-api/uptime.svg?window=7d")
    assert badge_text(body)[0] == "uptime 7d: unknown"  # no checks yet
    _, _, body = await asyncio.to_thread(http_get, server, f"{base}/checkout-api/latency.svg")
    assert badge_text(body)[0] == "latency: unknown"
    unknown = [
        f"/badge/{unique('nope')}/search/status.svg",  # no such page
        f"{base}/{unique('nope')}/status.svg",  # no such monitor
        f"{base}/internal-batch/status.svg",  # a monitor of the tenant, not on the page
        f"/badge/{t.private['slug']}/internal-batch/status.svg",  # members-only page
    ]
    for path in unknown:
        status, _, body = await asyncio.to_thread(http_get, server, path)
        assert status == 200 and badge_text(body) == ("status: unknown", "status: unknown"), path
    _, _, body = await asyncio.to_thread(http_get, server, f"{base}/search/uptime.svg?window=<b>")
    assert badge_text(body)[0] == "uptime <b>: unknown"  # escaped in the SVG, parsed back


@pytest.fixture(scope="module")
def limited() -> Iterator[ServerProcess]:
    """Small anonymous limits; loopback is a trusted proxy so tests can speak for many addresses."""
    srv = ServerProcess(
        services.create_pg_database(),
        env={
            "REDIS_URL": services.redis_test_url(),
            "REDIS_PREFIX": f"wptest:{uuid.uuid4().hex[:10]}:",
            "STATUS_PAGE_MAX_PER_ADDRESS": "3",
            "STATUS_PAGE_MAX_VIEWERS": "5",
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
            "WS_MESSAGE_RATE_LIMIT": "100000",
        },
    ).start()
    yield srv
    srv.stop()


async def test_anonymous_limits_per_address_and_per_page(limited: ServerProcess) -> None:
    t = await make_tenant(limited)
    slug = t.page["slug"]
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(3):
            ws = await stack.enter_async_context(anon(limited, slug, "10.1.0.1"))
            await ok(ws, PkgID.STATUS_PAGE_VIEW, {})
        async with anon(limited, slug, "10.1.0.1") as ws:
            assert await expect_close(ws) == 4008
        for _ in range(2):
            ws = await stack.enter_async_context(anon(limited, slug, "10.1.0.2"))
            await ok(ws, PkgID.STATUS_PAGE_VIEW, {})
        async with anon(limited, slug, "10.1.0.3") as ws:  # a new address, but the page is full
            with pytest.raises(Exception) as closed:
                await ok(ws, PkgID.STATUS_PAGE_VIEW, {})
            assert getattr(getattr(closed.value, "rcvd", None), "code", None) == 4008
            assert "this page" in closed.value.rcvd.reason  # type: ignore[attr-defined]
        # Members are not counted against the page: the owner still connects.
        async with ws_connect(limited, t.token, tenant=t.slug) as ws:
            await ok(ws, PkgID.STATUS_PAGE_VIEW, {"id": t.page["id"]})
    # Closed sockets free their slots.
    async with anon(limited, slug, "10.1.0.3") as ws:
        await ok(ws, PkgID.STATUS_PAGE_VIEW, {})


async def test_a_few_hundred_viewers_receive_a_state_change(server: ServerProcess) -> None:
    """300 anonymous sockets on one page all get the state change (the shared server raises
    the per-address limit: every socket comes from loopback)."""
    t = await make_tenant(server)
    topic = f"status_page.{t.page['id']}"
    n = 300
    async with contextlib.AsyncExitStack() as stack:
        sockets = []
        for _ in range(n):
            sockets.append(await stack.enter_async_context(anon(server, t.page["slug"])))
        await asyncio.gather(*(ok(ws, PkgID.SUBSCRIBE, {"topics": [topic]}) for ws in sockets))
        async with ws_connect(server, t.token, tenant=t.slug) as editor:
            await ok(editor, PkgID.MONITOR_PAUSE, {"id": t.on["id"]})
        events = await asyncio.gather(*(next_event(ws, topic, timeout=30) for ws in sockets))
    assert all(e["data"]["id"] == t.on["id"] and e["data"]["state"] == "paused" for e in events)


async def test_a_page_of_500_monitors_renders_in_under_a_second(server: ServerProcess) -> None:
    """Built in under a second by the server's own clock (``build_ms``); the HTTP round trip
    gets a generous bound on this shared machine."""
    t = await make_tenant(server)
    ids = await add_monitors(server.database_url, t.slug, 500)
    sections = [{"title": f"Region {i // 50 + 1}", "monitors": ids[i : i + 50]} for i in range(0, 500, 50)]
    async with ws_connect(server, t.token, tenant=t.slug) as ws:
        page = await ok(
            ws,
            PkgID.STATUS_PAGE_CREATE,
            {"slug": unique("big"), "title": "Big", "public": True, "sections": sections},
        )
        view = await ok(ws, PkgID.STATUS_PAGE_VIEW, {"id": page["id"]})
    assert sum(len(s["monitors"]) for s in view["sections"]) == 500
    assert view["build_ms"] < 1000, view["build_ms"]
    started = time.perf_counter()
    status, _, body = await asyncio.to_thread(http_get, server, f"/status/{page['slug']}")
    elapsed = time.perf_counter() - started
    assert status == 200 and body.count(b'data-testid="sp-monitor"') == 500
    assert elapsed < 3.0, f"GET /status of 500 monitors took {elapsed:.2f} s"


async def test_anonymous_viewers_are_closed_when_the_page_goes_private_or_away(server: ServerProcess) -> None:
    t = await make_tenant(server)
    topic = f"status_page.{t.page['id']}"
    async with (
        anon(server, t.page["slug"]) as viewer,
        ws_connect(server, t.token, tenant=t.slug) as editor,
        ws_connect(server, t.token, tenant=t.slug) as member,
    ):
        await ok(viewer, PkgID.SUBSCRIBE, {"topics": [topic]})
        await ok(member, PkgID.SUBSCRIBE, {"topics": [topic]})
        await ok(editor, PkgID.STATUS_PAGE_UPDATE, {"id": t.page["id"], "version": 1, "public": False})
        assert await expect_close(viewer) == 4001
        # Members keep reading it; the event told them it is closed to the public.
        event = await next_event(member, topic)
        assert event["data"]["action"] == "page_closed" and event["data"]["page_id"] == t.page["id"]
        await ok(editor, PkgID.MONITOR_PAUSE, {"id": t.on["id"]})
        assert (await next_event(member, topic))["data"]["state"] == "paused"
    async with anon(server, t.page["slug"]) as again:
        assert await expect_close(again) == 4001

"""Public status pages in Chromium (Debian's, driven by Playwright) against a real server with
its collector on and a real loopback target: PostgreSQL + Redis.

One server for the module. The page shows sections, states, a post and an active
maintenance; goes down live; stays inert under XSS attempts in every user-written field;
works as a static snapshot with JavaScript off; a members-only page is 404; from the page's
own origin the anonymous socket is refused every other package and topic; badges parse as
SVG and say "unknown" for unknown names. Screenshots go to test-artifacts/; with
UPDATE_DOC_SCREENSHOTS=1 they also replace those in docs/images/ (docs/status-pages.md).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from app.protocol import PkgID
from app.rbac import PAGE_VIEWER_PACKAGES
from tests import services
from tests.fixtures import unique
from tests.server import ROOT, ServerProcess, ok, ws_connect
from tests.targets import HttpTarget
from tests.test_dashboard_browser import COLLECTING, LAUNCH_ARGS, WAIT_MS, chromium_path, log_in

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

IMAGES = ROOT / "docs" / "images"
ARTIFACTS = ROOT / "test-artifacts" / "status-pages"
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=chromium_path(), args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def browser(chromium: Browser) -> AsyncIterator[BrowserContext]:
    context = await chromium.new_context(viewport={"width": 1000, "height": 900})
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture(scope="module")
def target() -> Iterator[HttpTarget]:
    with HttpTarget() as t:
        yield t


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    server = ServerProcess(
        services.create_pg_database(),
        env={
            **COLLECTING,
            "REDIS_URL": services.redis_test_url(),
            "REDIS_PREFIX": f"wptest:{uuid.uuid4().hex[:10]}:",
            "RATE_LIMIT_ENABLED": "false",
        },
    ).start()
    yield server
    server.stop()


def monitor(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "kind": "http", "url": url, "interval": 1, "timeout": 0.8}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(srv: ServerProcess, target: HttpTarget) -> dict[str, Any]:
    """A public page (two sections, a post with XSS attempts, a maintenance window) and a
    members-only one."""
    token = await asyncio.to_thread(srv.login)
    now = datetime.now(UTC)
    async with ws_connect(srv, token) as ws:
        api = await ok(ws, PkgID.MONITOR_CREATE, monitor("Checkout API", target.url("/api")))
        web = await ok(ws, PkgID.MONITOR_CREATE, monitor("Website", target.url("/web")))
        db = await ok(ws, PkgID.MONITOR_CREATE, monitor("Database", target.url("/db")))
        await ok(
            ws,
            PkgID.MAINTENANCE_CREATE,
            {
                "name": "Database upgrade",
                "description": "Read-only for a few minutes.",
                "starts_at": (now - timedelta(minutes=1)).isoformat(),
                "ends_at": (now + timedelta(hours=1)).isoformat(),
                "monitors": [db["id"]],
            },
        )
        page = await ok(
            ws,
            PkgID.STATUS_PAGE_CREATE,
            {
                "slug": unique("acme"),
                "title": "Acme status " + XSS,
                "description": "Live state of Acme's public services. " + XSS,
                "footer": "Questions? support@acme.example " + XSS,
                "public": True,
                "show_latency": True,
                "sections": [
                    {"title": "Core services", "monitors": [api["id"], db["id"]]},
                    {"title": "Website " + XSS, "monitors": [web["id"]]},
                ],
            },
        )
        post = await ok(
            ws,
            PkgID.STATUS_POST_CREATE,
            {
                "page_id": page["id"],
                "title": "Slower checkouts " + XSS,
                "body": "We see **slower** checkouts in EU.\n\n"
                + XSS
                + "\n\n[status of our provider](https://status.example.com) [x](javascript:window.__xss=3)",
                "format": "markdown",
                "severity": "minor",
            },
        )
        private = await ok(
            ws,
            PkgID.STATUS_PAGE_CREATE,
            {
                "slug": unique("inside"),
                "title": "Internal",
                "sections": [{"title": "All", "monitors": [web["id"]]}],
            },
        )
    return {"api": api, "web": web, "db": db, "page": page, "post": post, "private": private, "token": token}


async def open_status(browser: BrowserContext, srv: ServerProcess, slug: str) -> tuple[Page, list[str]]:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(f"{srv.http_url}/status/{slug}")
    return page, errors


def monitor_row(page: Page, monitor_id: int) -> Any:
    return page.locator(f'[data-testid="sp-monitor"][data-monitor-id="{monitor_id}"]')


async def shot(page: Page, name: str) -> None:
    """A screenshot in test-artifacts/; the documentation's copy only when asked for, so a
    test run never rewrites tracked files."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    if os.environ.get("UPDATE_DOC_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / name, IMAGES / name)


async def test_public_page_live_down_post_maintenance_and_inert_xss(
    browser: BrowserContext, srv: ServerProcess, target: HttpTarget, site: dict[str, Any]
) -> None:
    page, errors = await open_status(browser, srv, site["page"]["slug"])
    await expect(page.get_by_test_id("sp-section")).to_have_count(2)
    await expect(page.get_by_test_id("sp-live")).to_have_text("live", timeout=WAIT_MS)
    await expect(monitor_row(page, site["api"]["id"])).to_have_attribute("data-state", "up", timeout=WAIT_MS)
    await expect(monitor_row(page, site["web"]["id"])).to_have_attribute("data-state", "up", timeout=WAIT_MS)
    await expect(monitor_row(page, site["db"]["id"])).to_have_attribute(
        "data-state", "maintenance", timeout=WAIT_MS
    )
    maint = page.get_by_test_id("sp-maint")
    await expect(maint).to_have_count(1, timeout=WAIT_MS)
    await expect(maint).to_contain_text("Database upgrade")
    await expect(maint).to_contain_text("Database")
    post = page.get_by_test_id("sp-post")
    await expect(post).to_contain_text("Slower checkouts")
    await expect(post.locator("strong")).to_have_text("slower")
    await expect(post.locator('a[href="https://status.example.com"]')).to_have_count(1)
    # Every XSS attempt is shown as text, nothing ran, no element was injected.
    await expect(page.get_by_test_id("sp-title")).to_contain_text("<script>window.__xss=2</script>")
    await expect(page.get_by_test_id("sp-description")).to_contain_text(
        '<img src=x onerror="window.__xss=1">'
    )
    await expect(page.get_by_test_id("sp-footer")).to_contain_text("<script>")
    assert await page.evaluate("window.__xss") is None
    assert await page.locator("#status-page img, #status-page script, a[href^='javascript']").count() == 0
    await page.evaluate("window.__sameDocument = 'yes'")
    await shot(page, "status-page.png")

    # The target fails: the row turns down live (no reload), the headline follows.
    target.respond("/api", status=503, body="down")
    await expect(monitor_row(page, site["api"]["id"])).to_have_attribute(
        "data-state", "down", timeout=WAIT_MS
    )
    await expect(page.get_by_test_id("sp-overall")).to_have_attribute("data-state", "down")
    assert await page.evaluate("window.__sameDocument") == "yes"
    assert await page.evaluate("window.__xss") is None
    await shot(page, "status-page-down.png")

    # A new post arrives live, rendered the same safe way.
    async with ws_connect(srv, site["token"]) as ws:
        await ok(
            ws, PkgID.STATUS_POST_CREATE, {"page_id": site["page"]["id"], "title": "Investigating " + XSS}
        )
    await expect(page.get_by_test_id("sp-post")).to_have_count(2, timeout=WAIT_MS)
    await expect(page.get_by_test_id("sp-post").first).to_contain_text("Investigating <img")
    assert await page.evaluate("window.__xss") is None
    target.respond("/api", status=200)
    await expect(monitor_row(page, site["api"]["id"])).to_have_attribute("data-state", "up", timeout=WAIT_MS)
    assert await page.evaluate("window.__sameDocument") == "yes"
    assert errors == []


async def test_snapshot_without_javascript(
    chromium: Browser, srv: ServerProcess, site: dict[str, Any]
) -> None:
    context = await chromium.new_context(java_script_enabled=False, viewport={"width": 1000, "height": 900})
    try:
        page = await context.new_page()
        # The previous test posted a second notice; a page is served from a view cached
        # for up to 2 s (docs/status-pages.md), so reload until the snapshot has caught up.
        url = f"{srv.http_url}/status/{site['page']['slug']}"
        for _ in range(20):
            await page.goto(url)
            if await page.get_by_test_id("sp-post").count() == 2:
                break
            await asyncio.sleep(0.5)
        await expect(page.get_by_test_id("sp-section")).to_have_count(2)
        await expect(page.get_by_test_id("sp-monitor")).to_have_count(3)
        await expect(page.get_by_test_id("sp-post")).to_have_count(2)
        await expect(page.get_by_test_id("sp-live")).to_have_text("snapshot")
        await shot(page, "status-page-no-js.png")
    finally:
        await context.close()


async def test_members_only_page_is_404(
    browser: BrowserContext, srv: ServerProcess, site: dict[str, Any]
) -> None:
    page = await browser.new_page()
    private = await page.goto(f"{srv.http_url}/status/{site['private']['slug']}")
    private_text = await page.content()
    missing = await page.goto(f"{srv.http_url}/status/{unique('nope')}")
    assert private is not None and missing is not None
    assert private.status == missing.status == 404
    assert "Internal" not in private_text and private_text == await page.content()


# Run in the status page's own document: what a visitor's browser could try with the page's socket.
PROBE = """async ([slug, topic, others, topics]) => {
  const ws = new WebSocket(`ws://${location.host}/web?status_page=${slug}`, ['watchpost.v1']);
  await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = bad; });
  const waiting = new Map();
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.req_id && waiting.has(m.req_id)) { waiting.get(m.req_id)(m.status_code); waiting.delete(m.req_id); }
  };
  const call = (pkg_id, data) => new Promise((ok) => {
    const req_id = crypto.randomUUID();
    waiting.set(req_id, ok);
    ws.send(JSON.stringify({ pkg_id, req_id, data }));
  });
  const packages = {};
  for (const p of others) packages[p] = await call(p, { id: 1 });
  const refused = {};
  for (const t of topics) refused[t] = await call(4, { topics: [t] });
  const own = await call(4, { topics: [topic] });
  const view = await call(605, {});
  ws.close();
  return { packages, refused, own, view };
}"""

BADGE = """async (path) => {
  const r = await fetch(path);
  const doc = new DOMParser().parseFromString(await r.text(), 'image/svg+xml');
  const svg = doc.documentElement;
  return { status: r.status, type: r.headers.get('content-type'), cache: r.headers.get('cache-control'),
           root: svg.nodeName, title: doc.querySelector('title')?.textContent,
           label: svg.getAttribute('aria-label'),
           parseError: doc.getElementsByTagName('parsererror').length };
}"""


async def test_anonymous_socket_and_badges_from_the_page(
    browser: BrowserContext, srv: ServerProcess, site: dict[str, Any]
) -> None:
    page, errors = await open_status(browser, srv, site["page"]["slug"])
    topic = f"status_page.{site['page']['id']}"
    others = [int(p) for p in PkgID if p < 900 and int(p) not in PAGE_VIEWER_PACKAGES]
    topics = [
        "monitors",
        f"monitor.{site['api']['id']}",
        "incidents",
        "maintenance",
        f"status_page.{site['private']['id']}",
    ]
    out = await page.evaluate(PROBE, [site["page"]["slug"], topic, others, topics])
    assert out["packages"] == {str(p): 3 for p in others}
    assert out["refused"] == dict.fromkeys(topics, 3)
    assert out["own"] == 0 and out["view"] == 0

    slug = site["page"]["slug"]
    badge = await page.evaluate(BADGE, f"/badge/{slug}/Website/status.svg")
    assert badge["status"] == 200 and badge["type"].startswith("image/svg+xml") and badge["parseError"] == 0
    assert badge["root"] == "svg" and badge["title"] == badge["label"] == "status: up"
    assert "max-age=60" in badge["cache"]
    uptime = await page.evaluate(BADGE, f"/badge/{slug}/Website/uptime.svg?window=24h")
    assert uptime["title"].startswith("uptime 24h: ") and uptime["title"].endswith("%")
    latency = await page.evaluate(BADGE, f"/badge/{slug}/Website/latency.svg")
    assert latency["title"].startswith("latency: ") and latency["title"].endswith(" ms")
    for path in (
        f"/badge/{slug}/No%20such%20monitor/status.svg",
        f"/badge/{unique('nope')}/Website/status.svg",
        f"/badge/{site['private']['slug']}/Website/status.svg",
    ):
        unknown = await page.evaluate(BADGE, path)
        assert unknown["status"] == 200 and unknown["title"] == "status: unknown", path
    assert errors == []


async def test_dashboard_creates_reorders_previews_and_copies_badges(
    browser: BrowserContext, srv: ServerProcess, site: dict[str, Any]
) -> None:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(srv.http_url + "/")
    await log_in(page, "admin", "admin-test-password")
    await expect(page.get_by_test_id("page-item")).to_have_count(2, timeout=WAIT_MS)  # the fixture's pages

    slug = unique("shop")
    await page.get_by_test_id("page-new").click()
    form = page.get_by_test_id("page-form")
    await form.get_by_test_id("page-slug").fill(slug)
    await form.get_by_test_id("page-title").fill("Shop status")
    await form.get_by_test_id("page-public").check()
    await form.get_by_test_id("section-title").fill("Checkout")
    await form.get_by_test_id("section-add-monitor").select_option(label="Checkout API")
    await form.get_by_test_id("section-new").click()
    await form.get_by_test_id("section-title").nth(1).fill("Storefront")
    await form.get_by_test_id("section-add-monitor").nth(1).select_option(label="Website")
    await expect(form.get_by_test_id("section-monitor")).to_have_count(2)
    await form.get_by_test_id("section-up").nth(1).click()  # Storefront first
    await expect(form.get_by_test_id("section-title").first).to_have_value("Storefront")
    await form.get_by_test_id("page-save").click()
    await expect(page.get_by_test_id("page-item")).to_have_count(3, timeout=WAIT_MS)
    await shot(page, "status-page-editor.png")

    # Copy badge Markdown: one badge per monitor, in page order, linking to the page.
    await page.get_by_test_id("page-copy-badges").click()
    markdown = await page.get_by_test_id("page-badges").input_value()
    lines = markdown.splitlines()
    home, badges = f"{srv.http_url}/status/{slug}", f"{srv.http_url}/badge/{slug}"
    assert lines == [
        f"[![Website status]({badges}/Website/status.svg)]({home})",
        f"[![Checkout API status]({badges}/Checkout%20API/status.svg)]({home})",
    ]
    await page.keyboard.press("Escape")

    # Preview through the socket; the public page has the sections in the saved order.
    item = page.locator('[data-testid="page-item"]:has-text("Shop status")')
    await item.get_by_test_id("page-preview").click()
    sections = page.get_by_test_id("preview-section")
    await expect(sections).to_have_count(2, timeout=WAIT_MS)
    await expect(sections.first).to_contain_text("Storefront")
    await expect(sections.first).to_contain_text("Website")
    public = await browser.new_page()
    await public.goto(f"{srv.http_url}/status/{slug}")
    await expect(public.get_by_test_id("sp-section").first).to_contain_text("Storefront")
    await expect(public.get_by_test_id("sp-section").nth(1)).to_contain_text("Checkout API")
    # The badge the Markdown points at renders.
    badge = await public.evaluate(BADGE, f"/badge/{slug}/Checkout%20API/status.svg")
    assert badge["title"].startswith("status: ") and badge["title"] != "status: unknown"
    assert errors == []

"""The dashboard in a real browser: Debian's chromium driven by Playwright against real
servers with their collectors on and real loopback targets: PostgreSQL + Redis (two
instances) and the embedded SQLite profile.

Chromium comes from the distribution (``make browser`` / ``tests/install-browser.sh``);
Playwright never downloads one. Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright, expect

from app.protocol import PkgID
from tests import services
from tests.bulk_monitors import add_monitors, expected_counts
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.kind_targets import DnsTarget
from tests.server import ROOT, ServerProcess, ok, sqlite_url, ws_connect
from tests.targets import HttpTarget

# One event loop for the module, so one browser serves every test (each gets a fresh context).
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ARTIFACTS = ROOT / "test-artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Generous: two cores shared with other suites; every wait polls a condition.
WAIT_MS = 25_000
COLLECTING = {
    "COLLECTOR_ENABLED": "true",
    "MONITOR_MIN_INTERVAL": "1",
    "COLLECTOR_TICK": "0.2",
    "COLLECTOR_JITTER": "0.2",
    "WS_MESSAGE_RATE_LIMIT": "100000",
}


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail(
            "chromium is not installed: run `make browser` (tests/install-browser.sh installs Debian's "
            "chromium package), or set CHROMIUM=/path/to/chromium"
        )
    return path


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
    """A fresh browser context per test: its own storage, cookies and pages."""
    context = await chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture(scope="module")
def shared() -> Iterator[ServerProcess]:
    """One server for the tests that need no server of their own: PostgreSQL, Redis broker,
    collector on, and access tokens that live 5 s, so that EVENT_AUTH_EXPIRING (904) and the
    in-band refresh happen every few seconds under every test that uses it."""
    srv = ServerProcess(
        services.create_pg_database(),
        env={
            **COLLECTING,
            "REDIS_URL": services.redis_test_url(),
            "REDIS_PREFIX": f"wptest:{uuid.uuid4().hex[:10]}:",
            # Every page refreshes its token every couple of seconds here; HTTP rate limits are
            # not what these tests are about.
            "RATE_LIMIT_ENABLED": "false",
            "ACCESS_TOKEN_TTL": "5",
            "AUTH_EXPIRING_NOTICE": "3",
        },
    ).start()
    yield srv
    srv.stop()


async def start(srv: ServerProcess) -> ServerProcess:
    return await asyncio.to_thread(srv.start)


async def stop(srv: ServerProcess) -> None:
    await asyncio.to_thread(srv.stop)


# Console errors the browser itself logs while a server is down: expected in restart tests.
_NETWORK_NOISE = ("WebSocket connection to", "Failed to load resource", "net::ERR_")


def _unexpected(msg: ConsoleMessage) -> bool:
    """A console error from the dashboard's own code (e.g. a failed repaint)."""
    return msg.type == "error" and not any(noise in msg.text for noise in _NETWORK_NOISE)


async def open_page(
    browser: BrowserContext, srv: ServerProcess, *, fake_clock: bool = False
) -> tuple[Page, list[str]]:
    """A fresh page on the dashboard; returns it with a list collecting uncaught page errors.
    ``fake_clock`` installs Playwright's controllable clock (it keeps running at real speed)."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if _unexpected(msg) else None)
    if fake_clock:
        await page.clock.install()
    await page.goto(srv.http_url + "/")
    return page, errors


async def log_in(page: Page, username: str, password: str) -> None:
    await page.get_by_test_id("login-username").fill(username)
    await page.get_by_test_id("login-password").fill(password)
    await page.get_by_test_id("login-submit").click()
    await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "open", timeout=WAIT_MS)


def row(page: Page, monitor_id: int) -> Any:
    return page.locator(f'[data-testid="monitor-row"][data-monitor-id="{monitor_id}"]')


def incident(page: Page, monitor_id: int) -> Any:
    return page.locator(f'[data-testid="incident-row"][data-monitor-id="{monitor_id}"]')


async def wait_reconnected(page: Page) -> None:
    """Wait until the dashboard has reconnected by itself. Rather than sit out a backoff delay
    of up to 20 s, jump the page's fake clock past it: the client's own timer fires at once."""
    conn = page.get_by_test_id("conn-state")
    for _ in range(60):
        state = await conn.get_attribute("data-state")
        if state == "open":
            return
        if state == "reconnecting":  # only then: a jump while connecting would expire its requests
            await page.clock.fast_forward(21_000)
        await asyncio.sleep(0.5)
    raise AssertionError("the dashboard did not reconnect")


async def summary_loads(page: Page) -> int:
    value = await page.get_by_test_id("monitor-list").get_attribute("data-summary-loads")
    return int(value or 0)


async def mark_document(page: Page) -> None:
    """Tag the live document; the tag survives only if the page is never reloaded."""
    await page.evaluate("window.__sameDocument = 'yes'")


async def same_document(page: Page) -> bool:
    return bool(await page.evaluate("window.__sameDocument === 'yes'"))


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    return path


def http_monitor(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "kind": "http", "url": url, "interval": 1, "timeout": 0.8}


# ---------------------------------------------------------------------------------------------
# The JS client module's own logic, run in the browser against a scripted socket.

CLIENT_SCENARIOS = (Path(__file__).parent / "dashboard_client_scenarios.js").read_text()


async def test_js_client_logic_in_the_browser(browser: BrowserContext, shared: ServerProcess) -> None:
    page, errors = await open_page(browser, shared)
    out = await page.evaluate(CLIENT_SCENARIOS)
    assert out["url"].startswith(f"ws://127.0.0.1:{shared.port}/web") and out["url"].endswith("?tenant=acme")
    assert out["protocols"] == ["watchpost.v1", "bearer.tok1"]
    assert out["echo"] == {"echo": {"page": 2}}
    assert out["timeout"] == {"kind": "timeout", "status": None}
    assert out["conflict"] == {"kind": "conflict", "status": 5, "msg": "stale version", "errors": 1}
    assert out["live"] == [6, 7], "live events are delivered once each, duplicates dropped"
    assert out["since"] == {"monitors": 7}, "resubscribe carries the last seq seen"
    assert out["afterReplay"] == [6, 7, 8, 9], "exactly the missed events are replayed, in order"
    assert out["resets"] == ["not recovered"]
    assert out["positions"] == {"monitors": 10}
    assert out["gapResets"] == ["not recovered", "gap"]
    assert out["authRefresh"] == ["tok2"]
    assert out["afterAuthClose"] == {"state": "open", "protocols": ["watchpost.v1", "bearer.tok3"]}
    assert out["finalState"] == "unauthenticated"
    assert out["callWhenUnauthenticated"] == "closed"
    assert "reconnecting:1001" in out["states"] and out["states"][-1] == "unauthenticated:4010"
    assert out["refused"] == {"resets": ["refused"], "state": "open", "sameSocket": True}
    assert out["silent"] == {"state": "open", "newSocket": True, "resubscribed": True}
    assert out["afterReconnect"] == {"positions": {"maintenance": 0}, "refusedAgain": 2}
    assert out["roleChange"] == {"notices": [["viewer"]], "positions": {}}
    assert out["backoffMax"] == [499, 999, 1999, 3999, 7999, 15999, 19999, 19999]
    assert out["backoffMin"] == 0
    assert errors == []


# ---------------------------------------------------------------------------------------------
# The dashboard end to end.


async def test_dashboard_live_down_incident_ack_and_restart(
    browser: BrowserContext, target: HttpTarget
) -> None:
    """Its own server in the embedded profile (SQLite, in-process broker), whose event history
    dies with the process: after the restart the dashboard learns it cannot replay
    (recovered: false) and reloads its summary."""
    srv = await start(ServerProcess(sqlite_url(), env=COLLECTING))
    try:
        token = await asyncio.to_thread(srv.login)
        async with ws_connect(srv, token) as ws:
            api = await ok(ws, PkgID.MONITOR_CREATE, http_monitor("checkout-api", target.url("/health")))
            site = await ok(ws, PkgID.MONITOR_CREATE, http_monitor("marketing-site", target.url("/")))
            # The tenant's default escalation policy, shown in the detail view (nothing due in this test).
            pager = await ok(
                ws,
                PkgID.CHANNEL_CREATE,
                {"name": "pager", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/pager"}},
            )
            await ok(
                ws,
                PkgID.ESCALATION_CREATE,
                {"name": "on-call", "steps": [{"after": 60, "channels": [pager["id"]]}], "default": True},
            )

        page, errors = await open_page(browser, srv, fake_clock=True)
        await log_in(page, "admin", "admin-test-password")
        await expect(row(page, api["id"])).to_have_attribute("data-state", "up", timeout=WAIT_MS)
        await expect(row(page, site["id"])).to_have_attribute("data-state", "up", timeout=WAIT_MS)
        await expect(row(page, api["id"]).get_by_test_id("monitor-name")).to_have_text("checkout-api")
        await expect(page.get_by_test_id("monitor-new")).to_be_visible()  # admin owns the tenant
        await mark_document(page)

        # The target fails: the row turns down and an incident appears, live.
        target.respond("/health", status=500, body="boom")
        await expect(row(page, api["id"])).to_have_attribute("data-state", "down", timeout=WAIT_MS)
        await expect(incident(page, api["id"])).to_be_visible(timeout=WAIT_MS)
        await expect(row(page, site["id"])).to_have_attribute("data-state", "up")

        # Acknowledge from the dashboard; the server records who did it.
        await incident(page, api["id"]).get_by_test_id("incident-ack").click()
        await expect(incident(page, api["id"])).to_have_attribute("data-acked", "true", timeout=WAIT_MS)
        incident_id = int(await incident(page, api["id"]).get_attribute("data-incident-id") or 0)
        async with ws_connect(srv, token) as ws:
            got = await ok(ws, PkgID.INCIDENT_GET, {"id": incident_id})
        assert got["acked_by"] and "admin" in got["acked_by"] and got["acked_at"]
        await screenshot(page, "dashboard-down-acked.png")

        # The detail view shows the failing results and the latency chart.
        await row(page, api["id"]).click()
        await expect(page.get_by_test_id("monitor-detail")).to_be_visible()
        await expect(page.get_by_test_id("detail-state")).to_have_attribute("data-state", "down")
        await expect(page.get_by_test_id("latency-chart")).to_be_visible()
        await expect(page.get_by_test_id("monitor-detail")).to_contain_text("on-call (tenant default)")
        await expect(page.locator('[data-testid="history-row"].fail').first).to_be_visible(timeout=WAIT_MS)
        await screenshot(page, "dashboard-detail.png")
        await page.get_by_test_id("detail-close").click()
        assert await same_document(page), "the page was reloaded; updates must arrive live"

        # Restart the server while the target recovers: the dashboard shows it is disconnected,
        # reconnects by itself and catches up (down -> up, incident resolved) without a reload.
        loads_before = await summary_loads(page)
        await stop(srv)
        await expect(page.get_by_test_id("conn-state")).not_to_have_attribute(
            "data-state", "open", timeout=WAIT_MS
        )
        await expect(page.get_by_test_id("offline-banner")).to_be_visible()
        target.respond("/health", status=200)
        await start(srv)
        await wait_reconnected(page)
        await expect(row(page, api["id"])).to_have_attribute("data-state", "up", timeout=WAIT_MS)
        await expect(incident(page, api["id"])).to_have_count(0, timeout=WAIT_MS)
        await expect(page.get_by_test_id("offline-banner")).to_be_hidden()
        assert await summary_loads(page) > loads_before, "history was lost, so the summary must be reloaded"
        assert await same_document(page)
        await screenshot(page, "dashboard-after-restart.png")

        # Signed out elsewhere (this session's refresh token is logged out): the server closes
        # the socket with 4001, the one refresh attempt is refused, and the login form returns.
        refresh = await page.evaluate("JSON.parse(sessionStorage.getItem('watchpost.auth')).refresh_token")
        status, _body = await asyncio.to_thread(srv.post, "/logout", {"refresh_token": refresh})
        assert status == 200
        await expect(page.get_by_test_id("login-form")).to_be_visible(timeout=WAIT_MS)
        await expect(page.get_by_test_id("login-error")).to_contain_text("log in again")
        await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "idle")
        assert await page.evaluate("sessionStorage.getItem('watchpost.auth')") is None
        assert errors == []
    finally:
        await stop(srv)


async def test_dashboard_replays_events_missed_while_its_server_was_down(
    browser: BrowserContext, target: HttpTarget, shared: ServerProcess
) -> None:
    """Two instances share PostgreSQL and Redis. The dashboard's instance goes away; the other
    keeps checking; when the first comes back the dashboard resubscribes with ``since`` and
    replays what it missed from the Redis history instead of reloading the summary."""
    other = ServerProcess(shared.database_url, env=shared.extra_env)
    other._migrated = True  # the shared server migrated this database already
    await start(other)
    try:
        token = await asyncio.to_thread(other.login)
        async with ws_connect(other, token) as ws:
            api = await ok(ws, PkgID.MONITOR_CREATE, http_monitor(unique("payments"), target.url("/health")))

        page, errors = await open_page(browser, shared, fake_clock=True)
        await log_in(page, "admin", "admin-test-password")
        await expect(row(page, api["id"])).to_have_attribute("data-state", "up", timeout=WAIT_MS)
        await mark_document(page)
        loads_before = await summary_loads(page)

        await stop(shared)
        await expect(page.get_by_test_id("conn-state")).not_to_have_attribute(
            "data-state", "open", timeout=WAIT_MS
        )
        target.respond("/health", status=503)
        token = await asyncio.to_thread(other.login)
        async with ws_connect(other, token) as ws:
            for _ in range(200):
                if (await ok(ws, PkgID.MONITOR_GET, {"id": api["id"]}))["state"] == "down":
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the other instance never recorded the monitor as down")
        # Still the stale state: nothing reached the dashboard while it was disconnected.
        await expect(row(page, api["id"])).to_have_attribute("data-state", "up")

        await start(shared)
        await wait_reconnected(page)
        await expect(row(page, api["id"])).to_have_attribute("data-state", "down", timeout=WAIT_MS)
        await expect(incident(page, api["id"])).to_be_visible(timeout=WAIT_MS)
        assert await summary_loads(page) == loads_before, "caught up by replay, not by reloading the summary"
        assert await same_document(page)
        assert errors == []
    finally:
        await stop(other)
        if shared.proc is None or shared.proc.poll() is not None:
            await start(shared)  # other tests share it


async def test_viewer_controls_tenant_switch_editing_and_token_refresh(
    browser: BrowserContext, target: HttpTarget, shared: ServerProcess
) -> None:
    """Access tokens live 5 s on the shared server: the server sends 904 a few seconds in and
    the dashboard refreshes in band, keeping its one connection. A viewer sees no editing
    controls; the tenant switcher reconnects to the other tenant, where the user is an editor
    and creates, edits, pauses, resumes and deletes a monitor through the dashboard, until an
    admin lowers them to viewer and the editing controls go without a reload."""
    lab = unique("lab")
    user = await acreate_user(shared.database_url, {"default": "viewer", lab: "editor"})
    admin = await asyncio.to_thread(shared.login)
    async with ws_connect(shared, admin) as ws:
        seen = await ok(ws, PkgID.MONITOR_CREATE, http_monitor(unique("default-api"), target.url("/a")))
    user_token = await asyncio.to_thread(shared.login, user, PASSWORD)
    async with ws_connect(shared, user_token, tenant=lab) as ws:
        lab_monitor = await ok(ws, PkgID.MONITOR_CREATE, http_monitor("lab-api", target.url("/b")))
        user_id = (await ok(ws, PkgID.WHOAMI))["user_id"]

    page, errors = await open_page(browser, shared)
    await log_in(page, user, PASSWORD)
    await expect(row(page, seen["id"])).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("whoami")).to_contain_text("viewer")
    await expect(page.get_by_test_id("monitor-new")).to_be_hidden()
    await mark_document(page)

    # Outlive the first access token on one connection: each 904 is answered by a refresh.
    read_token = "JSON.parse(sessionStorage.getItem('watchpost.auth')).access_token"
    first = await page.evaluate(read_token)
    await page.evaluate(
        """() => {
          window.__connStates = [];
          const el = document.querySelector('[data-testid="conn-state"]');
          new MutationObserver(() => window.__connStates.push(el.dataset.state))
            .observe(el, { attributes: true, attributeFilter: ["data-state"] });
        }"""
    )
    await asyncio.sleep(6)
    assert await page.evaluate("window.__connStates") == [], "the connection dropped instead of refreshing"
    assert await page.evaluate(read_token) != first
    await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "open")

    # Switch tenant: the other tenant's monitors, and editing controls for the editor role.
    switcher = page.get_by_test_id("tenant-select")
    await expect(switcher).to_be_visible()
    await switcher.select_option(lab)
    await expect(row(page, lab_monitor["id"])).to_be_visible(timeout=WAIT_MS)
    await expect(row(page, seen["id"])).to_have_count(0)
    await expect(page.get_by_test_id("monitor-new")).to_be_visible(timeout=WAIT_MS)

    # As an editor: create a monitor with the form, pause and resume it, then delete it.
    await page.get_by_test_id("monitor-new").click()
    form = page.get_by_test_id("monitor-form")
    await form.get_by_test_id("form-name").fill("lab-web")
    await form.get_by_test_id("form-url").fill(target.url("/web"))
    await form.get_by_test_id("form-interval").fill("1")
    await form.get_by_test_id("form-timeout").fill("0.8")
    await form.get_by_test_id("form-save").click()
    await expect(form).to_be_hidden(timeout=WAIT_MS)
    created = page.locator('[data-testid="monitor-row"]', has_text="lab-web")  # also matches the new name
    await expect(created).to_have_attribute("data-state", "up", timeout=WAIT_MS)
    await created.click()
    await page.get_by_test_id("monitor-edit").click()
    await expect(form.get_by_test_id("form-name")).to_have_value("lab-web")
    await form.get_by_test_id("form-name").fill("lab-website")
    await form.get_by_test_id("form-depends-on").fill(str(lab_monitor["id"]))
    await form.get_by_test_id("form-save").click()
    await expect(form).to_be_hidden(timeout=WAIT_MS)
    await expect(page.get_by_test_id("detail-title")).to_have_text("lab-website", timeout=WAIT_MS)
    depends = page.get_by_test_id("monitor-detail").locator("dt:text-is('Depends on') + dd")
    await expect(depends).to_have_text(lab_monitor["name"], timeout=WAIT_MS)
    await expect(created.get_by_test_id("monitor-name")).to_have_text("lab-website", timeout=WAIT_MS)
    await page.get_by_test_id("monitor-pause").click()
    await expect(created).to_have_attribute("data-state", "paused", timeout=WAIT_MS)
    await page.get_by_test_id("monitor-resume").click()
    await expect(created).not_to_have_attribute("data-state", "paused", timeout=WAIT_MS)
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_test_id("monitor-delete").click()
    await expect(created).to_have_count(0, timeout=WAIT_MS)
    await expect(page.get_by_test_id("monitor-detail")).to_be_hidden()

    # An admin lowers the user to viewer in this tenant: the controls go at once (905), on the
    # same connection.
    await page.evaluate("window.__connStates = []")
    async with ws_connect(shared, await asyncio.to_thread(shared.login), tenant=lab) as ws:  # 5 s tokens
        await ok(ws, PkgID.MEMBER_UPDATE, {"user_id": user_id, "role": "viewer"})
    await expect(page.get_by_test_id("monitor-new")).to_be_hidden(timeout=WAIT_MS)
    await expect(page.get_by_test_id("whoami")).to_contain_text("viewer")
    assert await page.evaluate("window.__connStates") == [], "the role change cost a reconnect"
    assert await same_document(page)

    await page.get_by_test_id("logout").click()
    await expect(page.get_by_test_id("login-form")).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "idle")
    assert errors == []


async def test_five_thousand_monitors_stay_responsive(browser: BrowserContext, shared: ServerProcess) -> None:
    """5,000 monitors: one summary, a virtualised list (a few dozen rows in the DOM), scrolling
    to the end, filtering, and a live change to one of them reaching its row."""
    big = unique("big")
    user = await acreate_user(shared.database_url, {big: "editor"})
    ids = await add_monitors(shared.database_url, big, 5000)

    page, errors = await open_page(browser, shared)
    started = asyncio.get_running_loop().time()
    await log_in(page, user, PASSWORD)
    await expect(page.get_by_test_id("monitor-count")).to_have_text("5000 monitors", timeout=WAIT_MS)
    loaded_in = asyncio.get_running_loop().time() - started
    assert loaded_in < 20, f"5,000 monitors took {loaded_in:.1f} s to show"
    await expect(page.get_by_test_id("count-down")).to_contain_text("250")
    rendered = await page.get_by_test_id("monitor-row").count()
    assert 10 <= rendered <= 80, f"{rendered} rows in the DOM; the list must be virtualised"
    await screenshot(page, "dashboard-5000-monitors.png")

    # Sort by name and scroll to the very end: the last monitor is rendered, the first is not.
    await page.get_by_test_id("monitor-sort").select_option("name")
    viewport = page.get_by_test_id("monitor-list")
    await viewport.evaluate("el => { el.scrollTop = el.scrollHeight; }")
    await expect(row(page, ids[-1])).to_be_visible(timeout=WAIT_MS)
    await expect(row(page, ids[0])).to_have_count(0)

    # Filter down to one monitor, then pause it over another connection: the row follows live.
    await page.get_by_test_id("monitor-filter").fill("node-04321")
    await expect(page.get_by_test_id("monitor-count")).to_have_text("1 of 5000 monitors", timeout=WAIT_MS)
    token = await asyncio.to_thread(shared.login, user, PASSWORD)
    async with ws_connect(shared, token, tenant=big) as ws:
        await ok(ws, PkgID.MONITOR_PAUSE, {"id": ids[4321]})
    await expect(row(page, ids[4321])).to_have_attribute("data-state", "paused", timeout=WAIT_MS)
    assert errors == []


@pytest.mark.parametrize("count", [10_000, 50_000])
async def test_large_tenants_list_quickly(browser: BrowserContext, shared: ServerProcess, count: int) -> None:
    """10,000 and 50,000 monitors: the summary arrives in pages (one answer would overflow the
    1 MiB send queue and cost a 4009 close and a reconnect loop) and the first page is shown
    as soon as it arrives; the count reaches every monitor, one summary load, the socket stays
    open, and filtering still finds one monitor among them all."""
    big = unique("fleet")
    user = await acreate_user(shared.database_url, {big: "viewer"})
    ids = await add_monitors(shared.database_url, big, count)

    page, errors = await open_page(browser, shared)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await log_in(page, user, PASSWORD)
    # Sorted by status, then name: the first down monitor (node-00017) leads.
    await expect(row(page, ids[17])).to_be_visible(timeout=WAIT_MS)
    first_rows_in = loop.time() - started
    shown_first = await page.get_by_test_id("monitor-count").text_content()
    if count >= 50_000:  # 25 pages: the first is on screen long before the last arrives
        assert shown_first != f"{count} monitors", "the list waited for every page before showing any"
    await expect(page.get_by_test_id("monitor-count")).to_have_text(f"{count} monitors", timeout=WAIT_MS)
    counted_in = loop.time() - started
    print(f"{count} monitors: first rows {first_rows_in:.2f} s ({shown_first}), all {counted_in:.2f} s")
    assert first_rows_in < 5, f"the first rows took {first_rows_in:.1f} s"
    await expect(page.get_by_test_id("count-down")).to_contain_text(str(expected_counts(count)["down"]))
    assert await summary_loads(page) == 1, "one summary load, no reconnect and reload"
    assert await page.get_by_test_id("conn-state").get_attribute("data-state") == "open"
    rendered = await page.get_by_test_id("monitor-row").count()
    assert 10 <= rendered <= 80, f"{rendered} rows in the DOM; the list must be virtualised"
    await screenshot(page, f"dashboard-{count}-monitors.png")

    last = f"node-{count - 1:05d}"
    await watch_long_tasks(page)
    await page.get_by_test_id("monitor-filter").fill(last)
    await expect(page.get_by_test_id("monitor-count")).to_have_text(f"1 of {count} monitors", timeout=WAIT_MS)
    await expect(row(page, ids[-1])).to_be_visible()
    # Then back to every monitor, only the down ones (the counter buttons), every one again:
    # each is a walk of the already sorted ids, not a new sort, and only the rows in view are
    # built. Three rounds; the median of each is reported (this machine is shared and noisy).
    down = expected_counts(count)["down"]
    shown = page.get_by_test_id("monitor-count")
    timings: dict[str, list[float]] = {"filter one": [await last_paint_ms(page)]}
    for round_ in range(3):
        if round_:
            await page.get_by_test_id("monitor-filter").fill(last)
            await expect(shown).to_have_text(f"1 of {count} monitors", timeout=WAIT_MS)
            timings["filter one"].append(await last_paint_ms(page))
        await page.get_by_test_id("monitor-filter").fill("")
        await expect(shown).to_have_text(f"{count} monitors", timeout=WAIT_MS)
        timings.setdefault("filter cleared", []).append(await last_paint_ms(page))
        await page.get_by_test_id("count-down").click()
        await expect(shown).to_have_text(f"{down} of {count} monitors", timeout=WAIT_MS)
        timings.setdefault("state down", []).append(await last_paint_ms(page))
        await page.get_by_test_id("count-down").click()
        await expect(shown).to_have_text(f"{count} monitors", timeout=WAIT_MS)
        timings.setdefault("state cleared", []).append(await last_paint_ms(page))
    medians = {name: sorted(values)[len(values) // 2] for name, values in timings.items()}
    frames = await scroll_through(page, steps=40)
    long_tasks = await page.evaluate("() => window.__longTasks")
    print(
        f"{count} monitors: list repaint ms, median of 3 {medians}; scroll step ms p50 {frames['p50']:.0f} "
        f"max {frames['max']:.0f}; long tasks after load {len(long_tasks)}, longest "
        f"{max(long_tasks, default=0):.0f} ms"
    )
    # Generous bounds for a loaded 2-core machine; the figures are in docs/bench/dashboard.md.
    assert max(medians.values()) < 400, timings
    assert frames["max"] < 1000, frames
    assert errors == []


async def test_monitor_form_offers_every_kind_and_tests_before_saving(
    browser: BrowserContext, shared: ServerProcess
) -> None:
    """The form's kinds and their fields, the Test button (CHECK_NOW on the unsaved
    definition, failing reason shown), and a connection string that stays masked on edit."""
    slug = unique("kinds")
    admin = await acreate_user(shared.database_url, {slug: "admin"})
    page, errors = await open_page(browser, shared)
    await log_in(page, admin, PASSWORD)
    form = page.get_by_test_id("monitor-form")
    kind = form.get_by_test_id("form-kind")
    result = form.get_by_test_id("form-test-result")
    with DnsTarget() as dns:
        await page.get_by_test_id("monitor-new").click()
        values = await kind.locator("option").evaluate_all("(os) => os.map((o) => o.value)")
        assert values == ["http", "tcp", "push", "group", "dns", "postgres", "redis", "websocket", "ping"]
        await kind.select_option("dns")
        await expect(form.get_by_test_id("form-url")).to_be_hidden()
        await expect(form.get_by_test_id("form-port")).to_be_hidden()
        await form.get_by_test_id("form-name").fill("api-records")
        await form.get_by_test_id("form-host").fill("api.watchpost.test")
        await form.get_by_test_id("form-resolver").fill("127.0.0.1")
        await form.get_by_test_id("form-resolver-port").fill(str(dns.port))
        await form.get_by_test_id("form-expected").fill("192.0.2.99")
        await form.get_by_test_id("form-test").click()
        await expect(result).to_contain_text(
            "A answer [192.0.2.10, 192.0.2.11] has none of [192.0.2.99]", timeout=WAIT_MS
        )
        await form.get_by_test_id("form-expected").fill("192.0.2.10")
        # A dns monitor takes conditions too; the failing one is named in the result.
        await form.get_by_test_id("form-conditions").fill('$ contains "192.0.2.99"\nresponse_time < 5000')
        await form.get_by_test_id("form-test").click()
        await expect(result).to_contain_text('$: expected contains "192.0.2.99"', timeout=WAIT_MS)
        await form.get_by_test_id("form-conditions").fill('$ contains "192.0.2.10"')
        await form.get_by_test_id("form-test").click()
        await expect(result).to_contain_text("Up in", timeout=WAIT_MS)
        await form.get_by_test_id("form-save").click()
        await expect(form).to_be_hidden(timeout=WAIT_MS)
        created = page.locator('[data-testid="monitor-row"]', has_text="api-records")
        await expect(created).to_have_attribute("data-state", "up", timeout=WAIT_MS)

    dsn = f"postgresql://postgres:form-s3cret@127.0.0.1:5432/{services.PG_ADMIN_URL.rsplit('/', 1)[-1]}"
    await page.get_by_test_id("monitor-new").click()
    await kind.select_option("postgres")
    await expect(form.get_by_test_id("form-host")).to_be_hidden()
    await expect(form.get_by_test_id("form-conditions")).to_be_hidden()
    await form.get_by_test_id("form-name").fill("orders-db")
    await form.get_by_test_id("form-connection-string").fill(dsn)
    await form.get_by_test_id("form-test").click()
    await expect(result).to_contain_text("Up in", timeout=WAIT_MS)
    await form.get_by_test_id("form-save").click()
    await expect(form).to_be_hidden(timeout=WAIT_MS)
    db_row = page.locator('[data-testid="monitor-row"]', has_text="orders-db")
    await db_row.click()
    await page.get_by_test_id("monitor-edit").click()
    await expect(form.get_by_test_id("form-connection-string")).to_have_value("***")
    await form.get_by_test_id("form-name").fill("orders-db-2")
    await form.get_by_test_id("form-save").click()
    await expect(form).to_be_hidden(timeout=WAIT_MS)
    async with ws_connect(shared, await asyncio.to_thread(shared.login, admin, PASSWORD), tenant=slug) as ws:
        [saved] = [
            m for m in await ok(ws, PkgID.MONITOR_LIST, {"kind": "postgres"}) if m["name"] == "orders-db-2"
        ]
        assert saved["options"] == {"connection_string": "***"}
        checked = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": saved["id"]})
        assert checked["result"]["ok"] is True, checked  # the stored string was kept
    assert errors == []


async def watch_long_tasks(page: Page) -> None:
    """Record from now on every main-thread task over 50 ms (Chromium's long tasks)."""
    await page.evaluate(
        """() => { window.__longTasks = [];
        new PerformanceObserver((l) => window.__longTasks.push(...l.getEntries().map((e) => e.duration)))
          .observe({ type: "longtask" }); }"""
    )


async def last_paint_ms(page: Page) -> float:
    """What the last monitor-list repaint cost on the main thread (data-paint-ms)."""
    value = await page.get_by_test_id("monitor-list").get_attribute("data-paint-ms")
    assert value is not None, "the list exposes the cost of its last repaint"
    return float(value)


async def scroll_through(page: Page, steps: int) -> dict[str, Any]:
    """Scroll the list from top to bottom in ``steps`` jumps, two frames each; the time per
    jump and the first row id drawn after each (the window really moved)."""
    result: dict[str, Any] = await page.get_by_test_id("monitor-list").evaluate(
        """async (el, steps) => {
            const times = [], rows = [];
            for (let i = 1; i <= steps; i++) {
                const t0 = performance.now();
                el.scrollTop = (el.scrollHeight * i) / steps;
                await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
                times.push(performance.now() - t0);
                rows.push(el.querySelector("[data-monitor-id]")?.dataset.monitorId ?? "-1");
            }
            const sorted = [...times].sort((a, b) => a - b);
            return { p50: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1], rows };
        }""",
        steps,
    )
    assert len(set(result["rows"])) > steps // 2, "scrolling moved the rendered window"
    return result


async def test_probes_panel_and_a_monitors_locations(
    browser: BrowserContext, shared: ServerProcess, target: HttpTarget
) -> None:
    """The probes panel follows a probe's socket (online, then offline once it closes) and the
    monitor drawer lists each location's state from LOCATION_STATS, live on 908."""
    place = unique("eu").lower()
    async with ws_connect(shared, await asyncio.to_thread(shared.login)) as ws:
        made = await ok(
            ws, PkgID.TOKEN_CREATE, {"name": f"probe {place}", "role": "probe", "location": place}
        )
        mon = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            {**http_monitor(unique("probed"), target.url("/health")), "locations": ["local", place]},
        )
    page, errors = await open_page(browser, shared)
    await log_in(page, "admin", "admin-test-password")
    section = page.get_by_test_id("probes")
    location = page.locator(f'[data-testid="probe-location"][data-location="{place}"]')
    await expect(location).to_have_attribute("data-status", "never", timeout=WAIT_MS)

    async with ws_connect(shared, str(made["token"])) as probe:
        await ok(probe, PkgID.PROBE_HELLO, {"version": "test-1"})
        await expect(location).to_have_attribute("data-status", "online", timeout=WAIT_MS)
        await expect(location.get_by_test_id("probe-row")).to_contain_text("vtest-1")
        await row(page, mon["id"]).click()
        drawer = page.get_by_test_id("monitor-detail")
        local = drawer.locator('[data-testid="location-row"][data-location="local"]')
        remote = drawer.locator(f'[data-testid="location-row"][data-location="{place}"]')
        await expect(local).to_have_attribute("data-state", "up", timeout=WAIT_MS)
        await expect(remote).to_have_attribute("data-state", "unknown")
        # The probe reports a failure: its row turns red while the drawer is open (908).
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        result = {"key": "k1", "monitor_id": mon["id"], "ts": now, "ok": False, "error": "timed out"}
        answer = await ok(probe, PkgID.PROBE_REPORT, {"results": [result]})
        assert answer["accepted"] == 1
        await expect(remote).to_have_attribute("data-state", "down", timeout=WAIT_MS)
        await expect(remote).to_contain_text("timed out")
        await screenshot(page, "dashboard-probes.png")
    await expect(location).to_have_attribute("data-status", "offline", timeout=WAIT_MS)
    await expect(section).to_be_visible()
    assert errors == []

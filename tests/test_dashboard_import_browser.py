"""The dashboard in Chromium follows a fleet import: a large MONITOR_IMPORT sends one
"imported" event and the open dashboard reloads its list; a small one sends per-monitor events."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import BrowserContext, expect

from app.protocol import PkgID
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, ws_connect

# The browser and shared-server fixtures of the main dashboard suite, reused as they are.
from tests.test_dashboard_browser import WAIT_MS, browser, chromium, log_in, open_page, shared  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


async def test_open_dashboard_lists_monitors_an_import_created(
    browser: BrowserContext,  # noqa: F811 - the fixtures imported above
    shared: ServerProcess,  # noqa: F811
) -> None:
    slug = unique("fleet")
    user = await acreate_user(shared.database_url, {slug: "editor"})
    page, errors = await open_page(browser, shared)
    await log_in(page, user, PASSWORD)
    await expect(page.get_by_test_id("monitor-count")).to_have_text("0 monitors", timeout=WAIT_MS)

    token = await asyncio.to_thread(shared.login, user, PASSWORD)
    async with ws_connect(shared, token, tenant=slug) as ws:
        rows = [{"name": f"push-{i:03}", "kind": "push", "interval": 600} for i in range(250)]
        resp = await call(ws, PkgID.MONITOR_IMPORT, {"monitors": rows})
        assert resp["status_code"] == 0, resp
        await expect(page.get_by_test_id("monitor-count")).to_have_text("250 monitors", timeout=WAIT_MS)

        more = rows + [{"name": f"extra-{i}", "kind": "push", "interval": 600} for i in range(3)]
        resp = await call(ws, PkgID.MONITOR_IMPORT, {"monitors": more})
        assert resp["status_code"] == 0 and resp["data"]["counts"]["create"] == 3, resp
        await expect(page.get_by_test_id("monitor-count")).to_have_text("253 monitors", timeout=WAIT_MS)
    assert errors == []

"""STATUS_SUMMARY for tenants with tens of thousands of monitors, over a real socket on
PostgreSQL: the answer arrives in pages that each fit the send queue, following
``meta.next_cursor`` covers every monitor exactly once, and the first page carries the
whole tenant's counts (later pages only their rows)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from app.protocol import PkgID
from tests import services
from tests.bulk_monitors import add_monitors, expected_counts
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, ws_connect


@pytest.fixture(scope="module")
def pg_server() -> Iterator[ServerProcess]:
    srv = ServerProcess(services.create_pg_database(), env={"WS_MESSAGE_RATE_LIMIT": "100000"}).start()
    yield srv
    srv.stop()


async def read_summary(
    ws: ClientConnection, **data: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page of STATUS_SUMMARY, following the cursor: (all rows, every answer)."""
    rows: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        resp = await call(
            ws, PkgID.STATUS_SUMMARY, {**data, **({"cursor": cursor} if cursor else {})}, timeout=30
        )
        assert resp["status_code"] == 0, resp
        answers.append(resp)
        rows.extend(resp["data"]["monitors"])
        if not resp["meta"]["has_more"]:
            assert resp["meta"]["next_cursor"] is None
            return rows, answers
        cursor = resp["meta"]["next_cursor"]
    raise AssertionError("the summary never ended")


@pytest.mark.parametrize("count", [10_000, 50_000])
async def test_summary_covers_every_monitor_once(pg_server: ServerProcess, count: int) -> None:
    slug = unique("fleet")
    viewer = await acreate_user(pg_server.database_url, {slug: "viewer"})
    ids = await add_monitors(pg_server.database_url, slug, count)
    async with ws_connect(pg_server, pg_server.login(viewer, PASSWORD), tenant=slug) as ws:
        started = time.perf_counter()
        rows, answers = await read_summary(ws)
        took = time.perf_counter() - started
    assert [r["id"] for r in rows] == ids, "every monitor exactly once, in id order"
    want = {**dict.fromkeys(("up", "down", "paused", "pending"), 0), **expected_counts(count)}
    first = answers[0]["data"]
    assert {k: v for k, v in first["counts"].items() if v or k in want} == want
    assert first["total"] == count
    for resp in answers[1:]:  # the tenant is counted once, on the first page
        assert "counts" not in resp["data"] and "total" not in resp["data"], resp["meta"]
    assert len(answers) == count // 2000
    biggest = max(len(json.dumps(a, separators=(",", ":"))) for a in answers)
    assert biggest < 768 * 1024, f"a page of {biggest} bytes leaves little room in the 1 MiB send queue"
    assert took < 20, f"{count} monitors took {took:.1f} s"

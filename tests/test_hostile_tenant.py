"""Tenants are isolated in cost: tenant B points 200 HTTP monitors (every collector slot)
at a tarpit with the largest allowed timeout, and tenant A's 10 s monitor keeps being
checked on time. Real server with its collector, real PostgreSQL, real loopback targets."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import datetime

import pytest

from app.protocol import PkgID
from tests import services
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.hostile_targets import Tarpit
from tests.server import ServerProcess, call_many, ok, ws_connect
from tests.targets import HttpTarget

CONCURRENCY = 200
TIMEOUT_MAX = 60
A_INTERVAL = 10
#: A's checks may drift by the collector tick (1 s) and a claim; anything near a whole
#: interval late means A waited for a slot.
MARGIN = 2.5


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    server = ServerProcess(
        services.create_pg_database(),
        env={
            "COLLECTOR_ENABLED": "true",
            "COLLECTOR_CONCURRENCY": str(CONCURRENCY),
            "COLLECTOR_JITTER": "1",
            "CHECK_TIMEOUT_MAX": str(TIMEOUT_MAX),
            "WS_MESSAGE_RATE_LIMIT": "100000",
            "RATE_LIMIT_PER_MINUTE": "100000",
            "RATE_LIMIT_BURST": "10000",
        },
    ).start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_tenant_with_hanging_targets_cannot_starve_another(srv: ServerProcess) -> None:
    a, b = unique("victim"), unique("hostile")
    editor_a = await acreate_user(srv.database_url, {a: "editor"})
    editor_b = await acreate_user(srv.database_url, {b: "editor"})
    with Tarpit() as tarpit, HttpTarget() as healthy:
        async with ws_connect(srv, srv.login(editor_b, PASSWORD)) as ws_b:
            monitors = [
                {
                    "name": f"tarpit-{i}",
                    "kind": "http",
                    "url": tarpit.url(f"/{i}"),
                    "interval": 2 * TIMEOUT_MAX,
                    "timeout": TIMEOUT_MAX,  # the largest allowed
                }
                for i in range(CONCURRENCY)
            ]
            for start in range(0, len(monitors), 50):
                batch = monitors[start : start + 50]
                replies = await call_many(ws_b, [(PkgID.MONITOR_CREATE, m) for m in batch], timeout=30)
                assert all(r["status_code"] == 0 for r in replies), replies[0]
        # B's checks now hang in the collector's slots.
        deadline = asyncio.get_running_loop().time() + 15
        while tarpit.accepted < CONCURRENCY // 3:
            assert asyncio.get_running_loop().time() < deadline, f"only {tarpit.accepted} tarpit connections"
            await asyncio.sleep(0.2)

        async with ws_connect(srv, srv.login(editor_a, PASSWORD)) as ws_a:
            victim = await ok(
                ws_a,
                PkgID.MONITOR_CREATE,
                {"name": "api", "kind": "http", "url": healthy.url("/health"), "interval": A_INTERVAL},
            )
            await asyncio.sleep(3 * A_INTERVAL + 4)  # the first check (jitter 1 s) and three more
            history = await ok(ws_a, PkgID.CHECK_HISTORY, {"monitor_id": victim["id"]})
    assert tarpit.accepted >= CONCURRENCY // 3, "the tarpit must really be holding checks"
    times = sorted(datetime.fromisoformat(r["ts"]).timestamp() for r in history)
    assert len(times) >= 4, f"A was checked {len(times)} times in {3 * A_INTERVAL + 4} s"
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) <= A_INTERVAL + MARGIN, gaps
    assert all(r["ok"] for r in history), history

"""The probe program end to end: ``python -m app.probe`` as a subprocess against a real server
(PostgreSQL + Redis) through a TCP proxy the test cuts, checking a real HTTP target on loopback.

What is proved: results reach the server's location history; an assignment made while the
probe is connected reaches it; a probe killed with SIGKILL while the server is unreachable
and restarted with the same state directory goes on checking its saved assignments, and
once the server is back it replays every result it buffered, each stored once, none lost.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from app.models.probe import LocationCheck
from app.probe.spool import SPOOL_FILE, Spool
from app.protocol import PkgID
from app.storage.db import Database
from tests import services
from tests.fixtures import unique
from tests.probe_support import ProbeProcess
from tests.realtime_support import redis_server
from tests.server import ServerProcess, ok, ws_connect
from tests.targets import HttpTarget
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = redis_server(
        services.create_pg_database(),
        services.redis_test_url(),
        f"wp-probe-{os.getpid()}:",
        MONITOR_MIN_INTERVAL="1",
        COLLECTOR_ENABLED="false",
    )
    yield srv
    srv.stop()


async def _checks(database_url: str, monitor_id: int) -> list[LocationCheck]:
    """The monitor's stored location results (each test's monitors have one location)."""
    db = Database(database_url)
    try:
        async with db.session() as s:
            rows = await s.execute(
                select(LocationCheck).where(LocationCheck.monitor_id == monitor_id).order_by(LocationCheck.ts)  # type: ignore[arg-type]
            )
            return list(rows.scalars())
    finally:
        await db.close()


async def _count(database_url: str, monitor_id: int) -> int:
    db = Database(database_url)
    try:
        async with db.session() as s:
            return int(
                await s.scalar(
                    select(func.count())
                    .select_from(LocationCheck)
                    .where(LocationCheck.monitor_id == monitor_id)
                )
                or 0
            )
    finally:
        await db.close()


async def _wait_for(database_url: str, monitor_id: int, at_least: int, within: float) -> int:
    deadline = time.monotonic() + within
    while True:
        n = await _count(database_url, monitor_id)
        if n >= at_least or time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.2)


async def _setup(server: ServerProcess, target: HttpTarget, location: str) -> tuple[str, dict[str, Any]]:
    """A probe token for a new location and one 1 s HTTP monitor assigned to it."""
    target.respond("/health", 200)
    async with ws_connect(server, server.login()) as ws:
        token = await ok(
            ws, PkgID.TOKEN_CREATE, {"name": f"probe {location}", "role": "probe", "location": location}
        )
        monitor = await ok(
            ws,
            PkgID.MONITOR_CREATE,
            {
                "name": f"probed {location}",
                "kind": "http",
                "url": target.url("/health"),
                "interval": 1,
                "timeout": 0.5,
                "locations": [location],
            },
        )
    return str(token["token"]), monitor


async def test_results_arrive_and_assignment_changes_reach_the_running_probe(
    server: ServerProcess, target: HttpTarget, tmp_path: Path
) -> None:
    location = unique("eu")
    token, monitor = await _setup(server, target, location)
    probe = ProbeProcess(server.ws_url, token, tmp_path / "state", location).start()
    try:
        assert await _wait_for(server.database_url, monitor["id"], 3, within=20) >= 3, probe.log_text()
        rows = await _checks(server.database_url, monitor["id"])
        assert all(r.ok and r.status_code == 200 and r.key for r in rows)
        assert target.hits("/health") >= 3

        target.respond("/second", 503)
        async with ws_connect(server, server.login()) as ws:
            second = await ok(
                ws,
                PkgID.MONITOR_CREATE,
                {"name": f"second {location}", "kind": "http", "url": target.url("/second"), "interval": 1,
                 "timeout": 0.5, "locations": [location]},
            )  # fmt: skip
        # Within a second the probe has it; its first start is at most one interval later.
        assert await _wait_for(server.database_url, second["id"], 1, within=4) >= 1, probe.log_text()
        (first, *_) = await _checks(server.database_url, second["id"])
        assert first.ok is False and first.status_code == 503

        # The location taken off the monitor: the probe stops checking it (the collector is off here).
        async with ws_connect(server, server.login()) as ws:
            await ok(
                ws,
                PkgID.MONITOR_UPDATE,
                {"id": second["id"], "version": second["version"], "locations": ["local"]},
            )
        await asyncio.sleep(1.5)
        hits, other = target.hits("/second"), target.hits("/health")
        await asyncio.sleep(2.5)
        assert target.hits("/second") == hits, probe.log_text()
        assert target.hits("/health") >= other + 2  # the other monitor still runs
    finally:
        probe.stop()


async def test_a_probe_killed_while_cut_off_replays_its_buffer_once_after_a_restart(
    server: ServerProcess, target: HttpTarget, tmp_path: Path
) -> None:
    location = unique("us")
    token, monitor = await _setup(server, target, location)
    proxy = TcpProxy(("127.0.0.1", server.port)).start()
    state = tmp_path / "state"
    url = f"ws://127.0.0.1:{proxy.port}/web"
    probe = ProbeProcess(url, token, state, location).start()
    try:
        assert await _wait_for(server.database_url, monitor["id"], 2, within=20) >= 2, probe.log_text()

        # The server becomes unreachable: the probe keeps checking into its spool.
        proxy.stop()
        proxy.cut()
        await asyncio.sleep(0.5)
        before_outage = await _count(server.database_url, monitor["id"])
        hits_before = target.hits("/health")
        await asyncio.sleep(3)
        assert target.hits("/health") >= hits_before + 2  # still checking while disconnected
        probe.kill9()
        # Restarted while the server is still unreachable: it checks what it was assigned.
        hits_before = target.hits("/health")
        probe = ProbeProcess(url, token, state, location).start()
        await asyncio.sleep(4)
        assert target.hits("/health") >= hits_before + 2, probe.log_text()
        probe.kill9()
        buffered = list(Spool.read(state / SPOOL_FILE).values())
        assert len(buffered) >= 4, probe.log_text()
        buffered_keys = {orjson.loads(b)["key"] for b in buffered}
        assert await _count(server.database_url, monitor["id"]) == before_outage  # nothing got through

        # Back with the same state directory and the server reachable again.
        proxy.start()
        probe = ProbeProcess(url, token, state, location).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = await _checks(server.database_url, monitor["id"])
            if buffered_keys <= {r.key for r in rows}:
                break
            await asyncio.sleep(0.2)
        rows = await _checks(server.database_url, monitor["id"])
        keys = [r.key for r in rows]
        assert buffered_keys <= set(keys), probe.log_text()  # none lost
        assert len(keys) == len(set(keys))  # none stored twice
        # The outage is covered: checks kept their schedule while cut off (a restart costs a start or two).
        outage = sorted(r.ts for r in rows if r.key in buffered_keys)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(outage)]
        assert all(g < 3.5 for g in gaps), gaps
        assert sum(g < 1.5 for g in gaps) >= len(gaps) - 2, gaps
        # The spool is emptied once the server acknowledged the replay.
        for _ in range(50):
            if not Spool.read(state / SPOOL_FILE).keys() & buffered_keys:
                break
            await asyncio.sleep(0.2)
        assert not Spool.read(state / SPOOL_FILE).keys() & buffered_keys
    finally:
        probe.stop()
        proxy.stop()
        proxy.cut()


async def test_a_large_import_reaches_the_running_probe_as_a_reload(
    server: ServerProcess, target: HttpTarget, tmp_path: Path
) -> None:
    """Over 200 monitors of a location changed at once arrive as one {"op": "reload"}: the
    probe loads the snapshot again and checks every one of them."""
    location = unique("ap")
    token, first = await _setup(server, target, location)
    probe = ProbeProcess(server.ws_url, token, tmp_path / "state", location).start()
    try:
        assert await _wait_for(server.database_url, first["id"], 1, within=20) >= 1, probe.log_text()
        target.respond("/bulk", 200)
        rows = [
            {"name": f"bulk {location} {n}", "kind": "http", "url": target.url("/bulk"), "interval": 5,
             "timeout": 2, "locations": [location]}
            for n in range(210)
        ]  # fmt: skip
        async with ws_connect(server, server.login()) as ws:
            done = await ok(
                ws,
                PkgID.MONITOR_IMPORT,
                {"import_id": uuid.uuid4().hex, "chunk": 0, "chunks": 1, "monitors": rows},
            )
        assert done, done
        # Every imported monitor is checked within its first interval (plus the reload).
        for _ in range(60):
            if target.hits("/bulk") >= 210:
                break
            await asyncio.sleep(0.2)
        assert target.hits("/bulk") >= 210, probe.log_text()[-3000:]
        assert "asks for a reload" in probe.log_text()
    finally:
        probe.stop()

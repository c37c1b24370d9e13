"""Two probe programs in two locations plus the server's own collector, on PostgreSQL + Redis.

One HTTP target on loopback that every location can reach at first. A probe started with
``CHECK_DENY_NETWORKS=127.0.0.0/8`` can no longer reach it: its location goes red. With
quorum 2 of [local, alpha, beta] that alone opens no incident; once a second location
fails too, exactly one incident opens and its cause names both locations.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.protocol import PkgID
from tests import services
from tests.fixtures import unique
from tests.probe_support import ProbeProcess
from tests.realtime_support import redis_server
from tests.server import ServerProcess, ok, ws_connect
from tests.targets import HttpTarget

pytestmark = pytest.mark.slow

#: Cuts a probe off from every loopback target (the egress policy the runners share).
UNREACHABLE = {"CHECK_DENY_NETWORKS": "127.0.0.0/8"}


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    srv = redis_server(
        services.create_pg_database(),
        services.redis_test_url(),
        f"wp-quorum-{os.getpid()}:",
        MONITOR_MIN_INTERVAL="1",
        COLLECTOR_ENABLED="true",
        COLLECTOR_TICK="0.1",
        PROBE_GRACE="5",
        PROBE_HEARTBEAT="1",
    )
    yield srv
    srv.stop()


async def _locations(ws: Any, monitor_id: int) -> dict[str, dict[str, Any]]:
    stats = await ok(ws, PkgID.LOCATION_STATS, {"monitor_id": monitor_id, "window": "1h"})
    return {row["location"]: row for row in stats["locations"]}


async def _until(ws: Any, monitor_id: int, want: dict[str, str], within: float = 30.0) -> dict[str, Any]:
    """Polls LOCATION_STATS until every location in ``want`` has that state."""
    deadline = time.monotonic() + within
    rows: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        rows = await _locations(ws, monitor_id)
        if all(rows.get(name, {}).get("state") == state for name, state in want.items()):
            return rows
        await asyncio.sleep(0.25)
    raise AssertionError(f"locations never reached {want}: {rows}")


async def _incidents(ws: Any, monitor_id: int) -> list[dict[str, Any]]:
    return list(await ok(ws, PkgID.INCIDENT_LIST, {"monitor_id": monitor_id}))


async def test_one_location_red_opens_nothing_two_open_one_incident_naming_both(
    server: ServerProcess, tmp_path: Path
) -> None:
    alpha, beta = unique("alpha").lower(), unique("beta").lower()
    probes: list[ProbeProcess] = []
    with HttpTarget() as target:
        target.respond("/health", 200)
        try:
            async with ws_connect(server, server.login()) as ws:
                tokens = {}
                for place in (alpha, beta):
                    made = await ok(
                        ws, PkgID.TOKEN_CREATE, {"name": f"probe {place}", "role": "probe", "location": place}
                    )
                    tokens[place] = str(made["token"])
                monitor = await ok(
                    ws,
                    PkgID.MONITOR_CREATE,
                    {
                        "name": unique("shop"),
                        "kind": "http",
                        "url": target.url("/health"),
                        "interval": 1,
                        "timeout": 0.5,
                        "locations": ["local", alpha, beta],
                        "quorum": 2,
                    },
                )
                mid = int(monitor["id"])
                await ok(ws, PkgID.SUBSCRIBE, {"topics": ["monitors"]})

                def probe(place: str, env: dict[str, str] | None = None) -> ProbeProcess:
                    p = ProbeProcess(server.ws_url, tokens[place], tmp_path / place, place, env=env)
                    probes.append(p)
                    return p.start()

                first_alpha = probe(alpha)
                probe(beta, env=UNREACHABLE)

                # beta cannot reach the target: that location is red, the others are up.
                rows = await _until(ws, mid, {"local": "up", alpha: "up", beta: "down"})
                assert rows[beta]["error"], rows[beta]
                # ...and with quorum 2 that is no outage: the monitor stays up, several
                # intervals later still without an incident.
                await asyncio.sleep(3)
                got = await ok(ws, PkgID.MONITOR_GET, {"id": mid})
                current = got.get("monitor", got)
                assert current["state"] == "up", current
                assert await _incidents(ws, mid) == []
                status = {row["location"]: row["state"] for row in current["location_status"]}
                assert status == {"local": "up", alpha: "up", beta: "down"}

                # alpha is cut off too (restarted with the same state directory): two of three
                # locations fail, which is the quorum.
                first_alpha.stop()
                probe(alpha, env=UNREACHABLE)
                await _until(ws, mid, {alpha: "down", beta: "down", "local": "up"})
                deadline = time.monotonic() + 20
                incidents: list[dict[str, Any]] = []
                while time.monotonic() < deadline and not incidents:
                    incidents = await _incidents(ws, mid)
                    await asyncio.sleep(0.25)
                assert len(incidents) == 1, incidents
                cause = incidents[0]["cause"]
                assert cause.startswith(f"down in {alpha}, {beta} (2 of 3 locations, quorum 2)"), cause
                assert "local:" not in cause  # the server's own check still passed
                # Still one incident a few intervals on: the outage is not reopened per check.
                await asyncio.sleep(2)
                assert len(await _incidents(ws, mid)) == 1
                got = await ok(ws, PkgID.MONITOR_GET, {"id": mid})
                assert got.get("monitor", got)["state"] == "down"
        finally:
            for p in probes:
                p.stop()

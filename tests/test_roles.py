"""``python -m app serve --role``: socket traffic and checks in separate processes.

Two real servers on one PostgreSQL and one Redis: ``--role web`` (with the
environment asking for a collector, which the role overrides) and ``--role
collector`` (with the test default COLLECTOR_ENABLED=false, which the role
overrides). The web process never checks; the collector process serves no socket,
checks and records; its events reach the dashboard's socket on the web process
through Redis.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus

from app.protocol import PkgID
from tests.realtime_support import HIGH_LIMITS, next_event, servers
from tests.server import ServerProcess, ok, ws_connect
from tests.targets import HttpTarget


@pytest.fixture
def target() -> Iterator[HttpTarget]:
    with HttpTarget() as t:
        t.respond("/health", 200, b"fine")
        yield t


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_web_and_collector_roles_in_separate_processes(
    pg_url: str, redis_url: str, redis_prefix: str, target: HttpTarget
) -> None:
    shared = {
        **HIGH_LIMITS,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "MONITOR_MIN_INTERVAL": "1",
        "COLLECTOR_JITTER": "0.2",
        "COLLECTOR_TICK": "0.1",
    }
    web = ServerProcess(pg_url, env={**shared, "COLLECTOR_ENABLED": "true"}, args=["--role", "web"])
    collector = ServerProcess(pg_url, env=shared, args=["--role", "collector"])
    with servers(web, collector):
        web.start()
        token = web.login()
        async with ws_connect(web, token) as ws:
            created = await ok(
                ws,
                PkgID.MONITOR_CREATE,
                {
                    "name": "split",
                    "kind": "http",
                    "url": target.url("/health"),
                    "interval": 1,
                    "timeout": 0.8,
                },
            )
            topic = f"monitor.{created['id']}"
            await ok(ws, PkgID.SUBSCRIBE, {"topics": [topic]})
            # Due within 0.2 s and every second after: a web-only process leaves it alone.
            await asyncio.sleep(2.0)
            assert target.hits("/health") == 0, "the web role ran a check"

            collector.start()
            assert _status(collector.http_url + "/health") == 200
            assert _status(collector.http_url + "/metrics") == 200
            assert _status(collector.http_url + "/") == 404  # no pages, no login
            assert _status(collector.http_url + "/login") == 404
            with pytest.raises(InvalidStatus):
                async with ws_connect(collector, token):
                    pass

            # Checked by the collector process, recorded in PostgreSQL, announced through
            # Redis to the socket held by the web process.
            event = await next_event(ws, topic, timeout=15)
            assert event["pkg_id"] == PkgID.EVENT_CHECK_RESULT, event
            assert event["data"]["ok"] is True and event["data"]["status_code"] == 200, event
            assert target.hits("/health") >= 1
            rows = list(await ok(ws, PkgID.CHECK_HISTORY, {"monitor_id": created["id"]}))
            assert rows and rows[0]["ok"] is True, rows
    assert "roles=web" in web.log_text()
    assert "roles=collector" in collector.log_text()
